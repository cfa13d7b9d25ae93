// TLS listeners: certificate choice by SNI, MUTUAL client verification, certificate
// changes without re-binding, and refusal of unusable key material.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { DataPlane } from './dataplane.ts';
import { createUpstreams } from './upstream/index.ts';
import { issueCert, makeCA, type Pem, type TestCA } from '../test/helpers/certs.ts';
import { h1, h2, https1 } from '../test/helpers/client.ts';
import { makeCluster } from '../test/helpers/downstream.ts';
import { tempDir, type TempDir } from '../test/helpers/tmp.ts';
import { startEcho, type EchoReply, type Upstream } from '../test/helpers/upstream.ts';
import { direct, dest, exact, listener, match, proxyConfig, route, serverCert, vhost } from '../test/helpers/proxyconfig.ts';
import type { Listener, ServerCertificate } from '../api/proxyconfig.ts';

describe('TLS listeners', () => {
  let ca: TestCA;
  let clientCa: TestCA;
  let otherCa: TestCA;
  let certA: Pem;
  let certWild: Pem;
  let certDefault: Pem;
  let certRotated: Pem;
  let client: Pem;
  let clientWrongSan: Pem;
  let strangerClient: Pem;
  let echo: Upstream;
  let tmp: TempDir;
  let dp: DataPlane;

  before(async () => {
    ca = makeCA('server CA');
    clientCa = makeCA('client CA');
    otherCa = makeCA('other CA');
    certA = issueCert(ca, 'a.example.com', { dnsNames: ['a.example.com'] });
    certWild = issueCert(ca, 'wild', { dnsNames: ['*.b.example.com'] });
    certDefault = issueCert(ca, 'default', { dnsNames: ['localhost'] });
    certRotated = issueCert(ca, 'a-rotated', { dnsNames: ['a.example.com'] });
    client = issueCert(clientCa, 'client', { client: true, uris: ['spiffe://cluster.local/ns/default/sa/frontend'] });
    clientWrongSan = issueCert(clientCa, 'client2', { client: true, uris: ['spiffe://cluster.local/ns/default/sa/other'] });
    strangerClient = issueCert(otherCa, 'stranger', { client: true, uris: ['spiffe://cluster.local/ns/default/sa/frontend'] });
    echo = await startEcho({ name: 'a' });
    tmp = await tempDir();
    dp = new DataPlane({ upstreams: createUpstreams(), adminPort: 0, healthPort: 0, metricsPort: null, portMap: { 443: 0, 8443: 0 }, drainMs: 200 });
    await dp.start();
  });
  after(async () => {
    await dp.close(200);
    await echo.close();
    await tmp.cleanup();
  });

  const inline = (pem: Pem, hosts: string[], over: Partial<ServerCertificate> = {}) => serverCert(hosts, { certPem: pem.certPem, keyPem: pem.keyPem, ...over });
  const tlsListener = (port: number, certificates: ServerCertificate[], over: Partial<Listener> = {}) => listener(port, [
    vhost(['*'], [
      route('https-only', [match({ uri: exact('/scheme'), scheme: exact('https') })], [], { action: direct(200, 'https') }),
      route('up', [], [dest('a')]),
    ]),
  ], { protocol: 'HTTPS', tls: { certificates }, ...over });
  const mutual = () => inline(certA, ['*'], { mode: 'MUTUAL', caPem: clientCa.certPem, subjectAltNames: ['spiffe://cluster.local/ns/default/sa/frontend'], source: 'gateway/default/gw/server/mtls' });
  const config = (aCert: Pem) => proxyConfig([
    tlsListener(443, [inline(aCert, ['a.example.com']), inline(certWild, ['*.b.example.com']), inline(certDefault, ['*'])]),
    tlsListener(8443, [mutual()]),
  ], [makeCluster('a', [echo.port])]);

  test('SNI picks the certificate: exact, wildcard, `*`, and the `*` one without SNI; h2 and http/1.1 by ALPN', async () => {
    await dp.apply(config(certA));
    const port = dp.ports()[443];
    assert.equal((await https1(port, '/scheme', { servername: 'a.example.com', ca: ca.certPem })).peerCN, 'a.example.com');
    assert.equal((await https1(port, '/scheme', { servername: 'x.b.example.com', ca: ca.certPem })).peerCN, 'wild');
    assert.equal((await https1(port, '/scheme', { servername: 'other.org', ca: ca.certPem, rejectUnauthorized: false })).peerCN, 'default');
    const noSni = await https1(port, '/scheme', { ca: ca.certPem, rejectUnauthorized: false });
    assert.deepEqual([noSni.peerCN, noSni.status, noSni.body], ['default', 200, 'https']);
    const viaH2 = await h2(port, '/up', { tlsOpts: { servername: 'a.example.com', ca: ca.certPem } });
    assert.equal(viaH2.alpn, 'h2');
    const seen = JSON.parse(viaH2.body) as EchoReply;
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
  });

  test('a listener without `*` refuses an SNI it has no certificate for', async () => {
    await dp.apply(proxyConfig([tlsListener(443, [inline(certA, ['a.example.com'])])], [makeCluster('a', [echo.port])]));
    const port = dp.ports()[443];
    assert.equal((await https1(port, '/scheme', { servername: 'a.example.com', ca: ca.certPem })).status, 200);
    await assert.rejects(https1(port, '/scheme', { servername: 'nope.org', ca: ca.certPem, rejectUnauthorized: false }));
  });

  test('MUTUAL: a client without a certificate, from another CA, or with the wrong SAN is refused', async () => {
    await dp.apply(config(certA));
    const port = dp.ports()[8443];
    const base = { servername: 'a.example.com', ca: ca.certPem };
    const ok = await https1(port, '/scheme', { ...base, cert: client.certPem, key: client.keyPem });
    assert.deepEqual([ok.status, ok.body], [200, 'https']);
    await assert.rejects(https1(port, '/scheme', base), 'no client certificate');
    await assert.rejects(https1(port, '/scheme', { ...base, cert: strangerClient.certPem, key: strangerClient.keyPem }), 'certificate from another CA');
    await assert.rejects(https1(port, '/scheme', { ...base, cert: clientWrongSan.certPem, key: clientWrongSan.keyPem }), 'SAN not allowed');
    await assert.rejects(h2(port, '/up', { tlsOpts: base }), 'HTTP/2 without a certificate');
  });

  test('SIMPLE and MUTUAL servers on one port: the SNI decides whether a client certificate is required', async () => {
    const certM = issueCert(ca, 'mtls.example.com', { dnsNames: ['mtls.example.com'] });
    await dp.apply(proxyConfig([tlsListener(443, [
      inline(certA, ['a.example.com']),
      inline(certM, ['mtls.example.com'], { mode: 'MUTUAL', caPem: clientCa.certPem }),
    ])], [makeCluster('a', [echo.port])]));
    const port = dp.ports()[443];
    assert.equal((await https1(port, '/scheme', { servername: 'a.example.com', ca: ca.certPem })).status, 200, 'SIMPLE needs no client cert');
    await assert.rejects(https1(port, '/scheme', { servername: 'mtls.example.com', ca: ca.certPem }));
    const ok = await https1(port, '/scheme', { servername: 'mtls.example.com', ca: ca.certPem, cert: client.certPem, key: client.keyPem });
    assert.deepEqual([ok.peerCN, ok.status], ['mtls.example.com', 200]);
    await assert.rejects(https1(port, '/scheme', { servername: 'mtls.example.com', ca: ca.certPem, cert: strangerClient.certPem, key: strangerClient.keyPem }));
  });

  test('certificates change on apply without re-binding; files are read at apply time', async () => {
    await dp.apply(config(certA));
    const port = dp.ports()[443];
    assert.equal((await https1(port, '/', { servername: 'a.example.com', ca: ca.certPem })).peerCN, 'a.example.com');
    const certFile = `${tmp.path}/a.crt`;
    const keyFile = `${tmp.path}/a.key`;
    writeFileSync(certFile, certRotated.certPem);
    writeFileSync(keyFile, certRotated.keyPem);
    await dp.apply(proxyConfig([
      tlsListener(443, [serverCert(['a.example.com'], { certFile, keyFile }), inline(certDefault, ['*'])]),
    ], [makeCluster('a', [echo.port])]));
    assert.equal(dp.ports()[443], port, 'same bound port');
    assert.equal((await https1(port, '/', { servername: 'a.example.com', ca: ca.certPem })).peerCN, 'a-rotated');
  });

  test('plaintext ↔ TLS on one Gateway port re-creates the listener', async () => {
    await dp.apply(proxyConfig([listener(443, [vhost(['*'], [route('p', [], [], { action: direct(200, 'plain') })])])], []));
    const port = dp.ports()[443];
    assert.equal((await h1(port, '/')).body, 'plain');
    await dp.apply(config(certA));
    const r = await https1(dp.ports()[443], '/scheme', { servername: 'a.example.com', ca: ca.certPem });
    assert.equal(r.body, 'https');
  });

  test('an unusable certificate is refused, naming its server; the previous version keeps serving', async () => {
    await dp.apply(config(certA));
    const v = dp.version;
    await assert.rejects(
      dp.apply(proxyConfig([tlsListener(443, [inline({ certPem: 'not a pem', keyPem: certA.keyPem }, ['*'], { source: 'gateway/default/gw/server/9' })])], [])),
      /listener 127\.0\.0\.1_443 gateway\/default\/gw\/server\/9: unusable certificate\/key/,
    );
    await assert.rejects(
      dp.apply(proxyConfig([tlsListener(443, [inline({ certPem: certA.certPem, keyPem: certWild.keyPem }, ['*'])])], [])),
      /unusable certificate\/key/,
      'a key that does not belong to the certificate',
    );
    assert.equal(dp.version, v);
    assert.equal((await https1(dp.ports()[443], '/', { servername: 'a.example.com', ca: ca.certPem })).status, 200);
  });
});
