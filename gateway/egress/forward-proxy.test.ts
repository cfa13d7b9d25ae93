// The egress forward proxy through a real DataPlane: clients speak HTTP_PROXY-style
// absolute-form requests and CONNECT tunnels to it; "external" hosts are local servers that
// the proxy's resolver maps to 127.0.0.1. What a workload (and its operator) sees.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import { WebSocket } from 'ws';
import { DataPlane } from '../dataplane.ts';
import { createResolver, type Resolver } from '../resolver.ts';
import { DestinationGuard } from './guard.ts';
import { createUpstreams } from '../upstream/index.ts';
import type { EgressConfig, EgressEntry } from '../../api/policy.ts';
import type { Cluster, Listener, ProxyConfig } from '../../api/proxyconfig.ts';
import { issueCert, makeCA, type TestCA } from '../../test/helpers/certs.ts';
import { h1, raw } from '../../test/helpers/client.ts';
import { makeCluster } from '../../test/helpers/downstream.ts';
import { parseProm, total } from '../../test/helpers/prometheus.ts';
import { dest, listener, proxyConfig, route, vhost } from '../../test/helpers/proxyconfig.ts';
import { eventually } from '../../test/helpers/tmp.ts';
import { startEcho, type EchoReply, type Upstream } from '../../test/helpers/upstream.ts';

const HOSTS = ['api.example.com', 'other.example.com', 'a.wild.test', 'evil.example', 'anything.test', 'db.internal'];

function entry(name: string, hosts: string[], ports: [number, string][], addresses: string[] = []): EgressEntry {
  return {
    source: `serviceentry/default/${name}`, hosts, addresses,
    ports: ports.map(([number, protocol]) => ({ number, protocol, name: `${protocol.toLowerCase()}-${number}` })),
    location: 'MESH_EXTERNAL', resolution: 'DNS',
  };
}

/** A TLS server for api.example.com (and *.example.com) that greets and echoes; counts raw TCP connections. */
interface TlsEcho { port: number; connections: number; server: tls.Server }

function startTlsEcho(ca: TestCA): Promise<TlsEcho> {
  const pem = issueCert(ca, 'api.example.com', { dnsNames: ['api.example.com', '*.example.com', 'anything.test'] });
  const state: TlsEcho = { port: 0, connections: 0, server: null as unknown as tls.Server };
  const server = tls.createServer({ cert: pem.certPem, key: pem.keyPem }, (sock) => {
    sock.write(`hello ${(sock as unknown as { servername?: string }).servername ?? '-'}\n`);
    sock.on('data', (d: Buffer) => sock.write(`echo ${d.toString()}`));
    sock.on('error', () => {});
  });
  server.on('connection', () => { state.connections++; });
  server.on('tlsClientError', () => {});
  state.server = server;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    state.port = (server.address() as net.AddressInfo).port;
    resolve(state);
  }));
}

/** A plain TCP server that echoes with a prefix. */
function startTcpEcho(): Promise<{ port: number; connections: number; server: net.Server }> {
  const state = { port: 0, connections: 0, server: null as unknown as net.Server };
  const server = net.createServer((sock) => {
    state.connections++;
    sock.on('data', (d: Buffer) => sock.write(`tcp ${d.toString()}`));
    sock.on('error', () => {});
  });
  state.server = server;
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    state.port = (server.address() as net.AddressInfo).port;
    resolve(state);
  }));
}

interface Tunnel { status: number; head: string; socket: net.Socket }

/** Sends CONNECT and reads the response head; the socket stays open on 200. */
function openTunnel(proxyPort: number, authority: string): Promise<Tunnel> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxyPort, '127.0.0.1');
    let head = '';
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`CONNECT ${authority}: no answer`)); }, 5000);
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.removeListener('data', onData);
      clearTimeout(timer);
      const rest = head.slice(end + 4);
      head = head.slice(0, end);
      if (rest.length > 0) socket.unshift(Buffer.from(rest, 'latin1'));
      socket.pause();
      resolve({ status: Number(head.split(' ')[1]), head: head + '\r\n\r\n' + rest, socket });
    };
    socket.on('data', onData);
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

/** Everything the proxy writes after a refused CONNECT, until it closes. */
function refusedConnect(proxyPort: number, authority: string): Promise<string> {
  return raw(proxyPort, `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
}

/** TLS over an open tunnel; resolves with the server's greeting line. */
function tlsOver(t: Tunnel, servername: string, ca: string): Promise<{ sock: tls.TLSSocket; greeting: string }> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ socket: t.socket, servername, ca });
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('TLS over tunnel: timeout')); }, 5000);
    sock.once('secureConnect', () => {
      sock.once('data', (d: Buffer) => { clearTimeout(timer); resolve({ sock, greeting: d.toString() }); });
    });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

function nextData(sock: net.Socket | tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no data')), 5000);
    sock.once('data', (d: Buffer) => { clearTimeout(timer); resolve(d.toString()); });
    sock.resume();
  });
}

function closed(sock: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (sock.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error('socket still open')), 5000);
    sock.on('close', () => { clearTimeout(timer); resolve(); });
    sock.on('error', () => {});
    sock.resume();
  });
}

/** An HTTP request through the proxy, absolute-form, as curl sends it with HTTP_PROXY. */
function viaProxy(proxyPort: number, url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(url);
  const lines = [`GET ${url} HTTP/1.1`, `Host: ${u.host}`, 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return raw(proxyPort, lines.join('\r\n') + '\r\n\r\n').then(parseResponse);
}

function parseResponse(text: string): { status: number; headers: Record<string, string>; body: string } {
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no HTTP response in ${JSON.stringify(text)}`);
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = text.slice(end + 4);
  if (headers['transfer-encoding'] === 'chunked') {
    let out = '';
    for (;;) {
      const nl = body.indexOf('\r\n');
      const n = parseInt(body.slice(0, nl), 16);
      if (!(n > 0)) break;
      out += body.slice(nl + 2, nl + 2 + n);
      body = body.slice(nl + 2 + n + 2);
    }
    body = out;
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body };
}

describe('egress forward proxy', () => {
  let ca: TestCA;
  let web: Upstream;
  let ws: Upstream;
  let tlsEcho: TlsEcho;
  let tcpEcho: Awaited<ReturnType<typeof startTcpEcho>>;
  const planes: DataPlane[] = [];
  const logLines: Record<string, unknown>[] = [];
  const resolver = createResolver(new Map(HOSTS.map((h) => [h, ['127.0.0.1']])));

  before(async () => {
    ca = makeCA();
    web = await startEcho({ name: 'web' });
    ws = await startEcho({ name: 'ws', websocket: true });
    tlsEcho = await startTlsEcho(ca);
    tcpEcho = await startTcpEcho();
  });
  after(async () => {
    for (const p of planes) await p.close(100);
    await Promise.all([web.close(), ws.close()]);
    tlsEcho.server.close();
    tcpEcho.server.close();
  });

  /** The allowlist most tests use. */
  function entries(): EgressEntry[] {
    return [
      entry('api', ['api.example.com'], [[web.port, 'HTTP'], [tlsEcho.port, 'HTTPS'], [ws.port, 'HTTP']]),
      entry('wild', ['*.wild.test'], [[web.port, 'HTTP']]),
      entry('db', ['db.internal'], [[tcpEcho.port, 'TCP']], ['127.0.0.0/8']),
    ];
  }

  /**
   * The mesh's outbound route tables, as pilot would compile them: api.example.com on the
   * web port to its ServiceEntry cluster. `*` goes to the same local server here (standing in
   * for the destination itself, which PassthroughCluster would reach), so tests of audit and
   * ALLOW_ANY can see requests arrive.
   */
  function outbound(): Listener[] {
    const apiCluster = `outbound|${web.port}||api.example.com`;
    return [
      listener(web.port, [
        vhost(['api.example.com'], [route('api/http/0', [], [dest(apiCluster)])]),
        vhost(['*'], [route('any/http/0', [], [dest('web')])]),
      ], { name: `outbound_${web.port}`, address: '0.0.0.0' }),
      listener(ws.port, [vhost(['*'], [route('ws/http/0', [], [dest('ws')])])], { name: `outbound_${ws.port}`, address: '0.0.0.0' }),
    ];
  }

  function clusters(): Cluster[] {
    return [
      makeCluster(`outbound|${web.port}||api.example.com`, [web.port], { service: 'api.example.com' }),
      makeCluster('web', [web.port]),
      makeCluster('ws', [ws.port]),
      makeCluster('PassthroughCluster', [], { service: 'PassthroughCluster', dns: true }),
    ];
  }

  function egressConfig(policy: Partial<EgressConfig> = {}, over: { outbound?: Listener[] } = {}): ProxyConfig {
    const cfg = proxyConfig([], clusters());
    cfg.proxy = { ...cfg.proxy, labels: { istio: 'egressgateway' }, egress: true };
    cfg.egress = { policy: { mode: 'REGISTRY_ONLY', audit: false, entries: entries(), ...policy }, outbound: over.outbound ?? outbound() };
    return cfg;
  }

  async function plane(config: ProxyConfig = egressConfig(), res: Resolver = resolver): Promise<{ dp: DataPlane; port: number }> {
    const log = pino({ level: 'info' }, new Writable({
      write(chunk: Buffer, _enc, cb) { logLines.push(JSON.parse(chunk.toString())); cb(); },
    }));
    const guard = new DestinationGuard();
    const dp = new DataPlane({
      upstreams: createUpstreams({ resolver: res, guard }), adminPort: 0, healthPort: 0, metricsPort: null, drainMs: 300, log,
      forwardProxy: { port: 0, address: '127.0.0.1' }, resolver: res, guard,
    });
    planes.push(dp);
    await dp.start();
    await dp.apply(config);
    assert.ok(dp.proxyPort > 0);
    return { dp, port: dp.proxyPort };
  }

  async function metrics(dp: DataPlane) {
    return parseProm(await dp.renderMetrics());
  }

  test('an allowed host over HTTP_PROXY (absolute-form) reaches it, in origin-form, with the URL\'s authority as Host', async () => {
    const { dp, port } = await plane();
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${port}`, proxyTunnel: false, token: 'Basic dXNlcjpwYXNz' });
    try {
      const r = await undiciFetch(`http://api.example.com:${web.port}/hello/world?x=1`, { dispatcher: agent });
      assert.equal(r.status, 200);
      const echo = await r.json() as EchoReply;
      assert.equal(echo.path, '/hello/world?x=1');
      assert.equal(echo.authority, `api.example.com:${web.port}`);
      assert.equal(echo.headers['proxy-authorization'], undefined, 'credentials for the proxy are not passed on');
    } finally {
      await agent.close();
    }
    // The absolute-form authority wins over a Host header naming something else.
    const r2 = await viaProxy(port, `http://api.example.com:${web.port}/p`, { 'Proxy-Connection': 'keep-alive' });
    assert.equal(r2.status, 200);
    const echo2 = JSON.parse(r2.body) as EchoReply;
    assert.equal(echo2.authority, `api.example.com:${web.port}`);
    assert.equal(echo2.headers['proxy-connection'], undefined);
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'api.example.com', destination_port: String(web.port), protocol: 'http', decision: 'allowed' }), 2);
    assert.equal(total(m, 'istio_requests_total', { destination_service: 'api.example.com', response_code: '200' }), 2);
  });

  test('an origin-form request goes where its Host header says, under the same policy', async () => {
    const { port } = await plane();
    const ok = await h1(port, '/from-workload', { headers: { host: `api.example.com:${web.port}` } });
    assert.equal(ok.status, 200);
    assert.equal((JSON.parse(ok.body) as EchoReply).path, '/from-workload');
    const no = await h1(port, '/x', { headers: { host: `evil.example:${web.port}` } });
    assert.equal(no.status, 502);
    assert.equal(no.headers['x-meshgate-egress'], 'blocked');
  });

  test('a host no ServiceEntry declares gets 502 naming host, port and reason, and nothing reaches it', async () => {
    const { dp, port } = await plane();
    const before = web.received.length;
    logLines.length = 0;
    const r = await viaProxy(port, `http://evil.example:${web.port}/steal`);
    assert.equal(r.status, 502);
    assert.equal(r.headers['x-meshgate-egress'], 'blocked');
    assert.match(r.body, new RegExp(`^egress to evil\\.example:${web.port} blocked: no ServiceEntry declares host evil\\.example`));
    assert.equal(web.received.length, before);
    const line = logLines.find((l) => l.msg === 'egress blocked');
    assert.ok(line, 'a warning is logged');
    assert.deepEqual([line.level, line.host, line.port, line.client], [40, 'evil.example', web.port, '127.0.0.1']);
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'evil.example', decision: 'blocked' }), 1);
    assert.equal(total(m, 'istio_requests_total', { destination_service_name: 'BlackHoleCluster', response_code: '502' }), 1);
  });

  test('a wildcard entry allows its subdomains, not the bare domain', async () => {
    const { port } = await plane();
    const ok = await viaProxy(port, `http://a.wild.test:${web.port}/w`);
    assert.equal(ok.status, 200);
    assert.equal((JSON.parse(ok.body) as EchoReply).authority, `a.wild.test:${web.port}`);
    const bare = await viaProxy(port, `http://wild.test:${web.port}/w`);
    assert.equal(bare.status, 502);
  });

  test('an allowed host on a port its ServiceEntry does not list is blocked', async () => {
    const { port } = await plane();
    const other = web.port === 65535 ? 1 : web.port + 1;
    const r = await viaProxy(port, `http://api.example.com:${other}/`);
    assert.equal(r.status, 502);
    assert.match(r.body, new RegExp(`api\\.example\\.com.*not on port ${other}`));
  });

  test('https:// URLs and targets that name no destination are 400 with the reason', async () => {
    const { port } = await plane();
    const https = parseResponse(await raw(port, `GET https://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n`));
    assert.equal(https.status, 400);
    assert.match(https.body, /CONNECT/);
    const userinfo = parseResponse(await raw(port, `GET http://api.example.com@evil.example/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    assert.equal(userinfo.status, 400);
    assert.match(userinfo.body, /userinfo/);
    const numeric = parseResponse(await raw(port, `GET http://127.1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    assert.equal(numeric.status, 400);
  });

  test('CONNECT to a host of a STATIC ServiceEntry goes to its endpoint (port mapped by name), not to a DNS answer for the name', async () => {
    // static.example.com resolves nowhere here: only the endpoint says where it is.
    const staticEntry: EgressEntry = {
      ...entry('static', ['static.example.com'], [[443, 'TLS']]),
      resolution: 'STATIC',
      endpoints: [{ address: '127.0.0.1', ports: { 'tls-443': tlsEcho.port } }],
    };
    const { dp, port } = await plane(egressConfig({ entries: [...entries(), staticEntry] }));
    const before = tlsEcho.connections;
    const t = await openTunnel(port, 'static.example.com:443');
    assert.equal(t.status, 200);
    const { sock, greeting } = await tlsOver(t, 'static.example.com', ca.certPem);
    assert.equal(greeting, 'hello static.example.com\n');
    sock.destroy();
    assert.equal(tlsEcho.connections, before + 1);
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'static.example.com', destination_port: '443', decision: 'allowed' }), 1);
    // The guard holds for endpoints too: one pointing at the proxy's own admin port is refused.
    const toAdmin: EgressEntry = { ...staticEntry, source: 'serviceentry/default/static-admin', hosts: ['admin.example.com'], endpoints: [{ address: '127.0.0.1', ports: { 'tls-443': dp.adminPort } }] };
    await dp.apply(egressConfig({ entries: [...entries(), toAdmin] }));
    assert.match(await refusedConnect(port, 'admin.example.com:443'), /^HTTP\/1\.1 502/);
  });

  test('CONNECT with an SNI that matches: the TLS handshake runs end to end through the tunnel', async () => {
    const { dp, port } = await plane();
    const t = await openTunnel(port, `api.example.com:${tlsEcho.port}`);
    assert.equal(t.status, 200);
    const { sock, greeting } = await tlsOver(t, 'api.example.com', ca.certPem);
    assert.equal(greeting, 'hello api.example.com\n');
    sock.write('ping');
    assert.equal(await nextData(sock), 'echo ping');
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_tunnels_active'), 1);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'api.example.com', protocol: 'connect', decision: 'allowed' }), 1);
    sock.destroy();
    await eventually(async () => total(await metrics(dp), 'meshgate_egress_tunnels_active') === 0, 3000, 'tunnel closed');
    const after = await metrics(dp);
    assert.ok(total(after, 'meshgate_egress_tunnel_bytes_total', { direction: 'sent' }) > 100, 'the ClientHello and data were counted');
    assert.ok(total(after, 'meshgate_egress_tunnel_bytes_total', { direction: 'received' }) > 100);
  });

  test('CONNECT to an allowed name carrying a ClientHello for another host is cut before any byte is forwarded', async () => {
    const { dp, port } = await plane();
    const before = tlsEcho.connections;
    logLines.length = 0;
    const t = await openTunnel(port, `api.example.com:${tlsEcho.port}`);
    assert.equal(t.status, 200);
    await assert.rejects(tlsOver(t, 'other.example.com', ca.certPem));
    await closed(t.socket);
    assert.equal(tlsEcho.connections, before, 'the TLS server never saw a connection');
    const line = logLines.find((l) => l.msg === 'egress blocked');
    assert.ok(line);
    assert.equal(line.sni, 'other.example.com');
    assert.match(String(line.reason), /SNI other\.example\.com does not match/);
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'api.example.com', protocol: 'connect', decision: 'blocked' }), 1);
    assert.equal(total(m, 'meshgate_egress_tunnel_failures_total', { reason: 'sni_refused' }), 1);
  });

  test('CONNECT to a host not on the list is refused with 502 before the tunnel opens', async () => {
    const { port } = await plane();
    const text = await refusedConnect(port, `evil.example:${tlsEcho.port}`);
    const r = parseResponse(text);
    assert.equal(r.status, 502);
    assert.equal(r.headers['x-meshgate-egress'], 'blocked');
    assert.match(r.body, new RegExp(`^egress to evil\\.example:${tlsEcho.port} blocked: .+`));
  });

  test('CONNECT to an address a ServiceEntry allows by CIDR carries plain TCP; other ports stay closed', async () => {
    const { port } = await plane();
    const t = await openTunnel(port, `127.0.0.1:${tcpEcho.port}`);
    assert.equal(t.status, 200);
    t.socket.write('hello');
    assert.equal(await nextData(t.socket), 'tcp hello');
    // Half-close: the client is done sending, the answer still comes back.
    t.socket.end('last');
    assert.equal(await nextData(t.socket), 'tcp last');
    t.socket.destroy();
    const refused = parseResponse(await refusedConnect(port, `127.0.0.1:${web.port}`));
    assert.equal(refused.status, 502);
    assert.match(refused.body, /127\.0\.0\.1/);
  });

  test('a server-speaks-first protocol allowed by address gets its banner through at once (no wait for a ClientHello)', async () => {
    const banner = net.createServer((s) => { s.write('220 banner.internal ESMTP ready\r\n'); s.on('error', () => {}); });
    await new Promise<void>((r) => banner.listen(0, '127.0.0.1', () => r()));
    const bannerPort = (banner.address() as net.AddressInfo).port;
    try {
      const { port } = await plane(egressConfig({ entries: [...entries(), entry('smtp', ['banner.internal'], [[bannerPort, 'TCP']], ['127.0.0.1/32'])] }));
      const t = await openTunnel(port, `127.0.0.1:${bannerPort}`);
      assert.equal(t.status, 200);
      // The client sends nothing: the proxy must connect without peeking for a ClientHello.
      assert.equal(await nextData(t.socket), '220 banner.internal ESMTP ready\r\n');
      t.socket.destroy();
    } finally {
      banner.close();
    }
  });

  test('concurrent tunnels, one with a slow reader, each receive exactly their own bytes (the downlink read buffer is shared)', async () => {
    // More than the kernel's socket buffers hold, so the proxy's writes to the stalled client queue in the proxy.
    const SIZE = 16 * 1024 * 1024;
    // Each server sends SIZE bytes of its own pattern once the client says go.
    const pattern = (seed: number): Buffer => {
      const b = Buffer.allocUnsafe(SIZE);
      for (let i = 0; i < SIZE; i++) b[i] = (i * 31 + seed * 101 + (i >> 12)) & 255;
      return b;
    };
    const servers = await Promise.all([1, 2, 3].map((seed) => new Promise<{ port: number; close: () => void; data: Buffer }>((resolve) => {
      const data = pattern(seed);
      const srv = net.createServer((sock) => { sock.once('data', () => sock.end(data)); sock.on('error', () => {}); });
      srv.listen(0, '127.0.0.1', () => resolve({ port: (srv.address() as net.AddressInfo).port, close: () => srv.close(), data }));
    })));
    try {
      const ports = servers.map((x) => [x.port, 'TCP'] as [number, string]);
      const { port } = await plane(egressConfig({ entries: [...entries(), entry('bulk', ['bulk.internal'], ports, ['127.0.0.1/32'])] }));
      const tunnels = await Promise.all(servers.map(async (srv) => {
        const t = await openTunnel(port, `127.0.0.1:${srv.port}`);
        assert.equal(t.status, 200);
        return t;
      }));
      const download = (t: Tunnel, read: boolean) => new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        t.socket.on('data', (d: Buffer) => chunks.push(d));
        t.socket.on('end', () => resolve(Buffer.concat(chunks)));
        t.socket.on('error', reject);
        if (read) t.socket.resume();
        t.socket.write('go');
      });
      // The first client stalls while the two others download everything through the proxy.
      const stalled = download(tunnels[0], false);
      const others = await Promise.all([download(tunnels[1], true), download(tunnels[2], true)]);
      tunnels[0].socket.resume();
      const received = [await stalled, ...others];
      received.forEach((got, k) => {
        assert.equal(got.length, SIZE, `tunnel ${k}: length`);
        assert.ok(got.equals(servers[k].data), `tunnel ${k}: bytes differ from what its server sent`);
      });
    } finally {
      for (const srv of servers) srv.close();
    }
  });

  test('a CONNECT to a refused name is not even looked up, unless an addresses entry covers its port', async () => {
    const looked: string[] = [];
    const recording: Resolver = { ...resolver, resolve: (host: string) => { looked.push(host); return resolver.resolve(host); } };
    const { port } = await plane(egressConfig(), recording);
    const refused = parseResponse(await refusedConnect(port, 'evil.example:443'));
    assert.equal(refused.status, 502);
    assert.deepEqual(looked, [], 'no DNS query for a blocked name (it could carry data out)');
    // Port tcpEcho.port has an addresses entry (127.0.0.0/8): there only the address can decide.
    const t = await openTunnel(port, `other.example.com:${tcpEcho.port}`);
    assert.equal(t.status, 200);
    assert.deepEqual(looked, ['other.example.com']);
    t.socket.destroy();
  });

  test('plain bytes through a tunnel to an HTTPS-only host are cut before they reach it', async () => {
    const { port } = await plane();
    const t = await openTunnel(port, `api.example.com:${tlsEcho.port}`);
    assert.equal(t.status, 200);
    const before = tlsEcho.connections;
    t.socket.write('not tls at all\r\n');
    await closed(t.socket);
    assert.equal(tlsEcho.connections, before);
  });

  test('audit mode lets a blocked destination through, logs "would be blocked" and counts it as audited', async () => {
    const { dp, port } = await plane(egressConfig({ audit: true }));
    logLines.length = 0;
    const r = await viaProxy(port, `http://evil.example:${web.port}/audited`);
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as EchoReply).path, '/audited');
    const line = logLines.find((l) => String(l.msg).includes('would be blocked'));
    assert.ok(line, 'an info line says it would be blocked');
    assert.deepEqual([line.level, line.host], [30, 'evil.example']);
    assert.match(String(line.reason), /no ServiceEntry declares host evil\.example/);
    // Tunnels too: a handshake for a host the list does not hold.
    const t = await openTunnel(port, `anything.test:${tlsEcho.port}`);
    assert.equal(t.status, 200);
    const { sock, greeting } = await tlsOver(t, 'anything.test', ca.certPem);
    assert.equal(greeting, 'hello anything.test\n');
    sock.destroy();
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'evil.example', decision: 'audited' }), 1);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'anything.test', protocol: 'connect', decision: 'audited' }), 1);
    assert.equal(total(m, 'meshgate_egress_requests_total', { decision: 'blocked' }), 0);
  });

  test('whatever the mode, the proxy never connects for a client to its own admin port or to link-local addresses', async () => {
    const { dp, port } = await plane(egressConfig({ mode: 'ALLOW_ANY' }, { outbound: [] }));
    const admin = await viaProxy(port, `http://127.0.0.1:${dp.adminPort}/config_dump`);
    assert.equal(admin.status, 502, admin.body);
    assert.match(admin.body, /own port/);
    assert.doesNotMatch(admin.body, /"version"/);
    // By name: refused when the name resolves, inside the connect (no config leaks either way).
    const byName = await viaProxy(port, `http://localhost:${dp.adminPort}/config_dump`);
    assert.equal(byName.status, 503, byName.body);
    assert.doesNotMatch(byName.body, /"version"/);
    const metadata = await viaProxy(port, 'http://169.254.169.254/latest/meta-data/iam/');
    assert.equal(metadata.status, 502);
    assert.match(metadata.body, /link-local/);
    for (const target of ['169.254.169.254:80', '[::ffff:169.254.169.254]:80', '[fe80::1]:443', `127.0.0.1:${dp.adminPort}`]) {
      const refused = await refusedConnect(port, target);
      assert.match(refused, /^HTTP\/1\.1 502/, `${target}: ${refused}`);
    }
  });

  test('ALLOW_ANY lets unknown hosts through, plain and tunnelled', async () => {
    const { dp, port } = await plane(egressConfig({ mode: 'ALLOW_ANY' }));
    const r = await viaProxy(port, `http://anything.test:${web.port}/open`);
    assert.equal(r.status, 200);
    const t = await openTunnel(port, `anything.test:${tlsEcho.port}`);
    assert.equal(t.status, 200);
    const { sock, greeting } = await tlsOver(t, 'anything.test', ca.certPem);
    assert.equal(greeting, 'hello anything.test\n');
    sock.destroy();
    const m = await metrics(dp);
    assert.equal(total(m, 'meshgate_egress_requests_total', { destination_host: 'anything.test', decision: 'allowed' }), 2);
  });

  test('a port with no outbound listener goes to PassthroughCluster: the host:port the request names', async () => {
    const { dp, port } = await plane(egressConfig({ mode: 'ALLOW_ANY' }, { outbound: [] }));
    const r = await viaProxy(port, `http://anything.test:${web.port}/pass`);
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.body) as EchoReply;
    assert.deepEqual([echo.path, echo.authority], ['/pass', `anything.test:${web.port}`]);
    const m = await metrics(dp);
    assert.equal(total(m, 'istio_requests_total', { destination_service_name: 'PassthroughCluster' }), 1);
  });

  test('a request to the proxy itself is refused instead of looping', async () => {
    const { port } = await plane(egressConfig({ mode: 'ALLOW_ANY' }));
    const r = await viaProxy(port, `http://127.0.0.1:${port}/loop`);
    assert.equal(r.status, 502);
    assert.match(r.body, /this forward proxy/);
    const c = parseResponse(await refusedConnect(port, `127.0.0.1:${port}`));
    assert.equal(c.status, 502);
  });

  test('WebSocket upgrades through the proxy are decided like requests', async () => {
    const { port } = await plane();
    const open = (host: string) => new Promise<string>((resolve, reject) => {
      const c = new WebSocket(`ws://${host}:${ws.port}/chat`, { createConnection: () => net.connect(port, '127.0.0.1') });
      c.once('message', (m) => { c.close(); resolve(m.toString()); });
      c.once('unexpected-response', (_req, res) => { c.terminate(); resolve(`status ${res.statusCode}`); });
      c.once('error', reject);
    });
    assert.equal(await open('api.example.com'), 'ws connected /chat');
    assert.equal(await open('evil.example'), 'status 502');
  });

  test('a config without the entry blocks new requests and tunnels at once; an open tunnel keeps working', async () => {
    const { dp, port } = await plane();
    const t = await openTunnel(port, `api.example.com:${tlsEcho.port}`);
    const { sock } = await tlsOver(t, 'api.example.com', ca.certPem);
    const without = egressConfig({ entries: entries().filter((e) => e.source !== 'serviceentry/default/api') });
    await dp.apply(without);
    const r = await viaProxy(port, `http://api.example.com:${web.port}/gone`);
    assert.equal(r.status, 502);
    const c = parseResponse(await refusedConnect(port, `api.example.com:${tlsEcho.port}`));
    assert.equal(c.status, 502);
    sock.write('still here');
    assert.equal(await nextData(sock), 'echo still here');
    sock.destroy();
  });

  test('an egress policy that does not compile rejects the whole version; the previous one keeps serving', async () => {
    const { dp, port } = await plane();
    const version = dp.version;
    const bad = egressConfig({ entries: [...entries(), entry('noproto', ['x.example.com'], [[443, '']])] });
    await assert.rejects(dp.apply(bad), /egress\.policy: serviceentry\/default\/noproto spec\.ports\[0\]\.protocol: port 443 has no protocol/);
    assert.equal(dp.version, version);
    const r = await viaProxy(port, `http://api.example.com:${web.port}/still`);
    assert.equal(r.status, 200);
    const problems = JSON.parse((await h1(dp.adminPort, '/problems')).body);
    assert.match(problems.lastNack.error, /noproto/);
  });

  test('bad CONNECT authorities are 400', async () => {
    const { port } = await plane();
    for (const target of ['evil', 'api.example.com:99999', '[::1', 'api.example.com:0', 'api.example.com:+443', 'a..b:443', '127.1:443', '[::1]x:443']) {
      const text = await raw(port, `CONNECT ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.match(text, /^HTTP\/1\.1 400 /, `CONNECT ${target}: ${text.split('\r\n')[0]}`);
    }
  });

  test('the admin port\'s /egress shows mode, entries and what was decided per host', async () => {
    const { dp, port } = await plane();
    await viaProxy(port, `http://evil.example:${web.port}/`);
    const e = JSON.parse((await h1(dp.adminPort, '/egress')).body);
    assert.deepEqual([e.enabled, e.mode, e.audit, e.entries, e.proxy.port], [true, 'REGISTRY_ONLY', false, 3, port]);
    assert.equal(e.hosts[`evil.example:${web.port}`].blocked, 1);
  });

  test('close() cuts open tunnels after the grace period', async () => {
    const { dp, port } = await plane();
    const t = await openTunnel(port, `127.0.0.1:${tcpEcho.port}`);
    t.socket.write('x');
    assert.equal(await nextData(t.socket), 'tcp x');
    planes.splice(planes.indexOf(dp), 1);
    await dp.close(100);
    await closed(t.socket);
  });
});
