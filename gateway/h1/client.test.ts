// The fast path's upstream client (client.ts) on the wire: real upstream sockets on
// loopback that answer with exactly the bytes a test scripts, behind the real Upstreams
// (forward.ts: retries, flags, local replies) and a real downstream server.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { createUpstreams } from '../upstream/index.ts';
import type { Upstreams } from '../upstream/types.ts';
import { freePort } from '../../test/helpers/upstream.ts';
import { get, makeCluster, startDownstream, type Downstream } from '../../test/helpers/downstream.ts';
import { h1Stats } from './enabled.ts';

interface Scripted {
  port: number;
  /** Connections accepted so far. */
  connections: number;
  /** Most connections open at once. */
  maxOpen: number;
  /** Request heads received, in order. */
  heads: string[];
  close(): Promise<void>;
}

/**
 * A raw HTTP/1.1 upstream: for each request head (and its Content-Length body) it calls
 * `answer`, which writes whatever bytes it likes to the socket.
 */
async function scripted(answer: (head: string, sock: net.Socket) => void): Promise<Scripted> {
  const sockets = new Set<net.Socket>();
  const s: Scripted = { port: 0, connections: 0, maxOpen: 0, heads: [], close: async () => {} };
  const server = net.createServer((sock) => {
    s.connections++;
    sockets.add(sock);
    s.maxOpen = Math.max(s.maxOpen, sockets.size);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        const cl = /\r\ncontent-length: (\d+)/i.exec(head);
        const need = end + 4 + (cl ? Number(cl[1]) : 0);
        if (buf.length < need) return;
        buf = buf.slice(need);
        s.heads.push(head);
        answer(head, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  s.port = (server.address() as net.AddressInfo).port;
  s.close = () => new Promise<void>((r) => { for (const x of sockets) x.destroy(); server.close(() => r()); });
  return s;
}

describe('fast path upstream client', () => {
  const saved = process.env.MESHGATE_H1_FASTPATH;
  const closers: (() => Promise<unknown>)[] = [];
  before(() => { process.env.MESHGATE_H1_FASTPATH = '1'; });
  after(async () => {
    for (const c of closers.reverse()) await c();
    if (saved === undefined) delete process.env.MESHGATE_H1_FASTPATH; else process.env.MESHGATE_H1_FASTPATH = saved;
  });

  async function through(up: Scripted, over: Parameters<typeof makeCluster>[2] = {}, route?: Parameters<typeof startDownstream>[0]['route']): Promise<{ ups: Upstreams; ds: Downstream }> {
    const ups = createUpstreams();
    ups.update([makeCluster('c', [up.port], over)]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c', ...(route ? { route } : {}) });
    closers.push(() => up.close(), () => ups.close(), () => ds.close());
    return { ups, ds };
  }

  test('Content-Length, chunked (with trailers) and close-delimited response bodies arrive whole', async () => {
    const up = await scripted((head, sock) => {
      if (head.startsWith('GET /cl ')) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello');
      else if (head.startsWith('GET /chunked ')) sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n');
      else sock.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the upstream closes');
    });
    const before0 = h1Stats.upstreamRequests;
    const { ds } = await through(up);
    const cl = await get(`${ds.url}/cl`);
    assert.equal(cl.body, 'hello');
    assert.equal(cl.headers['x-a'], '1, 2', 'a repeated header keeps both values');
    const ch = await get(`${ds.url}/chunked`);
    assert.equal(ch.body, 'abcdefg');
    assert.equal(ch.trailers['x-sum'], '7');
    const close = await get(`${ds.url}/close`);
    assert.equal(close.body, 'until the upstream closes');
    assert.equal(h1Stats.upstreamRequests - before0, 3, 'the fast client sent them');
    // The first two shared one keep-alive connection; the close-delimited one ended it.
    assert.equal(up.connections, 1);
    assert.equal((await get(`${ds.url}/cl`)).body, 'hello');
    assert.equal(up.connections, 2);
  });

  test('request framing as undici writes it: Host first, Content-Length only when there is a body or one is expected', async () => {
    const up = await scripted((_head, sock) => sock.write('HTTP/1.1 204 No Content\r\n\r\n'));
    const { ds } = await through(up);
    await get(`${ds.url}/g`, { headers: { host: 'svc.example' } });
    await get(`${ds.url}/p`, { method: 'POST', headers: { host: 'svc.example', 'content-length': '0' } });
    await get(`${ds.url}/p`, { method: 'POST', headers: { host: 'svc.example', 'content-length': '3' }, body: 'abc' });
    const [g, p0, p3] = up.heads;
    assert.match(g, /^GET \/g HTTP\/1\.1\r\nhost: svc\.example\r\nconnection: keep-alive(\r\n|$)/);
    assert.doesNotMatch(g, /content-length|transfer-encoding/i);
    assert.match(p0, /\r\ncontent-length: 0$/);
    assert.match(p3, /\r\ncontent-length: 3$/);
    assert.equal(up.connections, 1, 'a 204 without a body leaves the connection reusable');
  });

  test('hop-by-hop, host, expect and content-length headers in the upstream request are never copied onto the wire', async () => {
    const up = await scripted((_head, sock) => sock.write('HTTP/1.1 204 No Content\r\n\r\n'));
    const { ds } = await through(up, {}, () => ({
      authority: 'svc.example',
      headers: {
        connection: 'x-secret', 'keep-alive': 'timeout=5', 'proxy-connection': 'keep-alive', 'transfer-encoding': 'gzip',
        upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQAAP__', host: 'other.example', expect: '100-continue',
        'content-length': '99', te: 'gzip', 'x-kept': 'yes',
      },
    }));
    assert.equal((await get(`${ds.url}/h`)).status, 204);
    const lines = up.heads[0].split('\r\n');
    assert.deepEqual(lines, ['GET /h HTTP/1.1', 'host: svc.example', 'connection: keep-alive', 'x-kept: yes']);
  });

  test('a response head split across reads and a large body written in pieces arrive byte for byte; UTF-8 header values too', async () => {
    // Every read lands in one shared buffer (onread): what outlives a read must be a copy.
    const body = Buffer.alloc(2_000_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 10)) & 0xff;
    const up = await scripted((head, sock) => {
      const parts = [
        Buffer.from('HTTP/1.1 200 OK\r\nContent-Le', 'latin1'),
        Buffer.concat([Buffer.from(`ngth: ${body.length}\r\nX-Name: Zoë\r\n\r\n`, 'utf8'), body.subarray(0, 1000)]),
        body.subarray(1000, 150_000),
        body.subarray(150_000),
      ];
      const send = (i: number) => { if (i < parts.length) sock.write(parts[i], () => setTimeout(send, 5, i + 1)); };
      if (head.startsWith('GET ')) send(0);
    });
    const { ds } = await through(up);
    const got = await new Promise<{ headers: Record<string, unknown>; data: Buffer }>((resolve, reject) => {
      http.get(`${ds.url}/big`, { agent: false }, (res) => {
        const chunks: Buffer[] = [];
        // A slow reader at first: the proxy's writes queue up while later reads arrive.
        res.pause();
        setTimeout(() => res.resume(), 100);
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ headers: res.headers, data: Buffer.concat(chunks) }));
      }).on('error', reject);
    });
    assert.equal(got.data.length, body.length);
    assert.ok(got.data.equals(body), 'the body is intact');
    // UTF-8 from the upstream leaves as the same bytes (node's client reads them as latin-1).
    assert.equal(got.headers['x-name'], Buffer.from('Zoë', 'utf8').toString('latin1'));
  });

  test('interim 100 Continue is skipped; Connection: close from the upstream is honoured', async () => {
    const up = await scripted((_head, sock) => sock.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok'));
    const { ds } = await through(up);
    assert.equal((await get(`${ds.url}/a`)).body, 'ok');
    assert.equal((await get(`${ds.url}/b`)).body, 'ok');
    assert.equal(up.connections, 2);
  });

  test('an upstream that cuts the response: 503 before the head (UC), a reset client after it', async () => {
    const up = await scripted((head, sock) => {
      if (head.startsWith('GET /before ')) sock.destroy();
      else { sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial'); setTimeout(() => sock.destroy(), 20); }
    });
    const { ds } = await through(up);
    const r = await get(`${ds.url}/before`);
    assert.equal(r.status, 503);
    assert.equal(r.body, 'upstream connect error or disconnect/reset before headers. reset reason: connection termination');
    assert.deepEqual((await ds.nextResult()).flags, ['UC']);
    await assert.rejects(get(`${ds.url}/after`));
    assert.deepEqual((await ds.nextResult()).flags, ['UC']);
  });

  test('a malformed response head is a reset, and a retry policy retries it', async () => {
    let n = 0;
    const up = await scripted((_head, sock) => {
      if (n++ === 0) sock.write('HTTP/1.1 2x0 What\r\n\r\n');
      else sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const { ds } = await through(up, {}, () => ({ retries: { attempts: 1, perTryTimeoutMs: null, retryOn: ['reset'], retriableStatusCodes: [] } }));
    const r = await get(`${ds.url}/x`);
    assert.equal(r.body, 'ok');
    assert.equal((await ds.nextResult()).attempts, 2);
  });

  test('nothing listening: connection failure (UF), and connect-failure retries reach the next endpoint', async () => {
    const dead = await freePort();
    const live = await scripted((_h, sock) => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlive'));
    const ups = createUpstreams();
    ups.update([makeCluster('dead', [dead]), makeCluster('both', [dead, live.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: (req) => (req.url!.startsWith('/dead') ? 'dead' : 'both'), route: () => ({ retries: { attempts: 2, perTryTimeoutMs: null, retryOn: ['connect-failure'], retriableStatusCodes: [] } }) });
    closers.push(() => live.close(), () => ups.close(), () => ds.close());
    const r = await get(`${ds.url}/dead`);
    assert.equal(r.status, 503);
    assert.match(r.body, /reset reason: connection failure$/);
    const res = await ds.nextResult();
    assert.ok(res.flags.includes('UF'));
    for (let i = 0; i < 4; i++) {
      assert.equal((await get(`${ds.url}/both/${i}`)).body, 'live');
      await ds.nextResult();
    }
  });

  test('connectionPool.maxConnections caps concurrent upstream connections; the rest wait their turn', async () => {
    const up = await scripted((_h, sock) => setTimeout(() => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 30));
    const { DEFAULT_CONNECTION_POOL } = await import('../../api/proxyconfig.ts');
    const { ds } = await through(up, { connectionPool: { ...DEFAULT_CONNECTION_POOL, maxConnections: 2 } });
    const all = await Promise.all(Array.from({ length: 6 }, (_, i) => get(`${ds.url}/${i}`)));
    assert.deepEqual(all.map((r) => r.body), Array(6).fill('ok'));
    assert.equal(up.maxOpen, 2);
    assert.equal(up.connections, 2);
  });
});
