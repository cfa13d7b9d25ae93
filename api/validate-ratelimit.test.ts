// Validation of meshgate.io RateLimitPolicy (docs/ratelimit.md): a good policy loads with no
// problem, each bad input is named by its field, and every example in the docs page loads.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { parseConfigText } from './load.ts';
import { toSnapshot, validateResources } from './validate.ts';
import { formatProblem } from './problems.ts';
import type { Problem } from './problems.ts';
import { translate } from '../pilot/translate/index.ts';

type Spec = Record<string, unknown>;

/** A policy using every field, as in docs/ratelimit.md; each test breaks one thing in a copy. */
function goodSpec(): Spec {
  return {
    selector: { istio: 'ingressgateway' },
    hosts: ['api.example.com', '*.example.org'],
    routes: ['orders', 'virtualservice/edge/api/http/0'],
    mode: 'global',
    shadow: false,
    rules: [
      { name: 'per-client', limit: { requests: 100, per: 'minute', burst: 20 }, key: ['remoteAddress'] },
      {
        name: 'per-user',
        limit: { requests: 10, per: 'second' },
        key: [{ claim: 'sub' }, 'method', 'path', 'host', { header: 'x-api-key' }],
        overrides: [
          { when: { claim: { plan: 'gold' } }, limit: { requests: 50, per: 'second', burst: 50 } },
          { when: { header: { 'x-tier': 'partner' }, path: '/orders', method: 'POST', host: 'api.example.com', remoteAddress: '203.0.113.7' }, limit: { requests: 5, per: 'hour' } },
        ],
      },
    ],
  };
}

function check(spec: Spec): { problems: Problem[]; accepted: number } {
  const text = stringify({ apiVersion: 'meshgate.io/v1alpha1', kind: 'RateLimitPolicy', metadata: { name: 'rl', namespace: 'istio-system' }, spec });
  const loaded = parseConfigText('rl.yaml', text);
  assert.deepEqual(loaded.problems.map(formatProblem), []);
  const v = validateResources(loaded.resources);
  return { problems: v.problems, accepted: v.accepted.length };
}

/** The one problem reported at `field`; the resource must be rejected when it is an error. */
function at(spec: Spec, field: string, code: string, message: RegExp, severity: 'error' | 'warning' = 'error'): Problem {
  const { problems, accepted } = check(spec);
  const hits = problems.filter((p) => p.field === field);
  assert.equal(hits.length, 1, `expected one problem at ${field}, got:\n${problems.map(formatProblem).join('\n')}`);
  const p = hits[0];
  assert.equal(p.code, code, formatProblem(p));
  assert.equal(p.severity, severity, formatProblem(p));
  assert.match(p.message, message);
  assert.equal(p.resource, 'RateLimitPolicy/istio-system/rl');
  assert.equal(accepted, severity === 'error' ? 0 : 1, 'an error rejects the policy, a warning keeps it');
  return p;
}

function rule(spec: Spec, i: number): Record<string, unknown> {
  return (spec.rules as Record<string, unknown>[])[i];
}

function withSpec(edit: (s: Spec) => void): Spec {
  const s = goodSpec();
  edit(s);
  return s;
}

describe('RateLimitPolicy validation', () => {
  test('a policy using every field loads with no problem', () => {
    assert.deepEqual(check(goodSpec()).problems.map(formatProblem), []);
    assert.equal(check(goodSpec()).accepted, 1);
  });

  test('an override may test a part the rule does not key by (the override picks the limit, the key the counter)', () => {
    // Decision: allowed without a warning; docs/ratelimit.md's own example keys by `sub` and overrides on `plan`.
    const s = withSpec((x) => { rule(x, 0).overrides = [{ when: { claim: { plan: 'gold' }, method: 'GET' }, limit: { requests: 1000, per: 'minute' } }]; });
    assert.deepEqual(check(s).problems.map(formatProblem), []);
  });

  test('unknown key parts are named, with a suggestion', () => {
    at(withSpec((x) => { rule(x, 0).key = ['remoteAddres']; }), 'spec.rules[0].key[0]', 'MG_CONFIG_INVALID', /unknown key part "remoteAddres"; did you mean "remoteAddress"\?/);
    at(withSpec((x) => { rule(x, 0).key = ['remoteAddress', { cookie: 'session' }]; }), 'spec.rules[0].key[1].cookie', 'MG_CONFIG_INVALID', /unknown key part "cookie"/);
    at(withSpec((x) => { rule(x, 0).key = [{ header: 'x-a', claim: 'sub' }]; }), 'spec.rules[0].key[0]', 'MG_CONFIG_INVALID', /one header or one claim/);
    at(withSpec((x) => { rule(x, 0).key = [{ header: 'bad name' }]; }), 'spec.rules[0].key[0].header', 'MG_CONFIG_INVALID', /not a valid HTTP header name/);
    at(withSpec((x) => { rule(x, 0).key = [42]; }), 'spec.rules[0].key[0]', 'MG_CONFIG_SCHEMA', /remoteAddress, path, method, host/);
    at(withSpec((x) => { rule(x, 0).key = [{ claim: 'c'.repeat(300) }]; }), 'spec.rules[0].key[0].claim', 'MG_CONFIG_INVALID', /300 characters long; the limit is 256/);
  });

  test('requests must be a whole number of at least 0', () => {
    at(withSpec((x) => { rule(x, 0).limit = { requests: -1, per: 'minute' }; }), 'spec.rules[0].limit.requests', 'MG_CONFIG_SCHEMA', /-1 is too small; must be at least 0/);
    at(withSpec((x) => { rule(x, 0).limit = { requests: 1.5, per: 'minute' }; }), 'spec.rules[0].limit.requests', 'MG_CONFIG_SCHEMA', /must be an integer \(got 1\.5\)/);
    at(withSpec((x) => { rule(x, 0).limit = { requests: '100', per: 'minute' }; }), 'spec.rules[0].limit.requests', 'MG_CONFIG_SCHEMA', /must be an integer/);
    at(withSpec((x) => { rule(x, 0).limit = { per: 'minute' }; }), 'spec.rules[0].limit.requests', 'MG_CONFIG_SCHEMA', /is required/);
  });

  test('burst must be at least 0, in a rule and in an override', () => {
    at(withSpec((x) => { rule(x, 0).limit = { requests: 1, per: 'minute', burst: -5 }; }), 'spec.rules[0].limit.burst', 'MG_CONFIG_SCHEMA', /-5 is too small; must be at least 0/);
    at(withSpec((x) => { (rule(x, 1).overrides as Spec[])[0].limit = { requests: 1, per: 'second', burst: -1 }; }), 'spec.rules[1].overrides[0].limit.burst', 'MG_CONFIG_SCHEMA', /too small/);
    at(withSpec((x) => { rule(x, 0).limit = { requests: 0, per: 'minute', burst: 5 }; }), 'spec.rules[0].limit.burst', 'MG_CONFIG_INVALID', /no effect when requests is 0/, 'warning');
  });

  test('the unit is second, minute or hour, written `per`', () => {
    at(withSpec((x) => { rule(x, 0).limit = { requests: 1, per: 'day' }; }), 'spec.rules[0].limit.per', 'MG_CONFIG_SCHEMA', /"day" is not allowed; must be one of second, minute, hour/);
    const { problems } = check(withSpec((x) => { rule(x, 0).limit = { requests: 1, unit: 'minute' }; }));
    assert.deepEqual(problems.map((p) => `${p.code} ${p.field}`).sort(), ['MG_CONFIG_SCHEMA spec.rules[0].limit.per', 'MG_CONFIG_UNKNOWN_FIELD spec.rules[0].limit.unit']);
  });

  test('rule names are unique and safe to put in a Redis key', () => {
    at(withSpec((x) => { rule(x, 1).name = 'per-client'; }), 'spec.rules[1].name', 'MG_CONFIG_INVALID', /"per-client" is already used by rules\[0\]/);
    at(withSpec((x) => { rule(x, 0).name = 'a:b'; }), 'spec.rules[0].name', 'MG_CONFIG_INVALID', /not a valid rule name/);
  });

  test('mode is local or global', () => {
    at(withSpec((x) => { x.mode = 'cluster'; }), 'spec.mode', 'MG_CONFIG_SCHEMA', /"cluster" is not allowed; must be one of local, global/);
  });

  test('a policy needs at least one rule', () => {
    at(withSpec((x) => { x.rules = []; }), 'spec.rules', 'MG_CONFIG_SCHEMA', /needs at least 1 entry/);
    at(withSpec((x) => { delete x.rules; }), 'spec.rules', 'MG_CONFIG_SCHEMA', /is required/);
  });

  test('a policy names its gateways: a selector or a Gateway targetRef, not both', () => {
    at(withSpec((x) => { delete x.selector; }), 'spec.selector', 'MG_CONFIG_INVALID', /needs a selector/);
    at(withSpec((x) => { x.targetRef = { kind: 'Gateway', name: 'public' }; }), 'spec.selector', 'MG_CONFIG_INVALID', /only one of selector and targetRef/);
    assert.deepEqual(check(withSpec((x) => { delete x.selector; x.targetRef = { kind: 'Gateway', name: 'public', namespace: 'edge' }; })).problems, []);
    at(withSpec((x) => { delete x.selector; x.targetRef = { kind: 'Service', name: 'api' }; }), 'spec.targetRef.kind', 'MG_CONFIG_UNSUPPORTED_FIELD', /only kind Gateway/, 'warning');
    at(withSpec((x) => { x.selector = { istio: 'ingress gateway' }; }), 'spec.selector.istio', 'MG_CONFIG_INVALID', /not a valid label value/);
    // The selector is a Gateway-style label map, not security.istio.io's matchLabels.
    at(withSpec((x) => { x.selector = { matchLabels: { istio: 'ingressgateway' } }; }), 'spec.selector.matchLabels', 'MG_CONFIG_SCHEMA', /must be a string/);
  });

  test('hosts and routes are checked by entry', () => {
    at(withSpec((x) => { x.hosts = ['api.example.com', 'edge/api.example.com']; }), 'spec.hosts[1]', 'MG_CONFIG_HOST', /request hosts/);
    at(withSpec((x) => { x.hosts = ['bad_host']; }), 'spec.hosts[0]', 'MG_CONFIG_HOST', /not a valid host name/);
    at(withSpec((x) => { x.routes = ['virtualservice/edge/api']; }), 'spec.routes[0]', 'MG_CONFIG_INVALID', /virtualservice\/<namespace>\/<name>\/http\/<index>/);
    at(withSpec((x) => { x.routes = ['']; }), 'spec.routes[0]', 'MG_CONFIG_INVALID', /non-empty/);
  });

  test('override conditions that could never hold, or would always hold, are refused', () => {
    const when = (w: Spec, i = 0) => withSpec((x) => { (rule(x, 1).overrides as Spec[])[i].when = w; });
    at(when({}), 'spec.rules[1].overrides[0].when', 'MG_CONFIG_INVALID', /at least one condition/);
    at(when({ claim: {} }), 'spec.rules[1].overrides[0].when.claim', 'MG_CONFIG_INVALID', /name at least one claim/);
    // Paths are compared after the data plane's normalisation (BAD-INPUTS: //admin, %2F, fragments, query).
    at(when({ path: '/admin?x=1' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /query or fragment/);
    at(when({ path: '/admin#/../public' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /query or fragment/);
    at(when({ path: '//admin' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /can never match/);
    at(when({ path: '/a/../admin' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /can never match/);
    at(when({ path: '/admin%2Fx' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /decodes %2E, %2F and %5C/);
    at(when({ path: '/a%00b' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /NUL/);
    at(when({ path: 'admin' }), 'spec.rules[1].overrides[0].when.path', 'MG_CONFIG_INVALID', /must start with \//);
    at(when({ remoteAddress: '10.0.0.0/8' }), 'spec.rules[1].overrides[0].when.remoteAddress', 'MG_CONFIG_INVALID', /CIDR blocks are not supported here/);
    at(when({ host: '*.example.com' }), 'spec.rules[1].overrides[0].when.host', 'MG_CONFIG_HOST', /compares the host exactly/);
    at(when({ method: 'GET /' }), 'spec.rules[1].overrides[0].when.method', 'MG_CONFIG_INVALID', /not an HTTP method/);
    at(when({ header: { 'x-a': 'v\r\nx-injected: 1' } }), 'spec.rules[1].overrides[0].when.header.x-a', 'MG_CONFIG_INVALID', /control characters/);
    at(when({ header: { 'x-a': 'v'.repeat(2000) } }), 'spec.rules[1].overrides[0].when.header.x-a', 'MG_CONFIG_SCHEMA', /too long; at most 1024/);
    at(when({ cookie: { a: 'b' } }), 'spec.rules[1].overrides[0].when.cookie', 'MG_CONFIG_UNKNOWN_FIELD', /unknown field "cookie"/);
  });

  test('problems point at the file and line of the field', () => {
    const text = `apiVersion: meshgate.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: rl, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  rules:
  - name: a
    limit: {requests: 1, per: fortnight}
`;
    const loaded = parseConfigText('dir/rl.yaml', text);
    const { problems } = validateResources(loaded.resources);
    assert.deepEqual(problems.map(formatProblem), [
      'error MG_CONFIG_SCHEMA dir/rl.yaml:8:26 RateLimitPolicy/istio-system/rl spec.rules[0].limit.per: "fortnight" is not allowed; must be one of second, minute, hour',
    ]);
  });
});

describe('docs/ratelimit.md', () => {
  const doc = readFileSync(new URL('../docs/ratelimit.md', import.meta.url), 'utf8');
  // Fenced YAML blocks that are Kubernetes objects; the others quote other software's config
  // (the rate-limit service's ConfigMap) for comparison.
  const blocks = [...doc.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1]).filter((b) => /^kind:/m.test(b));

  test('every resource example loads, validates without a problem and binds to the ingress gateway', () => {
    assert.ok(blocks.length >= 2, `found ${blocks.length} resource examples in docs/ratelimit.md`);
    for (const [i, text] of blocks.entries()) {
      const loaded = parseConfigText(`docs/ratelimit.md#${i}`, text);
      const v = validateResources(loaded.resources);
      assert.deepEqual([...loaded.problems, ...v.problems].map(formatProblem), [], `example ${i}:\n${text}`);
      assert.deepEqual(v.accepted.map((r) => r.kind), ['RateLimitPolicy']);
      const { config } = translate(toSnapshot(v.accepted), { id: 'gw', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
      const names = (v.accepted[0].spec as { rules: { name: string }[] }).rules.map((r) => r.name);
      assert.deepEqual(config.policies.rateLimits.flatMap((p) => p.rules.map((r) => r.name)), names, `example ${i} compiles every rule`);
    }
  });
});
