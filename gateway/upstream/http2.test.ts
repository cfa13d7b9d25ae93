// HTTP/2 upstreams: h2c, session reuse and reconnect after GOAWAY, and gRPC end to end
// (grpc-js client → h2c gateway → forward → grpc-js server), trailers included.
import { test, describe, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { createUpstreams } from './index.ts';
import type { Upstreams } from './types.ts';
import { startEcho, freePort } from '../../test/helpers/upstream.ts';
import type { EchoReply } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';
import type { Downstream } from '../../test/helpers/downstream.ts';

function h2get(url: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url);
    s.on('error', reject);
    const req = s.request({ ':path': path, ...headers });
    let status = 0;
    let hdrs: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => { status = Number(h[':status']); hdrs = h; });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { s.close(); resolve({ status, headers: hdrs, body: Buffer.concat(chunks).toString() }); });
    req.on('error', reject);
    req.end();
  });
}

describe('h2c upstreams', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('HTTP/1.1 client → HTTP/2 upstream: request and response translated', async () => {
    const echo = await startEcho({ protocol: 'h2c' });
    const ups = createUpstreams();
    ups.update([makeCluster('c', [echo.port], { protocol: 'http2' })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', bufferBody: true });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());
    const r = await get(`${ds.url}/h2?x=1`, { method: 'POST', headers: { host: 'api.example.com', 'x-echo-status': '202' }, body: 'body!' });
    assert.equal(r.status, 202);
    const got = JSON.parse(r.body) as EchoReply;
    assert.equal(got.httpVersion, '2.0');
    assert.equal(got.authority, 'api.example.com');
    assert.equal(got.path, '/h2?x=1');
    assert.equal(got.body, 'body!');
    assert.equal(got.headers['content-length'], '5');
  });

  test('one session carries many requests; a GOAWAY makes the next request reconnect', async () => {
    let sessions = 0;
    let served = 0;
    const server = http2.createServer();
    server.on('session', () => { sessions++; });
    server.on('stream', (stream) => {
      served++;
      stream.respond({ ':status': 200 });
      stream.end(`n${served}`);
      // After the third request, this server tells the client to go away.
      const session = stream.session!;
      if (served === 3) stream.on('close', () => session.close());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ups = createUpstreams();
    ups.update([makeCluster('c', [(server.address() as AddressInfo).port], { protocol: 'http2' })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => ups.close(), () => ds.close(), () => new Promise((r) => server.close(r)));
    for (let i = 1; i <= 3; i++) assert.equal((await get(ds.url)).body, `n${i}`);
    assert.equal(sessions, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await get(ds.url)).body, 'n4');
    assert.equal(sessions, 2);
  });

  test('h2c upstream that is down: 503 connection failure', async () => {
    const ups = createUpstreams();
    ups.update([makeCluster('c', [await freePort()], { protocol: 'http2' })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', protocol: 'h2c' });
    closers.push(() => ups.close(), () => ds.close());
    const r = await h2get(ds.url, '/');
    assert.equal(r.status, 503);
    assert.equal(r.body, 'upstream connect error or disconnect/reset before headers. reset reason: connection failure');
  });
});

// ---------------------------------------------------------------- gRPC

const raw = <T>(path: string, requestStream: boolean, responseStream: boolean) => ({
  path, requestStream, responseStream,
  requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b,
}) as unknown as grpc.MethodDefinition<T, T>;

const service = {
  unary: raw<Buffer>('/test.Echo/Unary', false, false),
  serverStream: raw<Buffer>('/test.Echo/ServerStream', false, true),
  bidi: raw<Buffer>('/test.Echo/Bidi', true, true),
  fail: raw<Buffer>('/test.Echo/Fail', false, false),
  slow: raw<Buffer>('/test.Echo/Slow', false, false),
};

describe('gRPC through forward', () => {
  let server: grpc.Server;
  let ups: Upstreams;
  let ds: Downstream;
  let client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  let failCalls = 0;

  before(async () => {
    server = new grpc.Server();
    server.addService(service as unknown as grpc.ServiceDefinition, {
      unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const trailer = new grpc.Metadata();
        trailer.set('x-trailer', 'unary-done');
        cb(null, Buffer.concat([Buffer.from('echo:'), call.request]), trailer);
      },
      serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const n = Number(call.request.toString());
        for (let i = 0; i < n; i++) call.write(Buffer.from(`msg${i}`));
        const trailer = new grpc.Metadata();
        trailer.set('x-count', String(n));
        call.end(trailer);
      },
      bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on('data', (m: Buffer) => call.write(Buffer.concat([Buffer.from('re:'), m])));
        call.on('end', () => call.end());
      },
      slow: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        setTimeout(() => cb(null, Buffer.from('late')), 500).unref();
      },
      fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        failCalls++;
        cb({ code: grpc.status.UNAVAILABLE, details: 'try later' } as grpc.ServiceError, null);
      },
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => e ? reject(e) : resolve(p)));
    ups = createUpstreams();
    ups.update([
      makeCluster('grpc', [port], { protocol: 'http2' }),
      makeCluster('nowhere', [], { protocol: 'http2' }),
    ]);
    ds = await startDownstream({
      upstreams: ups,
      protocol: 'h2c',
      cluster: (req) => (req.headers['x-cluster'] ? String(req.headers['x-cluster']) : 'grpc'),
      // As the downstream half does for routes that retry: the body is read first, so it can be resent.
      bufferBody: (req) => req.url === '/test.Echo/Fail',
      route: (req) => (req.url === '/test.Echo/Fail'
        ? { retries: { attempts: 2, perTryTimeoutMs: null, retryOn: ['unavailable'], retriableStatusCodes: [] } }
        : req.url === '/test.Echo/Slow' ? { timeoutMs: 100 } : {}),
    });
    const Ctor = grpc.makeGenericClientConstructor(service as unknown as grpc.ServiceDefinition, 'Echo');
    client = new Ctor(`127.0.0.1:${ds.port}`, grpc.credentials.createInsecure()) as typeof client;
  });

  after(async () => {
    client.close();
    await ds.close();
    await ups.close();
    server.forceShutdown();
  });

  test('unary call with trailing metadata', async () => {
    let trailer: grpc.Metadata | null = null;
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = client.unary(Buffer.from('hi'), (err: Error | null, res: Buffer) => (err ? reject(err) : resolve(res))) as grpc.ClientUnaryCall;
      call.on('status', (s: grpc.StatusObject) => { trailer = s.metadata; });
    });
    assert.equal(reply.toString(), 'echo:hi');
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(trailer!.get('x-trailer'), ['unary-done']);
  });

  test('server streaming delivers every message, then the trailers', async () => {
    const call = client.serverStream(Buffer.from('5')) as grpc.ClientReadableStream<Buffer>;
    const got: string[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve, reject) => {
      call.on('data', (m: Buffer) => got.push(m.toString()));
      call.on('status', resolve);
      call.on('error', reject);
    });
    assert.deepEqual(got, ['msg0', 'msg1', 'msg2', 'msg3', 'msg4']);
    assert.equal(status.code, grpc.status.OK);
    assert.deepEqual(status.metadata.get('x-count'), ['5']);
  });

  test('bidirectional streaming: replies arrive while the client is still sending', async () => {
    const call = client.bidi() as grpc.ClientDuplexStream<Buffer, Buffer>;
    const first = new Promise<string>((resolve) => call.once('data', (m: Buffer) => resolve(m.toString())));
    call.write(Buffer.from('one'));
    assert.equal(await first, 're:one', 'the first reply came back before the request stream ended');
    const rest: string[] = [];
    call.on('data', (m: Buffer) => rest.push(m.toString()));
    call.write(Buffer.from('two'));
    call.end();
    await new Promise((resolve) => call.on('status', resolve));
    assert.deepEqual(rest, ['re:two']);
  });

  test('an error status from the upstream is passed through; unavailable is retried per policy', async () => {
    const before = failCalls;
    const err = await new Promise<grpc.ServiceError>((resolve) => client.fail(Buffer.from('x'), (e: grpc.ServiceError) => resolve(e)));
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.equal(err.details, 'try later');
    assert.equal(failCalls - before, 3, 'first try and two retries (trailers-only responses are retriable)');
  });

  test('route timeout: DEADLINE_EXCEEDED as a gRPC status', async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) => client.slow(Buffer.from('x'), (e: grpc.ServiceError) => resolve(e)));
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(err.details, 'upstream request timeout');
  });

  test('no upstream: a trailers-only UNAVAILABLE, not an HTTP error', async () => {
    const md = new grpc.Metadata();
    md.set('x-cluster', 'nowhere');
    const err = await new Promise<grpc.ServiceError>((resolve) => client.unary(Buffer.from('x'), md, (e: grpc.ServiceError) => resolve(e)));
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.equal(err.details, 'no healthy upstream');
  });
});
