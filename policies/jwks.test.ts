// JWKS parsing, the SSRF address rules, and fetching against a real HTTPS server on loopback.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { parseJwks, fetchJwksText, JwksSource, JwksError, type FetchOptions } from './jwks.ts';
import { privateAddressReason, forbiddenHostReason, publicOnlyLookup, makePublicOnlyLookup } from './ssrf.ts';
import type { LookupFunction } from 'node:net';
import { istioSamples, newSigningKey, jwksOf, startJwksServer, ISTIO_KID, type JwksServer } from '../test/helpers/jwt.ts';

const samples = istioSamples();

describe('parseJwks', () => {
  test('the Istio sample JWKS gives one RSA key under its kid', () => {
    const { keySet, skipped } = parseJwks(samples.jwksJson);
    assert.equal(keySet.keys.length, 1);
    assert.deepEqual([...keySet.byKid.keys()], [ISTIO_KID]);
    assert.ok(keySet.keys[0].algs.has('RS256') && keySet.keys[0].algs.has('PS256'));
    assert.ok(!keySet.keys[0].algs.has('ES256'));
    assert.deepEqual(skipped, []);
  });

  test('EC and Ed25519 keys get exactly their algorithm', async () => {
    const ec = await newSigningKey('ec', 'ES256');
    const ed = await newSigningKey('ed', 'EdDSA');
    const { keySet } = parseJwks(jwksOf(ec, ed));
    assert.deepEqual([...keySet.byKid.get('ec')![0].algs], ['ES256']);
    assert.ok(keySet.byKid.get('ed')![0].algs.has('EdDSA'));
  });

  test('symmetric, encryption, short RSA and broken keys are skipped, with reasons', () => {
    const short = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
    const good = JSON.parse(samples.jwksJson).keys[0];
    const { keySet, skipped } = parseJwks(JSON.stringify({ keys: [
      { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' },
      { ...good, kid: 'enc', use: 'enc' },
      { ...short, kid: 'short' },
      { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA', kid: 'bogus' },
      { ...good, kid: 'wrong-alg', alg: 'HS256' },
      'string',
      good,
    ] }));
    assert.deepEqual([...keySet.byKid.keys()], [ISTIO_KID]);
    assert.equal(skipped.length, 6);
    assert.match(skipped.join('\n'), /oct is not accepted[\s\S]*"enc"[\s\S]*2048[\s\S]*not a valid EC key[\s\S]*HS256[\s\S]*not an object/);
  });

  test('a private JWK yields only its public key', () => {
    const jwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
    const { keySet } = parseJwks(JSON.stringify({ keys: [{ ...jwk, kid: 'p' }] }));
    assert.equal(keySet.keys[0].key.type, 'public');
  });

  test('not JSON, no keys array, no usable key, too many keys: errors that say which', () => {
    assert.throws(() => parseJwks('<html>'), /not valid JSON/);
    assert.throws(() => parseJwks('{"keys": {}}'), /no "keys" array/);
    assert.throws(() => parseJwks('{"keys": [{"kty":"oct","k":"eA"}]}'), JwksError);
    assert.throws(() => parseJwks('{"keys": []}'), /no usable signing key/);
    assert.throws(() => parseJwks(JSON.stringify({ keys: new Array(101).fill({}) })), /101 keys/);
  });
});

describe('SSRF address rules', () => {
  test('private, loopback, link-local, metadata and unspecified addresses are named', () => {
    const cases: [string, RegExp | null][] = [
      ['127.0.0.1', /loopback/], ['127.9.9.9', /loopback/], ['10.1.2.3', /private/], ['172.16.0.1', /private/],
      ['172.31.255.255', /private/], ['192.168.1.1', /private/], ['169.254.169.254', /link-local/],
      ['0.0.0.0', /unspecified/], ['100.64.0.1', /CGNAT/], ['224.0.0.1', /multicast/], ['255.255.255.255', /broadcast|reserved/],
      ['::1', /loopback/], ['::', /unspecified/], ['fe80::1', /link-local/], ['fe80::1%eth0', /link-local/], ['fd00::1', /unique local/],
      ['fd00:ec2::254', /private|metadata/], ['::ffff:127.0.0.1', /loopback/], ['::ffff:7f00:1', /loopback/],
      ['::ffff:169.254.169.254', /link-local/], ['64:ff9b::a9fe:a9fe', /link-local/], ['2002:0a00:0001::', /private/],
      ['8.8.8.8', null], ['172.32.0.1', null], ['1.1.1.1', null], ['2606:4700::1111', null], ['::ffff:8.8.8.8', null],
      ['not-an-ip', /not an IP/],
    ];
    for (const [ip, want] of cases) {
      const got = privateAddressReason(ip);
      if (want === null) assert.equal(got, null, ip);
      else assert.match(got ?? '', want, ip);
    }
  });

  test('metadata and local host names are refused before any lookup', () => {
    for (const h of ['metadata.google.internal', 'METADATA.google.internal.', 'localhost', 'api.localhost', '[::1]', '169.254.169.254']) {
      assert.notEqual(forbiddenHostReason(h), null, h);
    }
    assert.equal(forbiddenHostReason('login.example.com'), null);
  });

  test('a name that resolves to loopback is refused at lookup time (what connect uses)', async () => {
    const err = await new Promise<Error | null>((resolve) => publicOnlyLookup('localhost', { all: true }, (e) => resolve(e)));
    assert.match(String(err), /resolves to .* \(loopback\)/);
  });
});

describe('fetchJwksText', () => {
  let server: JwksServer;
  before(async () => { server = await startJwksServer(samples.jwksJson); });
  after(async () => { await server.close(); });
  const opts = (o: Partial<FetchOptions> = {}): FetchOptions => ({ timeoutMs: 2000, caPem: server.caPem, allowPrivate: true, maxBytes: 1024 * 1024, ...o });

  test('fetches over HTTPS, verified against the given CA', async () => {
    assert.equal(await fetchJwksText(server.url, opts()), samples.jwksJson);
  });

  test('a server the CA did not sign is refused (system CAs do not know the test CA)', async () => {
    await assert.rejects(fetchJwksText(server.url, opts({ caPem: null })), /certificate/i);
  });

  test('responses over the size cap are refused', async () => {
    server.setJwks('x'.repeat(2 * 1024 * 1024));
    try {
      await assert.rejects(fetchJwksText(server.url, opts()), /exceeds 1048576/);
    } finally {
      server.setJwks(samples.jwksJson);
    }
  });

  test('a server that never answers times out', async () => {
    server.setMode('hang');
    try {
      const t0 = Date.now();
      await assert.rejects(fetchJwksText(server.url, opts({ timeoutMs: 150 })), /timed out after 150 ms/);
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      server.setMode('ok');
    }
  });

  test('http, non-URLs, and private targets without the opt-in are refused before connecting', async () => {
    const hits = server.hits();
    await assert.rejects(fetchJwksText(`http://127.0.0.1:${server.port}/jwks.json`, opts({ allowPrivate: false })), /must use https/);
    await assert.rejects(fetchJwksText('not a url', opts()), /not a URL/);
    await assert.rejects(fetchJwksText(server.url, opts({ allowPrivate: false })), /loopback.*allowPrivateJwksUri/);
    await assert.rejects(fetchJwksText('https://[::ffff:169.254.169.254]/', opts({ allowPrivate: false })), /link-local/);
    await assert.rejects(fetchJwksText('https://metadata.google.internal/jwks', opts({ allowPrivate: false })), /metadata/);
    assert.equal(server.hits(), hits);
  });

  test('a public-looking name whose DNS answer is loopback is refused at lookup', async () => {
    const hits = server.hits();
    // A resolver answering 127.0.0.1 for any name, as a rebinding attacker's DNS would.
    const rebinding = ((_h: string, _o: object, cb: (e: null, a: { address: string; family: number }[]) => void) =>
      cb(null, [{ address: '127.0.0.1', family: 4 }])) as never;
    const url = `https://jwks.example.com:${server.port}/jwks.json`;
    await assert.rejects(fetchJwksText(url, opts({ allowPrivate: false, lookup: makePublicOnlyLookup(rebinding) })), /resolves to 127\.0\.0\.1 \(loopback\)/);
    assert.equal(server.hits(), hits);
  });

  test('whatever the lookup said, a connection that lands on loopback is dropped before TLS', async () => {
    const hits = server.hits();
    const lying: LookupFunction = (_h, o, cb) => {
      if (o.all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: '127.0.0.1', family: 4 }]);
      else cb(null, '127.0.0.1', 4);
    };
    const url = `https://jwks.example.com:${server.port}/jwks.json`;
    await assert.rejects(fetchJwksText(url, opts({ allowPrivate: false, lookup: lying })), /connected to 127\.0\.0\.1 \(loopback\)/);
    assert.equal(server.hits(), hits);
  });
});

describe('JwksSource', () => {
  test('a broken response keeps the last good keys; a fixed one clears the error', async () => {
    const server = await startJwksServer(samples.jwksJson);
    const src = new JwksSource({ uri: server.url, inline: null, timeoutMs: 2000, refreshMs: 0, caPem: server.caPem, allowPrivate: true });
    try {
      await src.start();
      const good = src.keys;
      assert.equal(src.status().state, 'ready');
      server.setJwks('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}');
      assert.equal(await src.refresh(), false);
      assert.equal(src.keys, good);
      assert.equal(src.status().state, 'stale');
      assert.match(src.status().lastError ?? '', /no usable signing key/);
      server.setJwks(samples.jwksJson);
      await src.refresh();
      assert.equal(src.status().state, 'ready');
      assert.equal(src.keys, good, 'same text: same key set, caches stay valid');
    } finally {
      src.stop();
      await server.close();
    }
  });

  test('an invalid inline JWKS reports why and holds no keys', () => {
    const src = new JwksSource({ uri: null, inline: '{"keys": 5}', timeoutMs: 1, refreshMs: 0, caPem: null, allowPrivate: false });
    assert.equal(src.keys, null);
    assert.equal(src.status().state, 'unavailable');
    assert.match(src.status().lastError ?? '', /inline jwks: .*keys/);
  });
});
