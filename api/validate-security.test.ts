// Validation of RequestAuthentication and AuthorizationPolicy: each bad input is named by
// field, and good policies load with no problem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from './load.ts';
import { validateResource } from './validate.ts';
import { formatProblem } from './problems.ts';

function problems(yaml: string): string[] {
  const r = parseConfigText('p.yaml', yaml);
  assert.deepEqual(r.problems, []);
  return r.resources.flatMap((x) => validateResource(x).map(formatProblem));
}

const ra = (rule: string) => `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
${rule}`;

const ap = (rules: string, action = 'ALLOW') => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: istio-system}
spec:
  action: ${action}
  rules:
${rules}`;

test('security policies that are valid load without problems (v1 and v1beta1)', () => {
  assert.deepEqual(problems(ra(`  - issuer: testing@secure.istio.io
    jwksUri: https://keys.example.com/jwks.json
    audiences: [api]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 3s`)), []);
  assert.deepEqual(problems(ap(`  - from: [{source: {requestPrincipals: ["*"], remoteIpBlocks: ["203.0.113.0/24", "2001:db8::/32", "10.1.2.3"]}}]
    to: [{operation: {methods: [GET], paths: ["/api/{*}/items", "/static/{**}"], ports: ["8080"]}}]
    when:
    - key: request.auth.claims[groups]
      values: [admins]
    - key: request.auth.claims[realm_access][roles]
      values: [admin]
    - key: request.headers[x-tenant]
      notValues: [blocked]
    - key: remote.ip
      values: ["192.0.2.0/24"]`).replace('security.istio.io/v1', 'security.istio.io/v1beta1')), []);
});

test('RequestAuthentication: jwksUri not a URL, both jwks and jwksUri, neither, bad duration, duplicate issuer', () => {
  const out = problems(ra(`  - issuer: a
    jwksUri: "not a url"
  - issuer: b
    jwksUri: https://k.example.com/j
    jwks: '{"keys":[{"kty":"oct"}]}'
  - issuer: c
  - issuer: a
    jwks: "{}"
    timeout: soon`));
  const has = (re: RegExp) => assert.ok(out.some((l) => re.test(l)), `${re}\n${out.join('\n')}`);
  has(/spec\.jwtRules\[0\]\.jwksUri: "not a url" is not an http\(s\) URL/);
  has(/spec\.jwtRules\[1\]\.jwks: set only one of jwksUri and jwks/);
  has(/spec\.jwtRules\[2\]: set jwksUri or jwks/);
  has(/spec\.jwtRules\[3\]\.issuer: issuer "a" is already used by jwtRules\[0\]/);
  has(/spec\.jwtRules\[3\]\.jwks: jwks must be a JSON Web Key Set/);
  has(/MG_CONFIG_DURATION .*spec\.jwtRules\[3\]\.timeout: "soon"/);
});

test('AuthorizationPolicy: invalid CIDR, bad port, bad path template, unknown claim syntax, CUSTOM warned', () => {
  const out = problems(ap(`  - from: [{source: {ipBlocks: ["10.0.0.0/33"], notRemoteIpBlocks: ["300.1.1.1"]}}]
    to: [{operation: {ports: ["http"], paths: ["/a/{**}/b"]}}]
    when:
    - key: request.auth.claims.groups
      values: [x]
    - key: request.auth.claims[a
      values: [x]
    - key: source.ip
      values: ["not-an-ip"]
    - key: request.headers[x-a]`));
  const has = (re: RegExp) => assert.ok(out.some((l) => re.test(l)), `${re}\n${out.join('\n')}`);
  has(/spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: "10\.0\.0\.0\/33" is not an IP address or CIDR block/);
  has(/spec\.rules\[0\]\.from\[0\]\.source\.notRemoteIpBlocks\[0\]: "300\.1\.1\.1"/);
  has(/spec\.rules\[0\]\.to\[0\]\.operation\.ports\[0\]: "http" is not a port number/);
  has(/spec\.rules\[0\]\.to\[0\]\.operation\.paths\[0\]: .*not a valid path template/);
  has(/spec\.rules\[0\]\.when\[0\]\.key: unknown condition key "request\.auth\.claims\.groups" \(claims are written/);
  has(/spec\.rules\[0\]\.when\[1\]\.key: unknown condition key "request\.auth\.claims\[a"/);
  has(/spec\.rules\[0\]\.when\[2\]\.values\[0\]: "not-an-ip"/);
  has(/spec\.rules\[0\]\.when\[3\]: a condition needs values or notValues/);
  const custom = problems(ap('  - {}', 'CUSTOM').replace('  rules:', '  provider: {name: ext}\n  rules:'));
  assert.ok(custom.some((l) => l.startsWith('warning MG_CONFIG_UNSUPPORTED_FIELD') && l.includes('spec.action') && l.includes('CUSTOM')), custom.join('\n'));
  assert.ok(!custom.some((l) => l.startsWith('error')), custom.join('\n'));
});
