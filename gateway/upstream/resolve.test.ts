// DNS clusters (ServiceEntry `resolution: DNS`) connect through the process's resolver:
// an endpoint named `api.example.test` (a name no DNS answers) reaches a local server once
// the resolver pins it to 127.0.0.1, over HTTP/1.1, HTTP/2, TLS origination (SNI still the
// name, never the address), WebSocket tunnels and mirrors.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { createUpstreams } from './index.ts';
import { createResolver } from '../resolver.ts';
import type { Cluster, UpstreamTls } from '../../api/proxyconfig.ts';
import { makeCA, issueCert } from '../../test/helpers/certs.ts';
import type { TestCA } from '../../test/helpers/certs.ts';
import { startEcho } from '../../test/helpers/upstream.ts';
import type { EchoReply, Handler } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';
import { eventually } from '../../test/helpers/tmp.ts';

const NAME = 'api.example.test';

const tlsOf = (over: Partial<UpstreamTls>): UpstreamTls => ({
  mode: 'SIMPLE', sni: NAME, caPem: null, certPem: null, keyPem: null,
  caFile: null, certFile: null, keyFile: null, subjectAltNames: [], insecureSkipVerify: false, ...over,
});

/** A DNS cluster whose one endpoint is NAME:port. */
function dnsCluster(name: string, port: number, over: Partial<Cluster> = {}): Cluster {
  return makeCluster(name, [{ address: NAME, port }], { dns: true, service: NAME, port, ...over });
}

describe('DNS clusters resolve through the resolver', () => {
  const resolver = createResolver(new Map([[NAME, ['127.0.0.1']]]));
  const closers: (() => Promise<unknown>)[] = [];
  let ca: TestCA;
  /** SNI each TLS upstream saw, in order. */
  const snis: (string | false | null | undefined)[] = [];
  const recordSni: Handler = (req) => { snis.push((req.socket as TLSSocket).servername); return false; };

  before(() => { ca = makeCA(); });
  after(async () => { for (const c of closers.reverse()) await c(); });

  const through = async (cluster: Cluster, path = '/') => {
    const ups = createUpstreams({ resolver });
    ups.update([cluster]);
    const ds = await startDownstream({ upstreams: ups, cluster: cluster.name });
    closers.push(() => ups.close(), () => ds.close());
    const r = await get(`${ds.url}${path}`, { headers: { host: NAME } });
    return { ...r, result: await ds.nextResult() };
  };

  test('HTTP/1.1: the pinned name is reached; the upstream host is the name', async () => {
    const echo = await startEcho({ name: 'h1' });
    closers.push(() => echo.close());
    const r = await through(dnsCluster('h1', echo.port), '/v1/things');
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as EchoReply).path, '/v1/things');
    assert.equal(r.result.upstreamHost, `${NAME}:${echo.port}`);
  });

  test('HTTP/2 (h2c) to the pinned name', async () => {
    const echo = await startEcho({ name: 'h2c', protocol: 'h2c' });
    closers.push(() => echo.close());
    const r = await through(dnsCluster('h2c', echo.port, { protocol: 'http2' }));
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as EchoReply).httpVersion, '2.0');
  });

  test('TLS origination over HTTP/1.1 and HTTP/2: connects to the pinned address, sends the name as SNI, verifies the certificate for the name', async () => {
    const leaf = issueCert(ca, NAME, { dnsNames: [NAME] });
    const https1 = await startEcho({ name: 'https', protocol: 'https', tls: leaf, handler: recordSni });
    const h2 = await startEcho({ name: 'h2', protocol: 'h2', tls: leaf, handler: recordSni });
    closers.push(() => https1.close(), () => h2.close());
    snis.length = 0;
    const a = await through(dnsCluster('tls-h1', https1.port, { tls: tlsOf({ caPem: ca.certPem }) }));
    assert.equal(a.status, 200, a.body);
    const b = await through(dnsCluster('tls-h2', h2.port, { protocol: 'http2', tls: tlsOf({ caPem: ca.certPem }) }));
    assert.equal(b.status, 200, b.body);
    assert.equal((JSON.parse(b.body) as EchoReply).httpVersion, '2.0');
    assert.deepEqual(snis, [NAME, NAME]);
  });

  test('TLS origination: a certificate for another name is refused even though the address matches', async () => {
    const wrong = issueCert(ca, 'other', { dnsNames: ['other.example.test'] });
    const https1 = await startEcho({ name: 'wrong', protocol: 'https', tls: wrong });
    closers.push(() => https1.close());
    const r = await through(dnsCluster('tls-wrong', https1.port, { tls: tlsOf({ caPem: ca.certPem }) }));
    assert.equal(r.status, 503);
    assert.deepEqual(r.result.flags, ['UF']);
  });

  test('WebSocket tunnels connect to the pinned name; over TLS the name is the SNI', async () => {
    const plain = await startEcho({ name: 'ws', websocket: true });
    closers.push(() => plain.close());
    const ups = createUpstreams({ resolver });
    ups.update([dnsCluster('ws', plain.port)]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'ws' });
    closers.push(() => ups.close(), () => ds.close());
    const ws = new WebSocket(`ws://127.0.0.1:${ds.port}/chat`);
    const hello = await new Promise<string>((resolve, reject) => { ws.once('message', (m) => resolve(m.toString())); ws.once('error', reject); });
    assert.equal(hello, 'ws connected /chat');
    ws.close();
    const res = await ds.nextResult();
    assert.equal(res.status, 101);
    assert.equal(res.upstreamHost, `${NAME}:${plain.port}`);

    // A TLS upstream that records the SNI of each upgrade and refuses it (the refusal is relayed).
    const leaf = issueCert(ca, NAME, { dnsNames: [NAME] });
    const tunnelSnis: (string | false | null)[] = [];
    const server = https.createServer({ cert: leaf.certPem, key: leaf.keyPem });
    server.on('upgrade', (_req, socket: TLSSocket) => {
      tunnelSnis.push(socket.servername);
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    const port = (server.address() as AddressInfo).port;
    const ups2 = createUpstreams({ resolver });
    // No sni in the DestinationRule: the endpoint's name is sent, as undici and http2 do.
    ups2.update([dnsCluster('wss', port, { tls: tlsOf({ caPem: ca.certPem, sni: '' }) })]);
    const ds2 = await startDownstream({ upstreams: ups2, cluster: 'wss' });
    closers.push(() => ups2.close(), () => ds2.close());
    const r = await get(`${ds2.url}/chat`, { headers: { connection: 'Upgrade', upgrade: 'websocket' } });
    assert.equal(r.status, 403);
    assert.equal(r.body, 'no');
    assert.deepEqual(tunnelSnis, [NAME]);
  });

  test('mirrors to a DNS cluster resolve the same way', async () => {
    const main = await startEcho({ name: 'main' });
    const shadow = await startEcho({ name: 'shadow' });
    closers.push(() => main.close(), () => shadow.close());
    const ups = createUpstreams({ resolver });
    ups.update([makeCluster('main', [main.port]), dnsCluster('shadow', shadow.port)]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'main', mirror: 'shadow', bufferBody: true });
    closers.push(() => ups.close(), () => ds.close());
    assert.equal((await get(`${ds.url}/m`, { headers: { host: 'shop.example.test' } })).status, 200);
    const copy = await eventually(() => shadow.received[0], 3000, 'the mirrored request');
    assert.equal(copy.authority, 'shop.example.test-shadow');
  });
});
