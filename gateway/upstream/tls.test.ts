// Upstream TLS: CA-signed upstreams over HTTP/1.1 and HTTP/2, refusals (wrong CA, SAN
// mismatch), mutual TLS, and config errors that must fail update() without side effects.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { createUpstreams } from './index.ts';
import { checkSans, dnsSanMatches, parseSubjectAltNames } from './tls.ts';
import type { UpstreamTls } from '../../api/proxyconfig.ts';
import { makeCA, issueCert } from '../../test/helpers/certs.ts';
import type { TestCA, Pem } from '../../test/helpers/certs.ts';
import { startEcho } from '../../test/helpers/upstream.ts';
import type { Upstream, EchoReply } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';
import type { PeerCertificate } from 'node:tls';

const tlsOf = (over: Partial<UpstreamTls>): UpstreamTls => ({
  mode: 'SIMPLE', sni: 'backend.example.com', caPem: null, certPem: null, keyPem: null,
  caFile: null, certFile: null, keyFile: null, subjectAltNames: [], insecureSkipVerify: false, ...over,
});

describe('SAN matching', () => {
  test('a wildcard SAN covers exactly one label', () => {
    assert.equal(dnsSanMatches('*.example.com', 'a.example.com'), true);
    assert.equal(dnsSanMatches('*.example.com', 'a.b.example.com'), false);
    assert.equal(dnsSanMatches('*.example.com', 'example.com'), false);
    assert.equal(dnsSanMatches('a.example.com', 'a.example.com'), true);
  });

  test('SANs with NUL bytes are refused; URI SANs match exactly', () => {
    const peer = (subjectaltname: string) => ({ subjectaltname }) as PeerCertificate;
    assert.match(String(checkSans(peer('DNS:"good.example.com\\u0000.evil.com"'), ['good.example.com'])), /NUL/);
    assert.equal(checkSans(peer('DNS:x.example.com, URI:spiffe://cluster.local/ns/default/sa/web'), ['spiffe://cluster.local/ns/default/sa/web']), undefined);
    assert.ok(checkSans(peer('URI:spiffe://cluster.local/ns/default/sa/web'), ['spiffe://cluster.local/ns/default/sa/we']) instanceof Error);
    assert.deepEqual(parseSubjectAltNames('DNS:a, IP Address:127.0.0.1'), [{ type: 'DNS', value: 'a' }, { type: 'IP Address', value: '127.0.0.1' }]);
  });
});

describe('TLS to upstreams', () => {
  let ca: TestCA;
  let other: TestCA;
  let leaf: Pem;
  let h1: Upstream;
  let h2: Upstream;
  const closers: (() => Promise<unknown>)[] = [];

  before(async () => {
    ca = makeCA();
    other = makeCA('another CA');
    leaf = issueCert(ca, 'backend', { dnsNames: ['backend.example.com', '*.svc.example.com'] });
    h1 = await startEcho({ name: 'https', protocol: 'https', tls: leaf });
    h2 = await startEcho({ name: 'h2', protocol: 'h2', tls: leaf });
  });
  after(async () => {
    for (const c of closers.reverse()) await c();
    await h1.close();
    await h2.close();
  });

  const through = async (clusterOver: Parameters<typeof makeCluster>[2], port: number) => {
    const ups = createUpstreams();
    ups.update([makeCluster('c', [port], clusterOver)]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => ups.close(), () => ds.close());
    const r = await get(ds.url, { headers: { host: 'public.example.com' } });
    return { ...r, result: await ds.nextResult() };
  };

  test('HTTP/1.1 over TLS to a CA-signed upstream, SNI from the cluster, Host from the route', async () => {
    const r = await through({ tls: tlsOf({ caPem: ca.certPem }) }, h1.port);
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as EchoReply).authority, 'public.example.com');
  });

  test('HTTP/2 over TLS (ALPN h2) to a CA-signed upstream', async () => {
    const r = await through({ protocol: 'http2', tls: tlsOf({ caPem: ca.certPem }) }, h2.port);
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as EchoReply).httpVersion, '2.0');
  });

  test('a certificate from another CA is refused: 503 connection failure', async () => {
    for (const protocol of ['http1', 'http2'] as const) {
      const r = await through({ protocol, tls: tlsOf({ caPem: other.certPem }) }, protocol === 'http1' ? h1.port : h2.port);
      assert.equal(r.status, 503, protocol);
      assert.match(r.body, /reset reason: connection failure/);
      assert.deepEqual(r.result.flags, ['UF']);
    }
  });

  test('subjectAltNames: must match one of the certificate SANs', async () => {
    assert.equal((await through({ tls: tlsOf({ caPem: ca.certPem, subjectAltNames: ['backend.example.com'] }) }, h1.port)).status, 200);
    assert.equal((await through({ tls: tlsOf({ caPem: ca.certPem, subjectAltNames: ['api.svc.example.com'] }) }, h1.port)).status, 200);
    assert.equal((await through({ tls: tlsOf({ caPem: ca.certPem, subjectAltNames: ['a.b.svc.example.com'] }) }, h1.port)).status, 503);
    assert.equal((await through({ tls: tlsOf({ caPem: ca.certPem, subjectAltNames: ['other.example.com'] }) }, h1.port)).status, 503);
  });

  test('without subjectAltNames the certificate must be valid for the SNI; insecureSkipVerify skips all checks', async () => {
    assert.equal((await through({ tls: tlsOf({ caPem: ca.certPem, sni: 'wrong.example.org' }) }, h1.port)).status, 503);
    assert.equal((await through({ tls: tlsOf({ caPem: other.certPem, sni: 'wrong.example.org', insecureSkipVerify: true }) }, h1.port)).status, 200);
  });

  test('MUTUAL: the gateway presents its client certificate', async () => {
    const client = issueCert(ca, 'gateway', { client: true, uris: ['spiffe://cluster.local/ns/istio-system/sa/gateway'] });
    const server = https.createServer({ cert: leaf.certPem, key: leaf.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.end(peer.subjectaltname ?? 'none');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    const port = (server.address() as AddressInfo).port;
    const ok = await through({ tls: tlsOf({ mode: 'MUTUAL', caPem: ca.certPem, certPem: client.certPem, keyPem: client.keyPem }) }, port);
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'URI:spiffe://cluster.local/ns/istio-system/sa/gateway');
    const noCert = await through({ tls: tlsOf({ mode: 'SIMPLE', caPem: ca.certPem }) }, port);
    assert.equal(noCert.status, 503);
  });

  test('update() throws on unreadable TLS files and keeps the running config', async () => {
    const ups = createUpstreams();
    ups.update([makeCluster('keep', [h1.port], { tls: tlsOf({ caPem: ca.certPem }) })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'keep' });
    closers.push(() => ups.close(), () => ds.close());
    assert.throws(
      () => ups.update([makeCluster('broken', [h1.port], { tls: tlsOf({ caFile: '/nonexistent/ca.pem' }) })]),
      /cluster broken: cannot read tls caCertificates file \/nonexistent\/ca\.pem/,
    );
    assert.throws(
      () => ups.update([makeCluster('broken', [h1.port], { tls: tlsOf({ mode: 'MUTUAL', caPem: ca.certPem, certPem: leaf.certPem, keyPem: other.keyPem }) })]),
      /cluster broken: tls material is not usable/,
    );
    assert.deepEqual(Object.keys(ups.snapshot() as object), ['keep']);
    assert.equal((await get(ds.url)).status, 200);
  });
});
