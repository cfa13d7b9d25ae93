// Parity of the HTTP/1.1 fast path with node's http server + undici: two data planes on
// the same config and the same upstreams, one with MESHGATE_H1_FASTPATH=1 and one with =0,
// get byte-identical requests; what the client reads back must be byte-identical too (the
// Date header and generated request ids aside). Each test also checks that the fast plane
// really served (or really handed over) the requests, so parity is never vacuous.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DataPlane } from '../dataplane.ts';
import { createUpstreams } from '../upstream/index.ts';
import { startEcho, type Upstream } from '../../test/helpers/upstream.ts';
import { makeCluster } from '../../test/helpers/downstream.ts';
import { h2, raw } from '../../test/helpers/client.ts';
import { issueCert, makeCA, type Pem, type TestCA } from '../../test/helpers/certs.ts';
import { dest, direct, exact, listener, match, prefix, proxyConfig, route, serverCert, vhost } from '../../test/helpers/proxyconfig.ts';
import { h1Stats } from './enabled.ts';
import type { ProxyConfig } from '../../api/proxyconfig.ts';

/** Builds a data plane with the fast path switched as asked (read when listeners and clusters are built). */
async function planeWith(fast: boolean, upstreamPort: number, limited = false): Promise<{ dp: DataPlane; port: number }> {
  const dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 8080: 0 }, drainMs: 200 });
  await dp.start();
  const saved = process.env.MESHGATE_H1_FASTPATH;
  process.env.MESHGATE_H1_FASTPATH = fast ? '1' : '0';
  try {
    const cfg = proxyConfig([listener(8080, [vhost(['*'], [
      route('direct', [match({ uri: exact('/direct') })], [], { action: direct(200, 'direct answer') }),
      route('redirect', [match({ uri: exact('/old') })], [], { action: { kind: 'redirect', uri: '/new', authority: null, port: null, derivePort: null, scheme: null, code: 301 } }),
      route('edited', [match({ uri: prefix('/edited') })], [dest('a')], {
        requestHeaders: { set: [['x-set', 'yes']], add: [['x-added', 'one']], remove: ['x-drop'] },
        responseHeaders: { set: [['x-resp', 'set']], add: [], remove: ['x-upstream'] },
      }),
      route('retried', [match({ uri: prefix('/retried') })], [dest('a')], { retries: { attempts: 2, perTryTimeoutMs: null, retryOn: ['5xx'], retriableStatusCodes: [] } }),
      route('limited', [match({ uri: prefix('/limited') })], [dest('a')]),
      route('api', [match({ uri: prefix('/api') })], [dest('a')]),
    ])])], [makeCluster('a', [upstreamPort])]);
    if (limited) cfg.policies = LIMITED;
    await dp.apply(cfg);
  } finally {
    if (saved === undefined) delete process.env.MESHGATE_H1_FASTPATH; else process.env.MESHGATE_H1_FASTPATH = saved;
  }
  return { dp, port: dp.ports()[8080] };
}

/** A local rate limit on the `limited` route: allowed answers carry RateLimit-* headers. */
const LIMITED: ProxyConfig['policies'] = {
  jwtRules: [], authorization: [], numTrustedProxies: 0,
  rateLimits: [{
    source: 'ratelimitpolicy/default/rl', mode: 'local', shadow: false, hosts: [], routes: ['virtualservice/default/limited'],
    rules: [{ source: 'ratelimitpolicy/default/rl/rules/0', name: 'per-route', limit: { requests: 1000, unit: 'minute', burst: 0 }, key: [], overrides: [] }],
  }],
};

/** What may differ between two runs of the same exchange: the clock and generated ids. */
function normalise(s: string): string {
  return s
    .replace(/^Date: .*$/gim, 'Date: <date>')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<uuid>');
}

describe('HTTP/1.1 fast path: parity with node:http + undici', () => {
  let up: Upstream;
  let fast: { dp: DataPlane; port: number };
  let slow: { dp: DataPlane; port: number };
  before(async () => {
    up = await startEcho({ name: 'a' });
    fast = await planeWith(true, up.port);
    slow = await planeWith(false, up.port);
  });
  after(async () => {
    await fast.dp.close(200);
    await slow.dp.close(200);
    await up.close();
  });

  /** The same bytes to both planes; returns the fast plane's answer after asserting parity. */
  async function same(parts: string | string[], expect: { served?: number; fallbacks?: number } = {}): Promise<string> {
    const s0 = { ...h1Stats };
    const a = normalise(await raw(fast.port, parts));
    const served = h1Stats.served - s0.served;
    const fallbacks = h1Stats.fallbacks - s0.fallbacks;
    const b = normalise(await raw(slow.port, parts));
    assert.equal(h1Stats.served, s0.served + served, 'the slow plane does not use the fast path');
    assert.equal(a, b);
    if (expect.served !== undefined) assert.equal(served, expect.served, 'requests served by the fast path');
    if (expect.fallbacks !== undefined) assert.equal(fallbacks, expect.fallbacks, 'connections handed to node');
    return a;
  }

  test('keep-alive: two requests on one connection, the second asks to close', async () => {
    const out = await same([
      'GET /api/one?x=1 HTTP/1.1\r\nHost: svc.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n',
      'GET /api/two HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n\r\n',
    ], { served: 2, fallbacks: 0 });
    assert.equal(out.match(/^HTTP\/1\.1 200 OK$/gm)?.length, 2);
    assert.match(out, /"path":"\/api\/one\?x=1"/);
    assert.match(out, /Connection: keep-alive\r\nKeep-Alive: timeout=60\r\n/);
    assert.match(out, /Connection: close\r\n/);
  });

  test('request bodies: Content-Length and chunked (extensions, trailer) reach the upstream whole', async () => {
    const body = 'x'.repeat(3000);
    const cl = await same(`POST /api/cl HTTP/1.1\r\nHost: svc\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`, { served: 1 });
    assert.match(cl, new RegExp(`"body":"x{3000}"`));
    const chunked = await same([
      'POST /api/chunked HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n',
      '6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n',
    ], { served: 1 });
    assert.match(chunked, /"body":"hello world"/);
    // A retrying route reads a small body whole before the first try.
    const buffered = await same('PUT /retried/b HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd', { served: 1 });
    assert.match(buffered, /"method":"PUT".*"body":"abcd"/);
  });

  test('pipelined requests in one write are answered in order', async () => {
    const out = await same(
      'GET /api/1 HTTP/1.1\r\nHost: svc\r\n\r\n'
      + 'POST /api/2 HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc'
      + 'GET /direct HTTP/1.1\r\nHost: svc\r\n\r\n'
      + 'GET /nothing-here HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n',
      { served: 4, fallbacks: 0 },
    );
    const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '200', '200', '404']);
    assert.ok(out.indexOf('"path":"/api/1"') < out.indexOf('"path":"/api/2"'));
  });

  test('a connection falls back to node midway: the request it declines and all after it are node\'s', async () => {
    const out = await same([
      'GET /api/first HTTP/1.1\r\nHost: svc\r\n\r\n',
      // Expect: 100-continue is not in the fast path's subset.
      'POST /api/second HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok',
      'GET /api/third HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n',
    ], { served: 1, fallbacks: 1 });
    assert.deepEqual([...out.matchAll(/"path":"([^"]+)"/g)].map((m) => m[1]), ['/api/first', '/api/second', '/api/third']);
    assert.match(out, /HTTP\/1\.1 100 Continue/);
    // Valid but unusual framing (chunked after another coding) is node's to judge; node's
    // request then goes upstream through the same client, its body streamed.
    const te = await same('POST /api/te HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n', { served: 0, fallbacks: 1 });
    assert.match(te, /"path":"\/api\/te"/);
  });

  test('bad heads (BAD-INPUTS) get node\'s answers, byte for byte, and reach no upstream', async () => {
    const before = up.received.length;
    const bad = [
      'get /api HTTP/1.1\r\nHost: svc\r\n\r\n',
      'GET /api HTTP/1.1\r\nHost: svc\r\nX-Bad Name: 1\r\n\r\n',
      'GET /api HTTP/1.1\r\nHost: svc\r\nX-Bad : 1\r\n\r\n',
      'GET /api HTTP/1.1\r\nHost: svc\r\nX-A: a\rX-Injected: 1\r\nConnection: close\r\n\r\n',
      'GET /api HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n folded\r\nConnection: close\r\n\r\n',
      'POST /api HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /api HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
      'GET /api HTTP/1.1\r\nConnection: close\r\n\r\n',
      'GET /api HTTP/1.0\r\n\r\n',
      `GET /api HTTP/1.1\r\nHost: svc\r\nX-Big: ${'x'.repeat(61 * 1024)}\r\n\r\n`,
    ];
    for (const head of bad) {
      const out = await same(head, { served: 0, fallbacks: 1 });
      assert.match(out, /^HTTP\/1\.1 4\d\d /, head.slice(0, 60));
    }
    assert.equal(up.received.length, before);
  });

  test('a broken chunked body after the head was accepted: 400 and the connection closes', async () => {
    const out = await same('POST /api/x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', { served: 1 });
    assert.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/);
  });

  test('local replies, HEAD, header edits and upstream statuses look the same', async () => {
    await same('GET /direct HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n', { served: 1 });
    await same('GET /old?q=1 HTTP/1.1\r\nHost: svc:8080\r\nConnection: close\r\n\r\n', { served: 1 });
    await same('GET /nothing/../api/x HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n', { served: 1 });
    await same('GET /api/%00 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n', { served: 1 });
    await same('HEAD /api/head HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n', { served: 1 });
    const edited = await same('GET /edited HTTP/1.1\r\nHost: svc\r\nX-Drop: 1\r\nX-Envoy-Internal: 1\r\nX-Added: zero\r\nConnection: close\r\n\r\n', { served: 1 });
    assert.match(edited, /x-resp: set/);
    assert.doesNotMatch(edited, /x-upstream:/);
    assert.match(edited, /"x-added":"zero, one"/);
    assert.doesNotMatch(edited, /x-envoy-internal|"x-drop"/);
    const e503 = await same('GET /api/s HTTP/1.1\r\nHost: svc\r\nX-Echo-Status: 503\r\nX-Echo-Header: x-a=1,x-b=2\r\nConnection: close\r\n\r\n', { served: 1 });
    assert.match(e503, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    const retried = await same('GET /retried/s HTTP/1.1\r\nHost: svc\r\nX-Echo-Status: 503\r\nConnection: close\r\n\r\n', { served: 1 });
    assert.match(retried, /^HTTP\/1\.1 503 /);
    await same('GET /api/dup HTTP/1.1\r\nHost: svc\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: x\r\nAccept: y\r\nUser-Agent: one\r\nUser-Agent: two\r\nConnection: close\r\n\r\n', { served: 1 });
  });
});

// Response heads: the fast-path client hands a well-formed head to the fast downstream as
// bytes (no header map) when nothing edits it. An upstream speaking raw bytes answers each
// path with a canned head, so every shape the byte path must get right — or must decline,
// leaving the head to the map path — is compared with node:http + undici.
describe('HTTP/1.1 fast path: response heads passed as bytes match the header-map path', () => {
  const HEADS: Record<string, { head: string; body?: string; raw: boolean }> = {
    plain: { head: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-Upstream: a\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=30\r\n', body: 'ok', raw: true },
    spacing: { head: 'HTTP/1.1 201 Whatever\r\ncontent-length:2\r\nX-Pad:   a b\r\nX-Empty:\r\nX-Tab:\tv\r\nETag: "x"\r\n', body: 'ok', raw: true },
    chunked: { head: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n', body: '5\r\nhello\r\n0\r\n\r\n', raw: true },
    // bodies past the size copied next to the head (16 KiB): head, body and framing as separate writes
    bigchunked: { head: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n', body: `9c40\r\n${'c'.repeat(40_000)}\r\n0\r\n\r\n`, raw: true },
    biglength: { head: 'HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n', body: 'l'.repeat(40_000), raw: true },
    nocontent: { head: 'HTTP/1.1 204 No Content\r\nX-A: 1\r\n', raw: true },
    close: { head: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n', body: 'ok', raw: true },
    unknownstatus: { head: 'HTTP/1.1 299 Custom\r\nContent-Length: 0\r\n', raw: true },
    // declined: the map path answers
    repeated: { head: 'HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-A: 1\r\nset-cookie: b=2\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    caretilde: { head: 'HTTP/1.1 200 OK\r\nX-^: 1\r\nX-~: 2\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    digitname: { head: 'HTTP/1.1 200 OK\r\nX-A: 1\r\n123: 2\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    connectionnames: { head: 'HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-Keep: 2\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    obstext: { head: 'HTTP/1.1 200 OK\r\nX-Name: caf\u00e9\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    // café in UTF-8 (this table is sent as latin-1): the same two bytes must come out
    utf8: { head: 'HTTP/1.1 200 OK\r\nX-Name: caf\u00c3\u00a9\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    control: { head: 'HTTP/1.1 200 OK\r\nX-Bad: a\u0001b\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    grpcstatus: { head: 'HTTP/1.1 200 OK\r\ngrpc-status: 14\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    upgrade: { head: 'HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 2\r\n', body: 'ok', raw: false },
    badlength: { head: 'HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n', body: 'ok', raw: false },
    setbyboth: { head: 'HTTP/1.1 200 OK\r\nRateLimit-Limit: 7\r\nX-A: 1\r\nContent-Length: 2\r\n', body: 'ok', raw: true },
    many: { head: `HTTP/1.1 200 OK\r\n${Array.from({ length: 40 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}Content-Length: 2\r\n`, body: 'ok', raw: false },
  };
  let server: import('node:net').Server;
  let upPort = 0;
  let fast: { dp: DataPlane; port: number };
  let slow: { dp: DataPlane; port: number };
  before(async () => {
    const net = await import('node:net');
    server = net.createServer((sock) => {
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.slice(0, end);
          buf = buf.slice(end + 4);
          const name = /^\w+ \/(?:api|limited)\/(\w+)/.exec(head)?.[1] ?? '';
          const h = HEADS[name];
          if (h === undefined) { sock.end('HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n'); return; }
          const body = head.startsWith('HEAD ') ? '' : h.body ?? '';
          sock.write(Buffer.from(`${h.head}\r\n${body}`, 'latin1'));
          if (/Connection: close/i.test(h.head)) sock.end();
        }
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    upPort = (server.address() as import('node:net').AddressInfo).port;
    fast = await planeWith(true, upPort, true);
    slow = await planeWith(false, upPort, true);
  });
  after(async () => {
    await fast.dp.close(200);
    await slow.dp.close(200);
    server.close();
  });

  test('a rate-limited route: the allowed answer\'s RateLimit-* headers are added to a head passed as bytes', async () => {
    for (const name of ['plain', 'chunked', 'spacing']) {
      const s0 = { ...h1Stats };
      const req = `GET /limited/${name} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n`;
      const a = normalise(await raw(fast.port, req));
      assert.equal(h1Stats.rawHeads - s0.rawHeads, 1, name);
      // Both planes count against their own limit; a fresh plane's first answers match.
      const b = normalise(await raw(slow.port, req));
      assert.equal(a, b, name);
      assert.match(a, /\r\nratelimit-limit: 1000\r\nratelimit-remaining: \d+\r\nratelimit-reset: \d+\r\n/, name);
    }
    // The upstream sends a header the policy sets: replaced in place, as the map path does.
    const a = normalise(await raw(fast.port, 'GET /limited/setbyboth HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n'));
    const b = normalise(await raw(slow.port, 'GET /limited/setbyboth HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n'));
    assert.equal(a, b);
    assert.match(a, /^HTTP\/1\.1 200 OK\r\nratelimit-limit: 1000\r\nx-a: 1\r\ncontent-length: 2\r\nratelimit-remaining: \d+\r\nratelimit-reset: \d+\r\n/);
  });

  for (const [name, h] of Object.entries(HEADS)) {
    test(`${name}: ${h.raw ? 'passed as bytes' : 'declined, the map path answers'}; same bytes either way`, async () => {
      const s0 = { ...h1Stats };
      const req = `GET /api/${name} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n`;
      const a0 = await raw(fast.port, req);
      const a = normalise(a0);
      assert.equal(h1Stats.served - s0.served, 1, 'served by the fast path');
      assert.equal(h1Stats.rawHeads - s0.rawHeads, h.raw ? 1 : 0, 'head passed as bytes');
      const b = normalise(await raw(slow.port, req));
      assert.equal(a, b);
      // The upstream's Date is kept (lower-cased like every name), none is added.
      if (name === 'plain') assert.match(a0, /^HTTP\/1\.1 200 OK\r\ncontent-type: text\/plain\r\ncontent-length: 2\r\nx-upstream: a\r\ndate: Sat, 01 Jan 2000 00:00:00 GMT\r\nConnection: close\r\n\r\nok$/);
      if (name === 'spacing') assert.match(a, /\r\nx-pad: a b\r\nx-empty: \r\nx-tab: v\r\netag: "x"\r\n/);
      if (name === 'utf8') assert.ok(Buffer.from(a0, 'latin1').includes(Buffer.from('x-name: café\r\n', 'utf8')), 'UTF-8 bytes unchanged');
      if (name === 'control') assert.match(a, /^HTTP\/1\.1 503 /);
      if (name === 'chunked') assert.match(a, /Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n$/);
    });
  }

  test('HEAD: a head as bytes with its Content-Length and no body', async () => {
    const s0 = { ...h1Stats };
    const req = 'HEAD /api/plain HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n';
    const a = normalise(await raw(fast.port, req));
    assert.equal(h1Stats.rawHeads - s0.rawHeads, 1);
    assert.equal(a, normalise(await raw(slow.port, req)));
    assert.match(a, /content-length: 2\r\n[\s\S]*\r\n\r\n$/);
  });

  test('a route that edits response headers never takes the byte path', async () => {
    const s0 = { ...h1Stats };
    const req = 'GET /edited/plain HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n';
    const a = normalise(await raw(fast.port, req));
    assert.equal(h1Stats.served - s0.served, 1);
    assert.equal(h1Stats.rawHeads - s0.rawHeads, 0);
    assert.match(a, /x-resp: set/);
  });
});

// TLS: HTTP/1.1 connections on a TLS listener (ALPN http/1.1, or none) take the fast path
// after the handshake; HTTP/2 (ALPN h2) stays node's. Same comparison as above, over TLS.
describe('HTTP/1.1 fast path over TLS: parity with node:https + undici', () => {
  let ca: TestCA;
  let clientCa: TestCA;
  let up: Upstream;
  let fast: { dp: DataPlane; port: number };
  let slow: { dp: DataPlane; port: number };
  let clientCert: Pem;

  async function tlsPlane(fastPath: boolean, serverPem: Pem): Promise<{ dp: DataPlane; port: number }> {
    const dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 443: 0 }, drainMs: 200 });
    await dp.start();
    const saved = process.env.MESHGATE_H1_FASTPATH;
    process.env.MESHGATE_H1_FASTPATH = fastPath ? '1' : '0';
    try {
      await dp.apply(proxyConfig([listener(443, [vhost(['*'], [
        route('direct', [match({ uri: exact('/direct') })], [], { action: direct(200, 'direct answer') }),
        route('https-only', [match({ uri: exact('/scheme'), scheme: exact('https') })], [], { action: direct(200, 'https') }),
        route('api', [match({ uri: prefix('/api') })], [dest('a')]),
      ])], {
        protocol: 'HTTPS',
        tls: { certificates: [serverCert(['*'], { certPem: serverPem.certPem, keyPem: serverPem.keyPem, mode: 'MUTUAL', caPem: clientCa.certPem })] },
      })], [makeCluster('a', [up.port])]));
    } finally {
      if (saved === undefined) delete process.env.MESHGATE_H1_FASTPATH; else process.env.MESHGATE_H1_FASTPATH = saved;
    }
    return { dp, port: dp.ports()[443] };
  }

  /** The parts over one TLS connection (ALPN as given, a client certificate), all it read. */
  function rawTls(port: number, parts: string[], alpn: string[] | undefined): Promise<string> {
    return raw(port, parts, 3000, { servername: 'svc.example', ca: ca.certPem, cert: clientCert.certPem, key: clientCert.keyPem, ...(alpn ? { ALPNProtocols: alpn } : {}) });
  }

  before(async () => {
    ca = makeCA('server CA');
    clientCa = makeCA('client CA');
    const serverPem = issueCert(ca, 'svc.example', { dnsNames: ['svc.example'] });
    clientCert = issueCert(clientCa, 'client', { client: true, uris: ['spiffe://cluster.local/ns/default/sa/frontend'] });
    up = await startEcho({ name: 'a' });
    fast = await tlsPlane(true, serverPem);
    slow = await tlsPlane(false, serverPem);
  });
  after(async () => {
    await fast.dp.close(200);
    await slow.dp.close(200);
    await up.close();
  });

  async function sameTls(parts: string[], alpn: string[] | undefined, expect: { served: number; fallbacks: number }): Promise<string> {
    const s0 = { ...h1Stats };
    const a = normalise(await rawTls(fast.port, parts, alpn));
    assert.equal(h1Stats.served - s0.served, expect.served, 'requests served by the fast path');
    assert.equal(h1Stats.fallbacks - s0.fallbacks, expect.fallbacks, 'connections handed to node');
    const s1 = { ...h1Stats };
    const b = normalise(await rawTls(slow.port, parts, alpn));
    assert.equal(h1Stats.served, s1.served, 'the slow plane does not use the fast path');
    assert.equal(a, b);
    return a;
  }

  for (const alpn of [['http/1.1'], undefined]) {
    test(`keep-alive requests, a chunked body and an https-only route (ALPN ${alpn ? alpn[0] : 'none'})`, async () => {
      const out = await sameTls([
        'GET /api/one HTTP/1.1\r\nHost: svc.example\r\nAccept: */*\r\n\r\n',
        'POST /api/two HTTP/1.1\r\nHost: svc.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
        'GET /scheme HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n\r\n',
      ], alpn, { served: 3, fallbacks: 0 });
      assert.deepEqual([...out.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]), ['200', '200', '200']);
      assert.match(out, /"x-forwarded-proto":"https"/);
      assert.match(out, /"body":"hello"/);
      assert.match(out, /\r\n\r\nhttps$/);
    });
  }

  test('a request the fast path declines hands the TLS connection to node, which answers it and the rest', async () => {
    const out = await sameTls([
      'GET /api/first HTTP/1.1\r\nHost: svc.example\r\n\r\n',
      'POST /api/second HTTP/1.1\r\nHost: svc.example\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok',
      'GET /api/third HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n\r\n',
    ], ['http/1.1'], { served: 1, fallbacks: 1 });
    assert.deepEqual([...out.matchAll(/"path":"([^"]+)"/g)].map((m) => m[1]), ['/api/first', '/api/second', '/api/third']);
    const bad = await sameTls(['GET /api HTTP/1.1\r\nHost: svc\r\nX-Bad Name: 1\r\n\r\n'], ['http/1.1'], { served: 0, fallbacks: 1 });
    assert.match(bad, /^HTTP\/1\.1 400 /);
  });

  test('HTTP/2 (ALPN h2) on the same port is not the fast path\'s', async () => {
    const s0 = { ...h1Stats };
    const r = await h2(fast.port, '/api/h2', { tlsOpts: { servername: 'svc.example', ca: ca.certPem, cert: clientCert.certPem, key: clientCert.keyPem } });
    assert.equal(r.status, 200);
    assert.equal(r.alpn, 'h2');
    assert.equal(h1Stats.served - s0.served, 0);
  });
});
