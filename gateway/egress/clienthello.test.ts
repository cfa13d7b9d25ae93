// The ClientHello reader against real handshakes (captured from node's tls.connect) and
// against what a hostile or broken client may send instead.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { parseClientHello, type HelloResult } from './clienthello.ts';

/** The first bytes node's TLS client sends for these options (the handshake is then cut). */
function captureHello(opts: tls.ConnectionOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        // Enough once the record (header + length) is all here.
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          sock.destroy();
          server.close();
          resolve(buf);
        }
      });
      sock.on('error', () => {});
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      const c = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
      c.on('error', () => {});
      setTimeout(() => { server.close(); reject(new Error('no ClientHello captured')); }, 5000).unref();
    });
  });
}

function sniOf(r: HelloResult): string | null | undefined {
  return r.kind === 'tls' ? r.sni : undefined;
}

/** Splits one handshake record into two records carrying its halves. */
function splitRecord(rec: Buffer, at: number): Buffer {
  const body = rec.subarray(5);
  const a = body.subarray(0, at);
  const b = body.subarray(at);
  const h = (len: number) => Buffer.from([0x16, rec[1], rec[2], len >> 8, len & 0xff]);
  return Buffer.concat([h(a.length), a, h(b.length), b]);
}

/** Offset of the server_name extension's type field inside a captured record, or -1. */
function sniExtensionOffset(rec: Buffer): number {
  let p = 5 + 4 + 34;
  p += 1 + rec[p];
  p += 2 + rec.readUInt16BE(p);
  p += 1 + rec[p];
  const end = p + 2 + rec.readUInt16BE(p);
  p += 2;
  while (p < end) {
    if (rec.readUInt16BE(p) === 0) return p;
    p += 4 + rec.readUInt16BE(p + 2);
  }
  return -1;
}

describe('ClientHello SNI', () => {
  let withSni: Buffer;
  let noSni: Buffer;
  let tls12: Buffer;
  before(async () => {
    withSni = await captureHello({ servername: 'Api.Example.com' });
    // An IP literal as host: node sends no server_name.
    noSni = await captureHello({});
    tls12 = await captureHello({ servername: 'old.example.org', maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
  });

  test('a real ClientHello yields its server name, lower-cased', () => {
    assert.deepEqual(parseClientHello(withSni), { kind: 'tls', sni: 'api.example.com', malformed: false });
    assert.equal(sniOf(parseClientHello(tls12)), 'old.example.org');
  });

  test('a ClientHello without server_name is TLS with no SNI (not malformed)', () => {
    assert.deepEqual(parseClientHello(noSni), { kind: 'tls', sni: null, malformed: false });
  });

  test('every truncation of a real ClientHello asks for more bytes and never throws', () => {
    for (let n = 1; n < withSni.length; n++) {
      assert.deepEqual(parseClientHello(withSni.subarray(0, n)), { kind: 'incomplete' }, `prefix of ${n} bytes`);
    }
    assert.deepEqual(parseClientHello(Buffer.alloc(0)), { kind: 'incomplete' });
  });

  test('a ClientHello split over two records is reassembled', () => {
    for (const at of [1, 3, 4, 40, withSni.length - 6]) {
      assert.equal(sniOf(parseClientHello(splitRecord(withSni, at))), 'api.example.com', `split at ${at}`);
    }
  });

  test('bytes that do not start a TLS handshake are not TLS', () => {
    assert.deepEqual(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n')), { kind: 'not-tls' });
    assert.deepEqual(parseClientHello(Buffer.from('SSH-2.0-OpenSSH_9.6\r\n')), { kind: 'not-tls' });
    assert.deepEqual(parseClientHello(Buffer.from([0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5])), { kind: 'not-tls' });
  });

  test('handshake records that cannot be a ClientHello are refused, not guessed', () => {
    // SSL 3.0 record version
    const ssl3 = Buffer.from(withSni);
    ssl3[2] = 0;
    assert.equal(parseClientHello(ssl3).kind, 'bad-tls');
    // ServerHello (type 2) where a ClientHello must be
    const serverHello = Buffer.from(withSni);
    serverHello[5] = 2;
    assert.equal(parseClientHello(serverHello).kind, 'bad-tls');
    // A handshake length beyond 16 KiB
    const huge = Buffer.from(withSni);
    huge[6] = 0x7f;
    assert.equal(parseClientHello(huge).kind, 'bad-tls');
    // Zero-length record
    assert.equal(parseClientHello(Buffer.from([0x16, 3, 1, 0, 0])).kind, 'bad-tls');
  });

  test('inconsistent lengths inside the hello read as malformed (no SNI), never past the buffer', () => {
    const off = sniExtensionOffset(withSni);
    assert.ok(off > 0);
    // server_name extension claims more bytes than the extensions block holds
    const overrun = Buffer.from(withSni);
    overrun.writeUInt16BE(0xfff0, off + 2);
    assert.deepEqual(parseClientHello(overrun), { kind: 'tls', sni: null, malformed: true });
    // name length larger than its list
    const badName = Buffer.from(withSni);
    badName.writeUInt16BE(200, off + 4 + 3);
    assert.deepEqual(parseClientHello(badName), { kind: 'tls', sni: null, malformed: true });
    // a NUL inside the name
    const nul = Buffer.from(withSni);
    nul[off + 4 + 5 + 3] = 0;
    assert.deepEqual(parseClientHello(nul), { kind: 'tls', sni: null, malformed: true });
    // session id longer than 32
    const sid = Buffer.from(withSni);
    sid[5 + 4 + 34] = 33;
    assert.deepEqual(parseClientHello(sid), { kind: 'tls', sni: null, malformed: true });
  });

  test('a second server_name extension makes the hello malformed (no name is believed)', () => {
    const off = sniExtensionOffset(withSni);
    const extLen = withSni.readUInt16BE(off + 2);
    const ext = withSni.subarray(off, off + 4 + extLen);
    // Append a copy of the extension (naming another host) and fix up every length.
    const evil = Buffer.from(ext);
    evil.write('x', 4 + 5, 'latin1');
    const body = Buffer.concat([withSni.subarray(5), evil]);
    const rec = Buffer.concat([Buffer.from([0x16, withSni[1], withSni[2], body.length >> 8, body.length & 0xff]), body]);
    const hsLen = body.length - 4;
    rec[6] = hsLen >> 16; rec[7] = (hsLen >> 8) & 0xff; rec[8] = hsLen & 0xff;
    let p = 5 + 4 + 34;
    p += 1 + rec[p];
    p += 2 + rec.readUInt16BE(p);
    p += 1 + rec[p];
    rec.writeUInt16BE(rec.readUInt16BE(p) + evil.length, p);
    assert.deepEqual(parseClientHello(rec), { kind: 'tls', sni: null, malformed: true });
  });

  test('random garbage after a handshake header never throws', () => {
    let seed = 42;
    const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed & 0xff; };
    for (let i = 0; i < 500; i++) {
      const len = 5 + (i % 300);
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = rnd();
      b[0] = 0x16; b[1] = 3; b[2] = 1 + (i % 3);
      b.writeUInt16BE(len - 5, 3);
      b[5] = 1;
      const r = parseClientHello(b);
      assert.ok(['incomplete', 'tls', 'bad-tls'].includes(r.kind));
      if (r.kind === 'tls' && r.sni !== null) assert.match(r.sni, /^[a-z0-9._-]+$/);
    }
  });
});
