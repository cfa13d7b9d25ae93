// WebSocket (HTTP/1.1 Upgrade) tunnels through upgrade(): the ws client against the echo
// WebSocket upstream; refusals relayed; no bytes smuggled past a refused upgrade.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { createUpstreams } from './index.ts';
import { startEcho, freePort } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream } from '../../test/helpers/downstream.ts';

function nextMessage(ws: WebSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once('message', (m) => resolve(m.toString()));
    ws.once('error', reject);
  });
}

describe('WebSocket through upgrade', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('messages flow both ways; closing the client ends the tunnel', async () => {
    const echo = await startEcho({ name: 'ws', websocket: true });
    const ups = createUpstreams();
    ups.update([makeCluster('ws', [echo.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'ws' });
    closers.push(() => echo.close(), () => ups.close(), () => ds.close());

    const ws = new WebSocket(`ws://127.0.0.1:${ds.port}/chat?room=1`);
    const hello = nextMessage(ws);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    assert.equal(await hello, 'ws connected /chat?room=1');
    for (const text of ['one', 'two']) {
      const reply = nextMessage(ws);
      ws.send(text);
      assert.equal(await reply, `ws: ${text}`);
    }
    const binary = new Promise<Buffer>((resolve) => ws.once('message', (m) => resolve(m as Buffer)));
    ws.send(Buffer.from([0, 1, 2, 255]));
    assert.deepEqual([...await binary], [0, 1, 2, 255]);
    ws.close();
    const res = await ds.nextResult();
    assert.equal(res.status, 101);
    assert.equal(res.upstreamHost, `127.0.0.1:${echo.port}`);
    assert.ok(res.bytesSent > 0);
  });

  test('an upstream that refuses the upgrade: its answer is relayed and later client bytes never reach it', async () => {
    const receivedAfter: Buffer[] = [];
    const server = http.createServer((_req, res) => res.end('plain'));
    const upgraded = new Set<net.Socket>();
    server.on('upgrade', (_req, socket: net.Socket) => {
      upgraded.add(socket);
      socket.on('data', (d: Buffer) => receivedAfter.push(d));
      socket.write('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nnope!');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ups = createUpstreams();
    ups.update([makeCluster('ws', [(server.address() as AddressInfo).port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'ws' });
    // Upgraded sockets are no longer the HTTP server's to close.
    closers.push(() => ups.close(), () => ds.close(), () => new Promise((r) => { for (const s of upgraded) s.destroy(); server.close(r); }));

    const sock = net.connect(ds.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    const closed = new Promise((r) => sock.on('close', r));
    sock.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n');
    await closed;
    const text = Buffer.concat(chunks).toString();
    assert.match(text, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.match(text, /\r\n\r\nnope!$/);
    assert.equal(Buffer.concat(receivedAfter).toString().includes('smuggled'), false);
    assert.equal((await ds.nextResult()).status, 403);
  });

  test('no upstream listening: 503 connection failure on the raw socket', async () => {
    const ups = createUpstreams();
    ups.update([makeCluster('ws', [await freePort()])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'ws' });
    closers.push(() => ups.close(), () => ds.close());
    const ws = new WebSocket(`ws://127.0.0.1:${ds.port}/`);
    ws.on('error', () => {});
    const status = await new Promise<number>((resolve) => ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); res.resume(); }));
    ws.terminate();
    assert.equal(status, 503);
    assert.deepEqual((await ds.nextResult()).flags, ['UF']);
  });
});
