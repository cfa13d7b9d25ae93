// The fast path's inactivity rule, on real sockets: a connection with no read and no write
// for keepAliveMs is closed (a partial head first gets 408), counted by one sweep for all
// connections. A short keepAliveMs stands in for the listeners' 60 s.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { FastConnection, type FastPort } from './conn.ts';

const KEEP_ALIVE_MS = 1200;

describe('HTTP/1.1 fast path: inactivity', () => {
  let server: net.Server;
  let port = 0;
  before(async () => {
    // No request completes in these tests: the runtime is never reached.
    const fastPort: FastPort = { runtime: null as never, fallback: (s) => s.destroy(), keepAliveMs: KEEP_ALIVE_MS, keepAliveHeader: '' };
    server = net.createServer((sock) => { new FastConnection(sock, fastPort); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
  });
  after(() => { server.close(); });

  /** Connects, runs `talk`, and reports what the server sent and when it closed (ms from connect). */
  function session(talk: (sock: net.Socket) => void): Promise<{ got: string; closedAfterMs: number }> {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      const sock = net.connect(port, '127.0.0.1', () => talk(sock));
      let got = '';
      sock.setEncoding('latin1');
      sock.on('data', (d: string) => { got += d; });
      sock.on('close', () => resolve({ got, closedAfterMs: Date.now() - t0 }));
      sock.on('error', reject);
      setTimeout(() => { sock.destroy(); reject(new Error('the server never closed the connection')); }, 10_000).unref();
    });
  }

  test('a connection that sends nothing is closed once it has been quiet that long, without a word', async () => {
    const r = await session(() => {});
    assert.equal(r.got, '');
    assert.ok(r.closedAfterMs >= KEEP_ALIVE_MS - 50, `closed after ${r.closedAfterMs} ms`);
  });

  test('a partial head that stops arriving gets 408 and the connection closes', async () => {
    const r = await session((sock) => sock.write('GET /x HTTP/1.1\r\nHost: svc\r\n'));
    assert.match(r.got, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.match(r.got, /Connection: close/);
  });

  test('a head still arriving (a byte every 300 ms) is not cut while it makes progress', async () => {
    const head = 'GET /slow HTTP/1.1\r\nHost: svc\r\nX-Pad: ' ;
    let i = 0;
    let writer: NodeJS.Timeout | null = null;
    const r = await session((sock) => {
      writer = setInterval(() => {
        if (i < head.length && i < 9) sock.write(head[i++]);
        else { clearInterval(writer!); writer = null; } // then silence
      }, 300);
    });
    // Nine bytes over 2.7 s, longer than the 1.2 s limit, then quiet: 408 only after that.
    assert.match(r.got, /^HTTP\/1\.1 408 /);
    assert.ok(r.closedAfterMs >= 9 * 300 + KEEP_ALIVE_MS - 100, `closed after ${r.closedAfterMs} ms`);
  });
});
