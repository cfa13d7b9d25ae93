// forward() over HTTP/1.1: what a client of the gateway sees, against real upstreams on loopback.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createUpstreams } from './index.ts';
import { startEcho, freePort } from '../../test/helpers/upstream.ts';
import type { EchoReply } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';
import type { RetryPolicy } from '../../api/proxyconfig.ts';

const retry = (over: Partial<RetryPolicy> = {}): RetryPolicy => ({ attempts: 2, perTryTimeoutMs: null, retryOn: [], retriableStatusCodes: [], ...over });

describe('forward over HTTP/1.1', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('sends method, path, authority, headers and body; relays status, headers and body', async () => {
    const echo = await startEcho({ name: 'a' });
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const seen: [number, Record<string, unknown>][] = [];
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', bufferBody: true, hooks: { onHeaders(s, h) { seen.push([s, { ...h }]); h['x-edited'] = 'yes'; } } });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());

    const r = await get(`${ds.url}/p/q?x=1`, { method: 'POST', headers: { host: 'svc.example.com', 'x-test': 'v', 'content-type': 'text/plain', 'x-echo-status': '201', 'x-echo-header': 'x-up=1' }, body: 'hello' });
    assert.equal(r.status, 201);
    assert.equal(r.headers['x-up'], '1');
    assert.equal(r.headers['x-edited'], 'yes', 'hooks.onHeaders edits reach the client');
    assert.equal(r.headers['keep-alive'], undefined, 'hop-by-hop response headers are not relayed');
    const got = JSON.parse(r.body) as EchoReply;
    assert.equal(got.method, 'POST');
    assert.equal(got.path, '/p/q?x=1');
    assert.equal(got.authority, 'svc.example.com');
    assert.equal(got.headers['x-test'], 'v');
    assert.equal(got.body, 'hello');
    assert.equal(seen.length, 1);
    assert.equal(seen[0][0], 201);
    const res = await ds.nextResult();
    assert.deepEqual({ status: res.status, attempts: res.attempts, flags: res.flags, host: res.upstreamHost }, { status: 201, attempts: 1, flags: [], host: `127.0.0.1:${echo.port}` });
    assert.equal(res.bytesSent, Buffer.byteLength(r.body));
  });

  test('sequential requests reuse one keep-alive upstream connection', async () => {
    const echo = await startEcho();
    let connections = 0;
    // startEcho's server is not exposed; count connections with a plain server instead.
    const server = http.createServer((_req, res) => res.end('ok'));
    server.on('connection', () => connections++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const ups = createUpstreams();
    ups.update([makeCluster('c', [port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close(), () => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    for (let i = 0; i < 5; i++) assert.equal((await get(`${ds.url}/${i}`)).body, 'ok');
    assert.equal(connections, 1);
  });

  test('streams a request body that was not buffered', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const big = 'x'.repeat(200_000);
    const r = await get(`${ds.url}/up`, { method: 'PUT', body: big });
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as EchoReply).body.length, big.length);
  });

  test('passes chunked response trailers through', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { trailer: 'x-checksum' });
      res.write('part1');
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end('part2');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ups = createUpstreams();
    ups.update([makeCluster('c', [(server.address() as AddressInfo).port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => ups.close(), () => ds.close(), () => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    const r = await get(ds.url);
    assert.equal(r.body, 'part1part2');
    assert.equal(r.trailers['x-checksum'], 'abc');
  });

  test('unknown cluster: 503 no healthy upstream, flag NC', async () => {
    const ups = createUpstreams();
    ups.update([]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'missing' });
    closers.push(() => ups.close(), () => ds.close());
    const r = await get(ds.url);
    assert.equal(r.status, 503);
    assert.equal(r.body, 'no healthy upstream');
    assert.deepEqual((await ds.nextResult()).flags, ['NC']);
  });

  test('cluster without endpoints: 503 no healthy upstream, flag UH', async () => {
    const ups = createUpstreams();
    ups.update([makeCluster('empty', [])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'empty' });
    closers.push(() => ups.close(), () => ds.close());
    const r = await get(ds.url);
    assert.equal(r.status, 503);
    assert.equal(r.body, 'no healthy upstream');
    const res = await ds.nextResult();
    assert.deepEqual(res.flags, ['UH']);
    assert.equal(res.upstreamHost, null);
  });

  test('connection refused, no retries: 503 connection failure, flag UF', async () => {
    const port = await freePort();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => ups.close(), () => ds.close());
    const r = await get(ds.url);
    assert.equal(r.status, 503);
    assert.equal(r.body, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure');
    assert.deepEqual((await ds.nextResult()).flags, ['UF']);
  });

  test('a header value with CR/LF is never sent upstream (HTTP/1.1 and HTTP/2)', async () => {
    for (const protocol of ['http1', 'h2c'] as const) {
      const echo = await startEcho({ protocol });
      const ups = createUpstreams();
      ups.update([makeCluster('c', [echo.port], { protocol: protocol === 'h2c' ? 'http2' : 'http1' })]);
      const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ headers: { 'x-bad': 'a\r\nx-injected: 1' } }) });
      closers.push(() => echo.close(), () => ups.close(), () => ds.close());
      const r = await get(ds.url);
      assert.equal(r.status, 400, protocol);
      assert.equal(echo.received.length, 0, protocol);
    }
  });

  test('DNS endpoints are resolved when connecting', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [{ address: 'localhost', port: echo.port }], { dns: true })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const r = await get(ds.url);
    assert.equal(r.status, 200);
    assert.equal((await ds.nextResult()).upstreamHost, `localhost:${echo.port}`);
  });

  test('a throwing response hook does not take the proxy down', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port]), makeCluster('none', [])]);
    const ds = await startDownstream({ upstreams: ups, cluster: (req) => String(req.headers['x-cluster']), hooks: { onHeaders() { throw new Error('hook bug'); } } });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    assert.equal((await get(ds.url, { headers: { 'x-cluster': 'c' } })).status, 200);
    assert.equal((await get(ds.url, { headers: { 'x-cluster': 'none' } })).status, 503);
  });
});

describe('retries', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('a 503 on the first try is retried and the client gets the success', async () => {
    let n = 0;
    const echo = await startEcho({ handler: (_req, res) => { if (n++ === 0) { res.statusCode = 503; res.end('busy'); return true; } return false; } });
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', bufferBody: true, route: () => ({ retries: retry({ retryOn: ['retriable-status-codes'], retriableStatusCodes: [503] }) }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const r = await get(ds.url, { method: 'POST', body: 'payload' });
    assert.equal(r.status, 200);
    assert.equal(echo.received.length, 2);
    assert.equal(echo.received[1].body, 'payload', 'the buffered body is sent again');
    const res = await ds.nextResult();
    assert.equal(res.attempts, 2);
    assert.deepEqual(res.flags, []);
  });

  test('connect failure on one endpoint, success on another', async () => {
    const dead = await freePort();
    const echo = await startEcho({ name: 'live' });
    const ups = createUpstreams();
    // Round robin from a random start: whichever comes first, a failure moves to the other.
    ups.update([makeCluster('c', [dead, echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ retries: retry({ retryOn: ['connect-failure'], attempts: 1 }) }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    for (let i = 0; i < 4; i++) {
      const r = await get(ds.url);
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-upstream'], 'live');
      assert.equal((await ds.nextResult()).upstreamHost, `127.0.0.1:${echo.port}`);
    }
  });

  test('retries exhausted on 503: the last upstream response is passed through, flag URX', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ retries: retry({ retryOn: ['5xx'], attempts: 2 }) }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const r = await get(ds.url, { headers: { 'x-echo-status': '503' } });
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as EchoReply).name, 'echo', 'the upstream body, not a local reply');
    assert.equal(echo.received.length, 3);
    const res = await ds.nextResult();
    assert.equal(res.attempts, 3);
    assert.deepEqual(res.flags, ['URX']);
  });

  test('retriable-4xx retries 409; gateway-error does not retry 500', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: (req) => ({ retries: retry({ retryOn: [String(req.headers['x-retry-on'])], attempts: 1 }) }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    await get(ds.url, { headers: { 'x-echo-status': '409', 'x-retry-on': 'retriable-4xx' } });
    assert.equal(echo.received.length, 2);
    await get(ds.url, { headers: { 'x-echo-status': '500', 'x-retry-on': 'gateway-error' } });
    assert.equal(echo.received.length, 3);
    await get(ds.url, { headers: { 'x-echo-status': '502', 'x-retry-on': 'gateway-error' } });
    assert.equal(echo.received.length, 5);
  });

  test('no retry once the response has started: the client sees a reset, not a second response', async () => {
    let n = 0;
    const server = http.createServer((_req, res) => {
      n++;
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ups = createUpstreams();
    ups.update([makeCluster('c', [(server.address() as AddressInfo).port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ retries: retry({ retryOn: ['5xx', 'reset'], attempts: 3 }) }) });
    closers.push(() => ups.close(), () => ds.close(), () => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    await assert.rejects(get(ds.url));
    const res = await ds.nextResult();
    assert.equal(n, 1);
    assert.equal(res.attempts, 1);
    assert.equal(res.status, 200);
    assert.ok(res.flags.includes('UC'));
  });

  test('a streamed body is still retried after a connect failure: nothing was consumed yet', async () => {
    const dead = await freePort();
    const echo = await startEcho({ name: 'live' });
    const ups = createUpstreams();
    ups.update([makeCluster('c', [dead, echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ retries: retry({ retryOn: ['connect-failure'], attempts: 1 }) }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const body = 'y'.repeat(50_000);
    for (let i = 0; i < 2; i++) {
      const r = await get(ds.url, { method: 'POST', body });
      assert.equal(r.status, 200);
      assert.equal((JSON.parse(r.body) as EchoReply).body, body);
    }
  });

  test('no retry of a streamed body once bytes went upstream', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ retries: retry({ retryOn: ['5xx'], attempts: 2 }) }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const r = await get(ds.url, { method: 'POST', headers: { 'x-echo-status': '503' }, body: 'streamed' });
    assert.equal(r.status, 503);
    assert.equal(echo.received.length, 1);
  });

  test('per-try timeout retried on another try, then the overall timeout answers 504', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: (req) => ({
      timeoutMs: Number(req.headers['x-timeout'] ?? 0) || null,
      retries: retry({ retryOn: ['5xx'], attempts: 5, perTryTimeoutMs: 60 }),
    }) });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());

    const t0 = Date.now();
    const r1 = await get(ds.url, { headers: { 'x-echo-delay-ms': '1000' } });
    assert.equal(r1.status, 504);
    assert.equal(r1.body, 'upstream request timeout');
    const res1 = await ds.nextResult();
    assert.equal(res1.attempts, 6, 'each try timed out and was retried');
    assert.ok(res1.flags.includes('UT'));
    assert.ok(res1.flags.includes('URX'));

    const r2 = await get(ds.url, { headers: { 'x-echo-delay-ms': '1000', 'x-timeout': '150' } });
    assert.equal(r2.status, 504);
    const res2 = await ds.nextResult();
    assert.ok(res2.attempts >= 2 && res2.attempts < 6, `overall timeout cut the retries (attempts ${res2.attempts})`);
    assert.ok(Date.now() - t0 < 1000 * 1.5);
  });

  test('overall timeout after response headers resets the downstream', async () => {
    const server = http.createServer((_req, res) => { res.writeHead(200); res.write('slow'); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ups = createUpstreams();
    ups.update([makeCluster('c', [(server.address() as AddressInfo).port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', route: () => ({ timeoutMs: 100 }) });
    closers.push(() => ups.close(), () => ds.close(), () => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    await assert.rejects(get(ds.url));
    const res = await ds.nextResult();
    assert.equal(res.status, 200);
    assert.deepEqual(res.flags, ['UT']);
  });
});

describe('connection pool limits and the downstream going away', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('requests beyond maxConnections + maxPendingRequests overflow with 503 UO', async () => {
    const echo = await startEcho();
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port], { connectionPool: { maxConnections: 1, maxPendingRequests: 1, connectTimeoutMs: 1000, maxRequestsPerConnection: 0, idleTimeoutMs: 60_000, http2MaxRequests: 10 } })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const slow = { headers: { 'x-echo-delay-ms': '150' } };
    const results = await Promise.all([get(ds.url, slow), get(ds.url, slow), get(ds.url, slow)]);
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 503]);
    const overflow = results.find((r) => r.status === 503)!;
    assert.equal(overflow.body, 'upstream connect error or disconnect/reset before headers. reset reason: overflow');
    const flags = [await ds.nextResult(), await ds.nextResult(), await ds.nextResult()].map((r) => r.flags.join());
    assert.ok(flags.includes('UO'));
  });

  test('a client that goes away aborts the upstream request (DC)', async () => {
    let upstreamClosed = false;
    const server = http.createServer((req, res) => { res.on('close', () => { upstreamClosed = true; }); void req; });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ups = createUpstreams();
    ups.update([makeCluster('c', [(server.address() as AddressInfo).port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => ups.close(), () => ds.close(), () => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    const req = http.request(ds.url, { agent: false });
    req.on('error', () => {});
    req.end();
    await new Promise((r) => setTimeout(r, 80));
    req.destroy();
    const res = await ds.nextResult();
    assert.deepEqual(res.flags, ['DC']);
    assert.equal(res.status, 0);
    for (let i = 0; i < 50 && !upstreamClosed; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(upstreamClosed, 'the upstream saw its request cut');
  });
});
