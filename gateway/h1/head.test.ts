// The fast path's request-head parser: what it accepts, what it leaves to node, and that a
// head split anywhere across reads is only ever "incomplete" until it is whole.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { BODY_CHUNKED, BODY_LENGTH, BODY_NONE, FALLBACK, INCOMPLETE, MAX_HEAD_BYTES, parseRequestHead, type RequestHead } from './head.ts';

function parse(s: string): RequestHead | typeof INCOMPLETE | typeof FALLBACK {
  const b = Buffer.from(s, 'latin1');
  return parseRequestHead(b, 0, b.length);
}

describe('request head parser', () => {
  const good = 'POST /a/b?c=d HTTP/1.1\r\nHost: svc.example:8080\r\nContent-Length: 12\r\nX-Tab:\tv \t\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n';

  test('a whole head: method, target, framing, trimmed values, length', () => {
    const h = parse(good + 'body follows') as RequestHead;
    assert.equal(h.method, 'POST');
    assert.equal(h.url, '/a/b?c=d');
    assert.equal(h.bodyKind, BODY_LENGTH);
    assert.equal(h.contentLength, 12);
    assert.equal(h.headers['x-tab'], 'v');
    assert.equal(h.headers.cookie, 'a=1; b=2');
    assert.equal(h.length, good.length);
    assert.deepEqual(h.rawHeaders.slice(0, 2), ['Host', 'svc.example:8080']);
    assert.equal((parse('GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n') as RequestHead).bodyKind, BODY_CHUNKED);
    assert.equal((parse('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n') as RequestHead).bodyKind, BODY_NONE);
    assert.equal((parse('GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n') as RequestHead).close, true);
  });

  test('every proper prefix of a valid head is INCOMPLETE, never a head or a fallback', () => {
    for (let n = 0; n < good.length; n++) assert.equal(parse(good.slice(0, n)), INCOMPLETE, JSON.stringify(good.slice(0, n)));
  });

  test('a head in a large buffer (body or pipelined requests behind it) parses the same, at any offset', () => {
    const big = Buffer.from(good + 'x'.repeat(20_000) + good, 'latin1');
    const h = parseRequestHead(big, 0, big.length) as RequestHead;
    assert.equal(h.length, good.length);
    assert.equal(h.headers.cookie, 'a=1; b=2');
    const second = parseRequestHead(big, big.length - good.length, big.length) as RequestHead;
    assert.equal(second.url, '/a/b?c=d');
    assert.equal(second.length, good.length);
    // A head longer than one read's worth, with other methods and mixed-case names.
    const many = `PATCH /p HTTP/1.1\r\nhOsT: x\r\n${Array.from({ length: 400 }, (_, i) => `X-H${i}: ${'v'.repeat(30)}\r\n`).join('')}\r\n`;
    const m = parse(many + 'rest') as RequestHead;
    assert.equal(m.method, 'PATCH');
    assert.equal(m.headers.host, 'x');
    assert.equal(m.headers['x-h399'], 'v'.repeat(30));
    assert.equal(m.length, many.length);
    assert.equal(parse(many.slice(0, -2)), INCOMPLETE);
    assert.equal(parse('GETX / HTTP/1.1\r\nHost: x\r\n\r\n'), FALLBACK);
    assert.equal(parse('PUTS / HTTP/1.1\r\nHost: x\r\n\r\n'), FALLBACK);
  });

  test('anything outside the boring subset is left to node', () => {
    const cases = [
      'get / HTTP/1.1\r\nHost: x\r\n\r\n',
      'CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET * HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET / HTTP/1.0\r\nHost: x\r\n\r\n',
      'GET / HTTP/1.1\nHost: x\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX Y: a\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nX: caf\xe9\r\n\r\n',
      'GET / HTTP/1.1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n',
      'GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /a b HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nConstructor: 1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\n__proto__: 1\r\n\r\n',
    ];
    for (const c of cases) assert.equal(parse(c), FALLBACK, JSON.stringify(c));
    assert.equal(parse(`GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}`), FALLBACK, 'over the limit without an end');
  });

  test('the headers object follows node\'s join rules for repeated headers', async () => {
    const head = 'GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\nUser-Agent: one\r\nUser-Agent: two\r\nCookie: c=1\r\nCookie: d=2\r\n'
      + 'Set-Cookie: s=1\r\nSet-Cookie: s=2\r\nX-Custom: 1\r\nx-custom: 2\r\nAuthorization: first\r\nAuthorization: second\r\nConnection: close\r\n\r\n';
    const server = http.createServer((req, res) => { res.end(JSON.stringify({ headers: req.headers, distinct: req.headersDistinct })); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(head));
      let out = '';
      s.on('data', (d) => { out += d.toString(); });
      s.on('end', () => resolve(out));
      s.on('error', reject);
    });
    server.close();
    const nodeSaw = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as { headers: unknown };
    const ours = parse(head) as RequestHead;
    assert.deepEqual(ours.headers, nodeSaw.headers);
  });
});
