// The egress gateway end to end, as a user runs it: `meshgate pilot --config DIR
// --mesh-config FILE` and `meshgate gateway --labels istio=egressgateway`, workloads using it
// as HTTP_PROXY (absolute-form requests) and HTTPS_PROXY (CONNECT tunnels). There is no
// internet here: the "external" hosts are local servers, reached through `--resolve`, and
// their certificates come from test CAs. Istio's own files (external/*.yaml and
// egress-rule-google-apis.yaml) are copied into the config folder unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import { makeCA, issueCert } from './helpers/certs.ts';
import { startEcho, freePort } from './helpers/upstream.ts';
import { tempDir, eventually } from './helpers/tmp.ts';
import { run, runToEnd, gatewayPorts, portFlags, waitReady, scrape, configDump, ROOT } from './helpers/meshgate.ts';
import { parseProm, total } from './helpers/prometheus.ts';

const SAMPLES = join(ROOT, '..', 'shared', 'istio-samples');
/** www.googleapis.com:443 is what the sample names; a loopback address of its own keeps port 443 free of collisions. */
const GOOGLEAPIS_ADDR = '127.0.44.3';

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

/** A request as curl sends it with HTTP_PROXY set: absolute-form target, to the proxy port. */
function viaProxy(proxyPort: number, url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, method: 'GET', path: url, headers: { host: u.host, ...headers }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** `CONNECT authority`: the proxy's status line and, on 200, the open socket. */
function connect(proxyPort: number, authority: string): Promise<{ status: number; head: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(proxyPort, '127.0.0.1');
    let head = '';
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.removeListener('data', onData);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, socket: s });
    };
    s.on('data', onData);
    s.on('error', reject);
    s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

/** A TLS client over an open tunnel: resolves with what the server answered, or the error that ended it. */
function tlsThrough(socket: net.Socket, servername: string, ca: string): Promise<{ ok: true; reply: string } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const t = tls.connect({ socket, servername, ca }, () => t.write('ping\n'));
    let reply = '';
    t.on('data', (d: Buffer) => { reply += d.toString(); if (reply.includes('\n')) { t.destroy(); resolve({ ok: true, reply: reply.trim() }); } });
    t.on('error', (e) => resolve({ ok: false, error: (e as NodeJS.ErrnoException).code ?? e.message }));
    t.on('close', () => resolve({ ok: false, error: 'closed' }));
  });
}

/** A TLS "external" server answering `hello from <name> sni=<servername>` to each line. */
async function tlsLineServer(name: string, pem: { certPem: string; keyPem: string }, host = '127.0.0.1', port = 0) {
  const seen: string[] = [];
  const server = tls.createServer({ cert: pem.certPem, key: pem.keyPem }, (s) => {
    seen.push(s.servername || '');
    s.on('data', () => s.write(`hello from ${name} sni=${s.servername}\n`));
    s.on('error', () => {});
  });
  let connections = 0;
  server.on('connection', () => { connections++; });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as net.AddressInfo).port, seen, connections: () => connections, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** An HTTPS "external" server (for TLS origination) that echoes what it got. */
async function httpsEcho(name: string, pem: { certPem: string; keyPem: string }, host = '127.0.0.1', port = 0) {
  const got: { path: string; host: string; sni: string }[] = [];
  const server = https.createServer({ cert: pem.certPem, key: pem.keyPem }, (req, res) => {
    got.push({ path: req.url ?? '', host: req.headers.host ?? '', sni: (req.socket as tls.TLSSocket).servername || '' });
    res.setHeader('content-type', 'text/plain');
    res.end(`${name} ${req.url}`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return { port: (server.address() as net.AddressInfo).port, got, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/**
 * `<name>.example.test` as Istio's TLS origination guide sets it up: the workload speaks plain
 * HTTP to port 80, a VirtualService sends it to the server's TLS port, a DestinationRule
 * originates TLS there (verified against the system CAs, or `caFile` when given).
 */
function originateTls(name: string, tlsPort: number, caFile: string | null): string {
  const host = `${name}.example.test`;
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}}
spec:
  hosts: [${host}]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: ${tlsPort}, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${name}}
spec:
  hosts: [${host}]
  http:
  - match: [{port: 80}]
    route: [{destination: {host: ${host}, port: {number: ${tlsPort}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}}
spec:
  host: ${host}
  trafficPolicy:
    tls: {mode: SIMPLE${caFile === null ? '' : `, caCertificates: ${caFile}`}}
`;
}

test('egress gateway: HTTP_PROXY and CONNECT allowlist, Istio samples as written, TLS origination, audit and ALLOW_ANY, removal at run time', async (t) => {
  const trusted = makeCA('trusted external CA');   // the gateway trusts it (NODE_EXTRA_CA_CERTS: a "system" CA)
  const other = makeCA('pinned-only CA');          // trusted only where a DestinationRule names it

  const api = await startEcho({ name: 'api' });
  const secure = await tlsLineServer('secure', issueCert(trusted, 'secure.example.test', { dnsNames: ['secure.example.test'] }));
  const rawTcp = net.createServer((s) => { s.on('data', () => s.end('tcp ok\n')); s.on('error', () => {}); });
  await new Promise<void>((r) => rawTcp.listen(0, '127.0.0.1', () => r()));
  const rawTcpPort = (rawTcp.address() as net.AddressInfo).port;
  let google;
  try {
    google = await httpsEcho('googleapis', issueCert(trusted, 'www.googleapis.com', { dnsNames: ['www.googleapis.com'] }), GOOGLEAPIS_ADDR, 443);
  } catch (e) {
    throw new Error(`binding ${GOOGLEAPIS_ADDR}:443 (what egress-rule-google-apis.yaml names) failed: ${(e as Error).message}. ` +
      'Run the tests as root or allow unprivileged ports (sysctl net.ipv4.ip_unprivileged_port_start=0).');
  }
  const untrusted = await httpsEcho('untrusted', issueCert(other, 'untrusted.example.test', { dnsNames: ['untrusted.example.test'] }));
  const pinned = await httpsEcho('pinned', issueCert(other, 'pinned.example.test', { dnsNames: ['pinned.example.test'] }));

  const dir = await tempDir();
  const state = await tempDir('meshgate-egress-state-');
  await state.write('trusted-ca.pem', trusted.certPem);
  await state.write('other-ca.pem', other.certPem);
  const meshConfig = join(state.path, 'mesh.yaml');
  await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n');

  for (const f of ['aptget.yaml', 'github.yaml', 'pypi.yaml']) await dir.write(`istio-external-${f}`, await readFile(join(SAMPLES, 'external', f), 'utf8'));
  await dir.write('istio-egress-rule-google-apis.yaml', await readFile(join(SAMPLES, 'bookinfo', 'networking', 'egress-rule-google-apis.yaml'), 'utf8'));
  await dir.write('api.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.test]
  ports: [{number: ${api.port}, name: http, protocol: HTTP}]
  resolution: DNS
`);
  await dir.write('secure.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure}
spec:
  hosts: [secure.example.test]
  ports: [{number: ${secure.port}, name: https, protocol: HTTPS}]
  resolution: DNS
`);
  await dir.write('more.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wildcard}
spec:
  hosts: ["*.wild.example.test"]
  ports: [{number: ${api.port}, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: raw-tcp}
spec:
  hosts: [raw-tcp.example.test]
  addresses: [127.0.0.1/32]
  ports: [{number: ${rawTcpPort}, name: tcp, protocol: TCP}]
  resolution: NONE
---
${originateTls('untrusted', untrusted.port, null)}---
${originateTls('pinned', pinned.port, join(state.path, 'other-ca.pem'))}`);
  // Allowed by the allowlist, refused by an AuthorizationPolicy on the egress gateway: the
  // security team's second lock, for plain requests and tunnels alike.
  await dir.write('policy.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: policy-denied}
spec:
  hosts: [denied.example.test]
  ports:
  - {number: ${api.port}, name: http, protocol: HTTP}
  - {number: ${secure.port}, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-denied-example, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: egressgateway}}
  action: DENY
  rules:
  - to: [{operation: {hosts: [denied.example.test]}}]
`);
  // Bad input next to good: each entry is reported and left out, the rest keeps working.
  await dir.write('bad.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: scheme-host}
spec:
  hosts: ["https://bad.example.test"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: maskless-cidr}
spec:
  hosts: [cidr.example.test]
  addresses: ["10.0.0.0/"]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: no-protocol}
spec:
  hosts: [noproto.example.test]
  ports: [{number: 8080, name: web}]
  resolution: DNS
`);

  const discovery = await freePort();
  const debug = await freePort();
  const pilot = run(['pilot', '--config', dir.path, '--mesh-config', meshConfig, '--discovery-port', String(discovery), '--debug-port', String(debug)]);
  const ports = await gatewayPorts();
  const proxyPort = await freePort();
  const resolveFlags = ['denied.example.test', 'api.example.test', 'a.wild.example.test', 'secure.example.test', 'untrusted.example.test', 'pinned.example.test', 'evil.example.test']
    .flatMap((h) => ['--resolve', `${h}=127.0.0.1`]);
  const gateway = run([
    'gateway', '--pilot', `127.0.0.1:${discovery}`, '--labels', 'istio=egressgateway', '--id', 'egress-1', '--concurrency', '1',
    '--proxy-port', String(proxyPort), ...resolveFlags, '--resolve', `www.googleapis.com=${GOOGLEAPIS_ADDR}`, ...portFlags(ports),
  ], { env: { NODE_EXTRA_CA_CERTS: join(state.path, 'trusted-ca.pem') } });
  t.after(async () => {
    await Promise.all([pilot.stop(), gateway.stop()]);
    await Promise.all([api.close(), secure.close(), google.close(), untrusted.close(), pinned.close(), new Promise<void>((r) => rawTcp.close(() => r()))]);
    await dir.cleanup();
    await state.cleanup();
  });
  await waitReady(gateway, ports.health);
  await eventually(async () => (await configDump(ports.admin)).config?.egress !== undefined, 5000, 'egress config pushed');

  await t.test('an allowed host is proxied; its Host is the absolute-form authority', async () => {
    const r = await viaProxy(proxyPort, `http://api.example.test:${api.port}/hello?x=1`, { 'proxy-connection': 'keep-alive' });
    assert.equal(r.status, 200, r.body);
    const got = api.received.at(-1)!;
    assert.equal(got.path, '/hello?x=1');
    assert.equal(got.authority, `api.example.test:${api.port}`);
    assert.equal(got.headers['proxy-connection'], undefined, 'hop-by-hop proxy header not forwarded');
  });

  await t.test('a host no ServiceEntry names gets 502 naming the host and why', async () => {
    const before = api.received.length;
    const r = await viaProxy(proxyPort, `http://evil.example.test:${api.port}/steal`);
    assert.equal(r.status, 502);
    assert.match(r.body, /evil\.example\.test/);
    assert.match(r.body, /ServiceEntry|not allowed|no /i);
    assert.equal(api.received.length, before, 'nothing reached the server');
  });

  await t.test('a wildcard ServiceEntry host allows its subdomains', async () => {
    const r = await viaProxy(proxyPort, `http://a.wild.example.test:${api.port}/w`);
    assert.equal(r.status, 200, r.body);
    assert.equal(api.received.at(-1)!.authority, `a.wild.example.test:${api.port}`);
  });

  await t.test('an allowed host on a port its ServiceEntry does not list is blocked', async () => {
    const r = await viaProxy(proxyPort, 'http://api.example.test:9/');
    assert.equal(r.status, 502);
    assert.match(r.body, /api\.example\.test/);
    assert.match(r.body, /\b9\b/);
  });

  await t.test('CONNECT with the allowed SNI tunnels TLS to the server', async () => {
    const c = await connect(proxyPort, `secure.example.test:${secure.port}`);
    assert.equal(c.status, 200, c.head);
    const r = await tlsThrough(c.socket, 'secure.example.test', trusted.certPem);
    assert.deepEqual(r, { ok: true, reply: 'hello from secure sni=secure.example.test' });
  });

  await t.test('CONNECT to an allowed name carrying another SNI is cut before any byte reaches the server', async () => {
    const before = secure.connections();
    const c = await connect(proxyPort, `secure.example.test:${secure.port}`);
    const r = await tlsThrough(c.socket, 'evil.example.test', trusted.certPem);
    assert.equal(r.ok, false);
    assert.equal(secure.connections(), before, 'the proxy never connected to the server');
  });

  await t.test('an AuthorizationPolicy on the egress gateway refuses plain requests and tunnels the allowlist would let through', async () => {
    const before = api.received.length;
    const plain = await viaProxy(proxyPort, `http://denied.example.test:${api.port}/x`);
    assert.equal(plain.status, 403, plain.body);
    assert.equal(plain.body, 'RBAC: access denied');
    assert.equal(api.received.length, before);
    const tunnel = await connect(proxyPort, `denied.example.test:${secure.port}`);
    assert.equal(tunnel.status, 403, tunnel.head);
    assert.match(tunnel.head, /RBAC: access denied/);
    tunnel.socket.destroy();
  });

  await t.test('CONNECT to a host not allowed is refused with 502', async () => {
    const c = await connect(proxyPort, 'evil.example.test:443');
    assert.equal(c.status, 502, c.head);
    assert.match(c.head, /evil\.example\.test/);
    c.socket.destroy();
  });

  await t.test('CONNECT to an address allowed by a TCP entry (addresses) tunnels plain TCP', async () => {
    const c = await connect(proxyPort, `127.0.0.1:${rawTcpPort}`);
    assert.equal(c.status, 200, c.head);
    const reply = await new Promise<string>((resolve) => {
      let got = '';
      c.socket.on('data', (d: Buffer) => { got += d.toString(); });
      c.socket.on('close', () => resolve(got));
      c.socket.write('hi\n');
    });
    assert.equal(reply, 'tcp ok\n');
  });

  await t.test('egress-rule-google-apis.yaml as written: plain HTTP on 80 leaves as TLS to 443 (system CAs)', async () => {
    const r = await viaProxy(proxyPort, 'http://www.googleapis.com/storage/v1/b');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, 'googleapis /storage/v1/b');
    assert.deepEqual(google.got.at(-1), { path: '/storage/v1/b', host: 'www.googleapis.com', sni: 'www.googleapis.com' });
  });

  await t.test('TLS origination refuses a server the CAs do not vouch for, and accepts it with caCertificates', async () => {
    const bad = await viaProxy(proxyPort, 'http://untrusted.example.test/x');
    assert.equal(bad.status, 503, bad.body);
    assert.equal(untrusted.got.length, 0, 'no request was sent over the unverified connection');
    const good = await viaProxy(proxyPort, 'http://pinned.example.test/y');
    assert.equal(good.status, 200, good.body);
    assert.equal(good.body, 'pinned /y');
    assert.equal(pinned.got.at(-1)!.sni, 'pinned.example.test');
  });

  await t.test('bad ServiceEntries are reported by name and field; the good ones keep working', async () => {
    const problems = await eventually(async () => {
      const r = await fetch(`http://127.0.0.1:${debug}/debug/problems`);
      const list = (await r.json()) as string[];
      return list.filter((l) => /scheme-host|maskless-cidr|no-protocol/.test(l)).length >= 3 ? list : null;
    }, 5000, 'problems for the three bad ServiceEntries');
    assert.ok(problems.some((l) => /scheme-host.*spec\.hosts\[0\].*scheme/.test(l)), problems.join('\n'));
    assert.ok(problems.some((l) => /maskless-cidr.*spec\.addresses\[0\]/.test(l)), problems.join('\n'));
    assert.ok(problems.some((l) => /no-protocol.*spec\.ports\[0\]\.protocol/.test(l)), problems.join('\n'));
    const analyze = await runToEnd(['analyze', dir.path]);
    assert.match(analyze.stdout + analyze.stderr, /scheme-host/);
  });

  await t.test('blocked and allowed destinations are counted per host', async () => {
    const m = parseProm(await scrape(ports.metrics));
    assert.ok(total(m, 'meshgate_egress_requests_total', { destination_host: 'evil.example.test', decision: 'blocked' }) >= 2);
    assert.ok(total(m, 'meshgate_egress_requests_total', { destination_host: 'api.example.test', decision: 'allowed' }) >= 1);
  });

  await t.test('audit mode lets a blocked host through and counts it as audited; ALLOW_ANY lets it through', async () => {
    await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nmeshgate:\n  egressAudit: true\n');
    await eventually(async () => (await configDump(ports.admin)).config?.egress?.policy.audit === true, 5000, 'audit mode pushed');
    const r = await viaProxy(proxyPort, `http://evil.example.test:${api.port}/audited`);
    assert.equal(r.status, 200, r.body);
    const m = parseProm(await scrape(ports.metrics));
    assert.ok(total(m, 'meshgate_egress_requests_total', { destination_host: 'evil.example.test', decision: 'audited' }) >= 1);
    assert.ok(gateway.logs().some((l) => JSON.stringify(l).includes('evil.example.test') && /would/i.test(JSON.stringify(l))), 'the log says what would have been blocked');

    await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: ALLOW_ANY\n');
    await eventually(async () => (await configDump(ports.admin)).config?.egress?.policy.mode === 'ALLOW_ANY', 5000, 'ALLOW_ANY pushed');
    const any = await viaProxy(proxyPort, `http://evil.example.test:${api.port}/any`);
    assert.equal(any.status, 200, any.body);

    await state.write('mesh.yaml', 'outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n');
    await eventually(async () => (await viaProxy(proxyPort, `http://evil.example.test:${api.port}/again`)).status === 502, 5000, 'REGISTRY_ONLY again');
  });

  await t.test('a ServiceEntry removed at run time blocks new requests and tunnels; an open tunnel keeps working', async () => {
    const open = await connect(proxyPort, `secure.example.test:${secure.port}`);
    assert.equal(open.status, 200);
    const tlsSock = tls.connect({ socket: open.socket, servername: 'secure.example.test', ca: trusted.certPem });
    await new Promise<void>((resolve, reject) => { tlsSock.once('secureConnect', () => resolve()); tlsSock.once('error', reject); });

    const removedAt = Date.now();
    await dir.remove('api.yaml');
    await dir.remove('secure.yaml');
    await eventually(async () => (await viaProxy(proxyPort, `http://api.example.test:${api.port}/gone`)).status === 502, 5000, 'api.example.test blocked after its ServiceEntry was removed');
    t.diagnostic(`blocked ${Date.now() - removedAt} ms after the file was removed`);
    const c = await connect(proxyPort, `secure.example.test:${secure.port}`);
    assert.equal(c.status, 502, 'a new tunnel to the removed host is refused');
    c.socket.destroy();

    const reply = await new Promise<string>((resolve, reject) => {
      tlsSock.once('data', (d: Buffer) => resolve(d.toString().trim()));
      tlsSock.once('error', reject);
      tlsSock.write('still there?\n');
    });
    assert.equal(reply, 'hello from secure sni=secure.example.test');
    tlsSock.destroy();
  });
});
