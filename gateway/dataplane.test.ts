// The DataPlane with real clients and real upstreams on loopback: what a user of the
// gateway sees for each feature of the downstream half.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { WebSocket } from 'ws';
import { DataPlane } from './dataplane.ts';
import { createUpstreams } from './upstream/index.ts';
import { startEcho, type EchoReply, type Upstream } from '../test/helpers/upstream.ts';
import { makeCluster } from '../test/helpers/downstream.ts';
import { h1, h2, raw } from '../test/helpers/client.ts';
import { dest, direct, exact, listener, match, prefix, proxyConfig, regex, route, vhost } from '../test/helpers/proxyconfig.ts';
import type { Listener, ProxyConfig, Route } from '../api/proxyconfig.ts';

async function newPlane(): Promise<DataPlane> {
  const dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 8080: 0, 8081: 0 }, drainMs: 500 });
  await dp.start();
  return dp;
}

function echoOf(r: { body: string }): EchoReply {
  return JSON.parse(r.body) as EchoReply;
}

describe('DataPlane', () => {
  let a: Upstream;
  let b: Upstream;
  let ws: Upstream;
  const planes: DataPlane[] = [];
  before(async () => {
    a = await startEcho({ name: 'a' });
    b = await startEcho({ name: 'b' });
    ws = await startEcho({ name: 'ws', websocket: true });
  });
  after(async () => {
    for (const p of planes) await p.close(200);
    await Promise.all([a.close(), b.close(), ws.close()]);
  });
  async function plane(config?: ProxyConfig): Promise<{ dp: DataPlane; port: number }> {
    const dp = await newPlane();
    planes.push(dp);
    if (config) await dp.apply(config);
    return { dp, port: dp.ports()[8080] };
  }
  const clusters = () => [makeCluster('a', [a.port]), makeCluster('b', [b.port]), makeCluster('ws', [ws.port])];
  const routed = (routes: Route[], over: Partial<Listener> = {}) => proxyConfig([listener(8080, [vhost(['*'], routes)], over)], clusters());

  test('health is 503 until a config is applied, then 200; admin shows the config', async () => {
    const dp = await newPlane();
    planes.push(dp);
    assert.equal((await h1(dp.healthPort, '/healthz/ready')).status, 503);
    assert.equal(dp.version, null);
    await dp.apply(routed([route('r', [], [], { action: direct(200, 'hi') })]));
    assert.equal((await h1(dp.healthPort, '/healthz/ready')).status, 200);
    const dump = JSON.parse((await h1(dp.adminPort, '/config_dump')).body);
    assert.equal(dump.version, dp.version);
    assert.equal(dump.config.listeners[0].name, '127.0.0.1_8080');
    const listeners = JSON.parse((await h1(dp.adminPort, '/listeners')).body);
    assert.equal(listeners[0].boundPort, dp.ports()[8080]);
    assert.ok(typeof JSON.parse((await h1(dp.adminPort, '/clusters')).body).a === 'object');
    dp.setDiscoveryStatus({ connected: true });
    dp.setConfigProblems(['warning MG_CONFIG_UNSUPPORTED_FIELD x']);
    const info = JSON.parse((await h1(dp.adminPort, '/server_info')).body);
    assert.deepEqual([info.state, info.version, info.discovery], ['LIVE', dp.version, { connected: true }]);
    assert.deepEqual(JSON.parse((await h1(dp.adminPort, '/problems')).body).problems, ['warning MG_CONFIG_UNSUPPORTED_FIELD x']);
  });

  test('HTTP/1.1 and h2c share one plaintext port; unmatched requests get an empty 404', async () => {
    const { port } = await plane(routed([
      route('hello', [match({ uri: exact('/hello') })], [], { action: direct(200, 'hello there') }),
      route('up', [match({ uri: prefix('/up') })], [dest('a')]),
    ]));
    const r1 = await h1(port, '/hello');
    assert.deepEqual([r1.status, r1.body, r1.headers['content-type']], [200, 'hello there', 'text/plain']);
    const r2 = await h2(port, '/hello');
    assert.deepEqual([r2.status, r2.body], [200, 'hello there']);
    const up = await h2(port, '/up/x');
    assert.equal(echoOf(up).path, '/up/x');
    const before = a.received.length;
    const nf = await h1(port, '/nothing');
    assert.deepEqual([nf.status, nf.body], [404, '']);
    assert.equal((await h2(port, '/nothing')).status, 404);
    assert.equal(a.received.length, before, 'no upstream call for a 404');
    // curl --http2 on http:// asks to upgrade to h2c; like Envoy we answer in HTTP/1.1.
    const upg = await raw(port, 'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n');
    assert.match(upg, /^HTTP\/1\.1 200 OK[\s\S]*hello there$/);
  });

  test('redirect routes build Location from scheme, authority, port and uri, keeping the query', async () => {
    const { port } = await plane(routed([
      route('r1', [match({ uri: exact('/old') })], [], { action: { kind: 'redirect', uri: '/new', authority: null, port: null, derivePort: null, scheme: null, code: 301 } }),
      route('r2', [match({ uri: exact('/secure') })], [], { action: { kind: 'redirect', uri: null, authority: 'other.example.com', port: 8443, derivePort: null, scheme: 'https', code: 302 } }),
      route('r3', [match({ uri: exact('/default') })], [], { action: { kind: 'redirect', uri: null, authority: null, port: null, derivePort: 'FROM_PROTOCOL_DEFAULT', scheme: 'https', code: 308 } }),
    ]));
    const r1 = await h1(port, '/old?q=1', { headers: { host: 'shop.example.com:8080' } });
    assert.deepEqual([r1.status, r1.headers.location], [301, 'http://shop.example.com:8080/new?q=1']);
    const r2 = await h1(port, '/secure', { headers: { host: 'shop.example.com' } });
    assert.deepEqual([r2.status, r2.headers.location], [302, 'https://other.example.com:8443/secure']);
    const r3 = await h1(port, '/default?x', { headers: { host: 'shop.example.com:8080' } });
    assert.deepEqual([r3.status, r3.headers.location], [308, 'https://shop.example.com/default?x']);
  });

  test('httpsRedirect answers 301 to https with the same host and path', async () => {
    const cfg = proxyConfig([listener(8080, [vhost(['shop.example.com'], [route('r', [], [dest('a')])], { httpsRedirect: true })])], clusters());
    const { port } = await plane(cfg);
    const r = await h1(port, '/cart?id=1', { headers: { host: 'shop.example.com' } });
    assert.deepEqual([r.status, r.headers.location], [301, 'https://shop.example.com/cart?id=1']);
    const r2 = await h1(port, '/cart', { headers: { host: 'shop.example.com:8080' } });
    assert.equal(r2.headers.location, 'https://shop.example.com:8080/cart');
  });

  test('upstream headers: edits applied, internal and hop-by-hop headers dropped, x-forwarded-* and x-request-id set', async () => {
    const { port } = await plane(routed([route('r', [], [dest('a', 100, {
      requestHeaders: { set: [['x-dest', 'a']], add: [], remove: [] },
      responseHeaders: { set: [['x-dest-resp', 'a']], add: [], remove: [] },
    })], {
      requestHeaders: { set: [['x-set', 'route'], ['x-client', 'overridden']], add: [['x-add', 'one']], remove: ['x-secret'] },
      responseHeaders: { set: [['x-resp', 'set']], add: [], remove: ['x-upstream'] },
    })]));
    const r = await h1(port, '/p', { headers: {
      'x-client': 'mine', 'x-secret': 's', 'x-add': 'zero', 'x-envoy-internal': 'true', 'x-meshgate-auth': 'admin',
      'x-forwarded-client-cert': 'By=spiffe://evil', 'x-forwarded-for': '10.0.0.1', connection: 'keep-alive, x-hop', 'x-hop': '1',
      'x-request-id': 'abc-123', 'x-echo-header': 'x-from-up=1',
    } });
    assert.equal(r.status, 200);
    const h = echoOf(r).headers;
    assert.equal(h['x-set'], 'route');
    assert.equal(h['x-client'], 'overridden');
    assert.equal(h['x-add'], 'zero, one');
    assert.equal(h['x-dest'], 'a');
    assert.equal(h['x-secret'], undefined);
    assert.equal(h['x-envoy-internal'], undefined);
    assert.equal(h['x-meshgate-auth'], undefined);
    assert.equal(h['x-forwarded-client-cert'], undefined);
    assert.equal(h['x-hop'], undefined, 'headers named by Connection are hop-by-hop');
    assert.equal(h['x-forwarded-for'], '10.0.0.1, 127.0.0.1');
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-request-id'], 'abc-123');
    assert.equal(r.headers['x-resp'], 'set');
    assert.equal(r.headers['x-dest-resp'], 'a');
    assert.equal(r.headers['x-upstream'], undefined, 'response remove applied');
    assert.equal(r.headers['x-from-up'], '1');
    const r2 = await h1(port, '/p', { headers: { 'x-request-id': 'bad id with spaces' } });
    assert.match(String(echoOf(r2).headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  test('rewrites: prefix, whole path, regex with groups, authority', async () => {
    const { port } = await plane(routed([
      route('prefix', [match({ uri: prefix('/api/v1/') })], [dest('a')], { rewrite: { uri: '/v1/', authority: 'internal.svc', uriRegex: null } }),
      route('exact', [match({ uri: exact('/login') })], [dest('a')], { rewrite: { uri: '/auth/login', authority: null, uriRegex: null } }),
      route('regex', [match({ uri: regex('/users/[0-9]+/.*') })], [dest('a')], { rewrite: { uri: null, authority: null, uriRegex: { match: '^/users/([0-9]+)/(.*)$', rewrite: '/u/\\2?id=\\1' } } }),
    ]));
    const p = echoOf(await h1(port, '/api/v1/items?x=1', { headers: { host: 'public.example.com' } }));
    assert.deepEqual([p.path, p.authority], ['/v1/items?x=1', 'internal.svc']);
    assert.equal(echoOf(await h1(port, '/login?next=/')).path, '/auth/login?next=/');
    const re = echoOf(await h1(port, '/users/42/profile', { headers: { host: 'public.example.com' } }));
    assert.deepEqual([re.path, re.authority], ['/u/profile?id=42', 'public.example.com']);
  });

  test('weighted split: 400 requests at 75/25 land in proportion', async () => {
    const { port } = await plane(routed([route('split', [], [dest('a', 75), dest('b', 25)])]));
    const counts: Record<string, number> = { a: 0, b: 0 };
    for (let batch = 0; batch < 20; batch++) {
      const replies = await Promise.all(Array.from({ length: 20 }, () => h1(port, '/s')));
      for (const r of replies) counts[String(r.headers['x-upstream'])]++;
    }
    assert.equal(counts.a + counts.b, 400);
    // Binomial(400, 0.75): sd ≈ 8.7; ±45 is more than 5 sd.
    assert.ok(counts.a > 255 && counts.a < 345, `a got ${counts.a} of 400`);
  });

  test('CORS: allowed preflight answered by the proxy, actual request gets allow headers, other origins get none', async () => {
    const cors = {
      allowOrigins: [exact('https://app.example.com'), regex('https://.*\\.trusted\\.org')],
      allowMethods: ['GET', 'POST'], allowHeaders: ['x-token'], exposeHeaders: ['x-total'],
      maxAgeSeconds: 600, allowCredentials: true, unmatchedPreflights: 'FORWARD' as const,
    };
    const { port } = await plane(routed([route('c', [], [dest('a')], { cors })]));
    const before = a.received.length;
    const pre = await h1(port, '/x', { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } });
    assert.equal(pre.status, 200);
    assert.equal(pre.headers['access-control-allow-origin'], 'https://app.example.com');
    assert.equal(pre.headers['access-control-allow-methods'], 'GET,POST');
    assert.equal(pre.headers['access-control-allow-headers'], 'x-token');
    assert.equal(pre.headers['access-control-max-age'], '600');
    assert.equal(pre.headers['access-control-allow-credentials'], 'true');
    assert.equal(a.received.length, before, 'an allowed preflight never reaches the upstream');
    const actual = await h1(port, '/x', { headers: { origin: 'https://api.trusted.org' } });
    assert.equal(actual.headers['access-control-allow-origin'], 'https://api.trusted.org');
    assert.equal(actual.headers['access-control-expose-headers'], 'x-total');
    const other = await h1(port, '/x', { headers: { origin: 'https://evil.com' } });
    assert.equal(other.headers['access-control-allow-origin'], undefined);
    const otherPre = await h1(port, '/x', { method: 'OPTIONS', headers: { origin: 'https://evil.com', 'access-control-request-method': 'GET' } });
    assert.equal(echoOf(otherPre).method, 'OPTIONS', 'unmatched preflight forwarded (Istio default)');
  });

  test('fault: abort with status and Envoy body; delay holds the request', async () => {
    const { port } = await plane(routed([
      route('abort', [match({ uri: exact('/abort') })], [dest('a')], { fault: { delay: null, abort: { httpStatus: 418, grpcStatus: null, percent: 100 } } }),
      route('delay', [match({ uri: exact('/delay') })], [dest('a')], { fault: { delay: { ms: 300, percent: 100 }, abort: null } }),
      route('never', [match({ uri: exact('/never') })], [dest('a')], { fault: { delay: null, abort: { httpStatus: 500, grpcStatus: null, percent: 0 } } }),
    ]));
    const before = a.received.length;
    const ab = await h1(port, '/abort');
    assert.deepEqual([ab.status, ab.body, ab.headers['content-type']], [418, 'fault filter abort', 'text/plain']);
    assert.equal(a.received.length, before);
    const t0 = Date.now();
    const d = await h1(port, '/delay');
    assert.equal(d.status, 200);
    assert.ok(Date.now() - t0 >= 280, `delayed ${Date.now() - t0} ms`);
    assert.equal((await h1(port, '/never')).status, 200, '0% abort never fires');
  });

  test('WebSocket upgrades are routed and tunnelled', async () => {
    const { port } = await plane(routed([route('ws', [match({ uri: prefix('/chat') })], [dest('ws')])]));
    const sock = new WebSocket(`ws://127.0.0.1:${port}/chat/room1`);
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('websocket timeout')), 5000);
      sock.on('message', (m) => {
        messages.push(m.toString());
        if (messages.length === 1) sock.send('ping');
        else { clearTimeout(timer); sock.close(); resolve(); }
      });
      sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    });
    assert.deepEqual(messages, ['ws connected /chat/room1', 'ws: ping']);
    const miss = await raw(port, 'GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    assert.match(miss, /^HTTP\/1\.1 404 /);
  });

  test('a header sent twice is matched value by value, over HTTP/1.1 and h2c [CVE-2026-26308]', async () => {
    const { port } = await plane(routed([
      route('admin', [match({ headers: [{ name: 'x-role', match: exact('admin') }] })], [], { action: direct(200, 'admin') }),
      route('rest', [], [], { action: direct(200, 'rest') }),
    ]));
    assert.equal((await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nX-Role: user\r\nX-Role: admin\r\nConnection: close\r\n\r\n')).split('\r\n\r\n')[1], 'admin');
    assert.equal((await h2(port, '/', { headers: { 'x-role': ['user', 'admin'] } })).body, 'admin');
    assert.equal((await h1(port, '/', { headers: { 'x-role': 'user, admin' } })).body, 'rest', 'one value that merely contains admin');
  });

  test('gRPC requests get local replies as grpc-status, not HTTP errors', async () => {
    const { port } = await plane(routed([route('g', [match({ uri: prefix('/pkg.Svc/') })], [dest('a')], { fault: { delay: null, abort: { httpStatus: null, grpcStatus: 'UNAVAILABLE', percent: 100 } } })]));
    const nf = await h2(port, '/other.Svc/Call', { method: 'POST', headers: { 'content-type': 'application/grpc' }, body: '' });
    assert.deepEqual([nf.status, nf.headers['grpc-status']], [200, '12']);
    const ab = await h2(port, '/pkg.Svc/Call', { method: 'POST', headers: { 'content-type': 'application/grpc' }, body: '' });
    assert.deepEqual([ab.status, ab.headers['grpc-status'], ab.headers['grpc-message']], [200, '14', 'fault%20filter%20abort']);
  });

  test('bodies: buffered for retrying routes, streamed otherwise; mirrors get a copy with -shadow authority', async () => {
    const retries = { attempts: 2, perTryTimeoutMs: null, retryOn: ['5xx'], retriableStatusCodes: [] };
    const { port } = await plane(routed([
      route('mirrored', [match({ uri: prefix('/m') })], [dest('a')], { retries, mirrors: [{ cluster: 'b', percent: 100 }] }),
      route('stream', [match({ uri: prefix('/big') })], [dest('a')], { retries }),
    ]));
    const bBefore = b.received.length;
    const r = await h1(port, '/m/1', { method: 'POST', headers: { host: 'shop.example.com', 'content-type': 'text/plain' }, body: 'small body' });
    assert.equal(echoOf(r).body, 'small body');
    const deadline = Date.now() + 3000;
    while (b.received.length === bBefore && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    const shadow = b.received[b.received.length - 1];
    assert.deepEqual([shadow.body, shadow.authority, shadow.path], ['small body', 'shop.example.com-shadow', '/m/1']);
    const big = 'y'.repeat(200 * 1024);
    const rb = await h1(port, '/big', { method: 'POST', body: big });
    assert.equal(echoOf(rb).body.length, big.length, 'a body over 64 KiB is streamed through');
  });

  test('a broken config is refused with a reason naming its source; the previous version keeps serving', async () => {
    const { dp, port } = await plane(routed([route('ok', [], [], { action: direct(200, 'v1') })]));
    const v1 = dp.version;
    await assert.rejects(
      dp.apply(routed([route('bad', [match({ uri: regex('/x(') })], [dest('a')])])),
      /listener 127\.0\.0\.1_8080 .*route virtualservice\/default\/bad .*invalid RE2 regex/,
    );
    await assert.rejects(
      dp.apply(proxyConfig([listener(8080, [vhost(['*'], [route('tls', [], [], { action: direct(200) })])], {
        tls: { certificates: [{
          source: 'gateway/default/gw/server/0', sniHosts: ['*'], mode: 'SIMPLE', certPem: null, keyPem: null,
          certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem', caPem: null, caFile: null,
          subjectAltNames: [], minVersion: null, maxVersion: null, cipherSuites: [], alpn: [],
        }] },
      })], clusters())),
      /gateway\/default\/gw\/server\/0: cannot read certFile \/nonexistent\/cert\.pem: ENOENT/,
    );
    // A port someone else holds: the new listener cannot bind, nothing changes.
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
    const taken = (squatter.address() as net.AddressInfo).port;
    await assert.rejects(
      dp.apply(proxyConfig([
        listener(8080, [vhost(['*'], [route('ok', [], [], { action: direct(200, 'v2') })])]),
        listener(taken, [vhost(['*'], [route('x', [], [], { action: direct(200) })])]),
      ], clusters())),
      new RegExp(`listener 127\\.0\\.0\\.1_${taken} .*EADDRINUSE`),
    );
    await new Promise<void>((r) => squatter.close(() => r()));
    assert.equal(dp.version, v1);
    const r = await h1(port, '/');
    assert.deepEqual([r.status, r.body], [200, 'v1'], 'old config still serves');
    assert.deepEqual(Object.keys(dp.ports()), ['8080']);
    const problems = JSON.parse((await h1(dp.adminPort, '/problems')).body);
    assert.match(problems.lastNack.error, /EADDRINUSE/);
  });

  test('hot swap while requests are in flight loses no request', async () => {
    const v = (tag: string) => routed([route(tag, [], [dest('a', 100, { requestHeaders: { set: [['x-version', tag]], add: [], remove: [] } })])]);
    const { dp, port } = await plane(v('v1'));
    const seen = a.received.length;
    const inflight = Array.from({ length: 30 }, (_, i) => h1(port, `/slow/${i}`, { headers: { 'x-echo-delay-ms': '300' } }));
    // Swap once every request has reached the upstream, i.e. is mid-flight in the proxy.
    const deadline = Date.now() + 3000;
    while (a.received.length < seen + 30 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await dp.apply(v('v2'));
    const done = await Promise.all(inflight);
    assert.ok(done.every((r) => r.status === 200), done.map((r) => r.status).join(','));
    assert.ok(done.every((r) => echoOf(r).headers['x-version'] === 'v1'), 'requests started on v1 finish on v1');
    assert.equal(echoOf(await h1(port, '/after')).headers['x-version'], 'v2');
    // Steady traffic over HTTP/1.1 and h2c across five more swaps.
    const traffic: Promise<{ status: number }>[] = [];
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < 8; j++) traffic.push(j % 2 ? h1(port, `/t/${i}/${j}`, { headers: { 'x-echo-delay-ms': '20' } }) : h2(port, `/t/${i}/${j}`));
      await dp.apply(v(`v${3 + i}`));
    }
    const statuses = (await Promise.all(traffic)).map((r) => r.status);
    assert.deepEqual(statuses, statuses.map(() => 200));
    // Removing and re-adding a port on the next apply works too.
    await dp.apply(proxyConfig([listener(8081, [vhost(['*'], [route('z', [], [], { action: direct(204) })])])], clusters()));
    assert.equal((await h1(dp.ports()[8081], '/')).status, 204);
    assert.equal(dp.ports()[8080], undefined);
  });
});

describe('hostile requests (BAD-INPUTS)', () => {
  let dp: DataPlane;
  let port: number;
  let a: Upstream;
  before(async () => {
    a = await startEcho({ name: 'a' });
    dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 8080: 0 } });
    await dp.start();
    await dp.apply(proxyConfig([listener(8080, [
      vhost(['httpbin.foo'], [
        route('admin', [match({ uri: prefix('/admin') })], [], { action: direct(403, 'admin') }),
        route('public', [match({ uri: prefix('/public') })], [dest('a')]),
      ]),
    ])], [makeCluster('a', [a.port])]));
    port = dp.ports()[8080];
  });
  after(async () => { await dp.close(200); await a.close(); });

  test('Host is case-insensitive: Httpbin.Foo reaches httpbin.foo [CVE-2021-39155]', async () => {
    assert.equal((await h1(port, '/admin', { headers: { host: 'Httpbin.Foo' } })).status, 403);
    assert.equal((await h1(port, '/admin', { headers: { host: 'HTTPBIN.FOO:8080' } })).status, 403);
  });

  test('path tricks normalise before routing; the upstream sees the normalised path', async () => {
    assert.equal((await raw(port, 'GET /public/../admin HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n')).split('\r\n')[0], 'HTTP/1.1 403 Forbidden');
    assert.equal((await raw(port, 'GET /public/%2e%2e/admin HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n')).split('\r\n')[0], 'HTTP/1.1 403 Forbidden');
    const frag = await raw(port, 'GET /admin#/../public HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n');
    assert.match(frag, /^HTTP\/1\.1 403 /, 'the fragment is cut, not resolved');
    const up = await raw(port, 'GET /public/./x/../y?q=1#f HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n');
    assert.match(up, /"path":"\/public\/y\?q=1"/);
  });

  test('%00 in the path → 400', async () => {
    assert.match(await raw(port, 'GET /public/%00x HTTP/1.1\r\nHost: httpbin.foo\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
  });

  test('a request without Host → 400 (HTTP/1.1 and HTTP/1.0) [CVE-2019-18838]', async () => {
    assert.match(await raw(port, 'GET /public HTTP/1.1\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, 'GET /public HTTP/1.0\r\n\r\n'), /^HTTP\/1\.1 400 /);
  });

  test('CR/LF or bare CR inside a header value never reaches the upstream [CVE-2023-27493]', async () => {
    const before = a.received.length;
    assert.match(await raw(port, 'GET /public HTTP/1.1\r\nHost: httpbin.foo\r\nX-A: a\rX-Injected: 1\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, 'GET /public HTTP/1.1\r\nHost: httpbin.foo\r\nX-A: a\r\n folded\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.equal(a.received.length, before);
  });

  test('whitespace in a header name, lower-case methods, conflicting CL/TE → 400', async () => {
    assert.match(await raw(port, 'GET /public HTTP/1.1\r\nHost: httpbin.foo\r\nX-Bad Name: 1\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, 'GET /public HTTP/1.1\r\nHost: httpbin.foo\r\nX-Bad : 1\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, 'get /public HTTP/1.1\r\nHost: httpbin.foo\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, 'POST /public HTTP/1.1\r\nHost: httpbin.foo\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 400 /);
  });

  test('headers beyond 60 KiB → 431', async () => {
    const big = 'x'.repeat(61 * 1024);
    assert.match(await raw(port, `GET /public HTTP/1.1\r\nHost: httpbin.foo\r\nX-Big: ${big}\r\n\r\n`), /^HTTP\/1\.1 431 /);
  });
});
