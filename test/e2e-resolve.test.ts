// `--resolve host=addr`: a ServiceEntry with `resolution: DNS` for a name no DNS server
// knows is reached through the pinned address, by the first process and by every
// --concurrency worker (the overrides travel to them; a worker without them would answer
// 503 to the connections the kernel gives it). With `--egress`, the workers also serve the
// forward proxy, on the port the first process bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { edgeGateway } from './helpers/config.ts';
import { startEcho, freePort } from './helpers/upstream.ts';
import type { EchoReply } from './helpers/upstream.ts';
import { tempDir, eventually } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady } from './helpers/meshgate.ts';

const config = (port: number, upstream: number) => `${edgeGateway(port)}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api}
spec:
  hosts: [api.example.test]
  location: MESH_EXTERNAL
  ports: [{number: ${upstream}, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - route: [{destination: {host: api.example.test, port: {number: ${upstream}}}}]
`;

/** One request on a fresh connection, so the kernel picks a process for each. */
function freshGet(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/pinned', agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

test('up --resolve --concurrency 2: a DNS ServiceEntry host reaches the pinned address from every process', async (t) => {
  const upstream = await startEcho({ name: 'api' });
  const dir = await tempDir();
  const port = await freePort();
  await dir.write('c.yaml', config(port, upstream.port));
  const ports = await gatewayPorts();
  const proc = run(['up', '--config', dir.path, ...portFlags(ports), '--concurrency', '2',
    '--discovery-port', String(await freePort()), '--debug-port', String(await freePort()),
    '--resolve', 'api.example.test=127.0.0.1']);
  t.after(async () => { await proc.stop(); await upstream.close(); await dir.cleanup(); });
  await waitReady(proc, ports.health);

  // 40 fresh connections: with two processes on the port, both serve some of them.
  for (let i = 0; i < 40; i++) {
    const r = await freshGet(port);
    assert.equal(r.status, 200, `request ${i}: ${r.body}\n${proc.output()}`);
    assert.equal((JSON.parse(r.body) as EchoReply).path, '/pinned');
  }
  assert.equal(upstream.received.length, 40);

  const clusters = await (await fetch(`http://127.0.0.1:${ports.admin}/clusters`)).json() as Record<string, { endpoints: { address: string }[] }>;
  const name = `outbound|${upstream.port}||api.example.test`;
  assert.deepEqual(clusters[name]?.endpoints.map((e) => e.address), [`api.example.test:${upstream.port}`], JSON.stringify(clusters));
});

/** Listening TCP sockets on `port` (IPv4), one per process that bound it with SO_REUSEPORT. */
function listeners(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').filter((l) => {
    const f = l.trim().split(/\s+/);
    return f[1]?.endsWith(hex) && f[3] === '0A';
  }).length;
}

/** A plain HTTP request through the forward proxy (absolute-form), on a fresh connection. */
function viaProxy(proxyPort: number, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, path: url, headers: { host: new URL(url).host, connection: 'close' }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

test('up --egress --proxy-port 0 --concurrency 2: every process serves the forward proxy on the one ephemeral port, with the pins', async (t) => {
  const upstream = await startEcho({ name: 'api' });
  const dir = await tempDir();
  await dir.write('c.yaml', config(await freePort(), upstream.port));
  const ports = await gatewayPorts();
  const proc = run(['up', '--config', dir.path, ...portFlags(ports), '--concurrency', '2',
    '--discovery-port', String(await freePort()), '--debug-port', String(await freePort()),
    '--egress', '--proxy-port', '0', '--proxy-address', '127.0.0.1', '--resolve', 'api.example.test=127.0.0.1']);
  t.after(async () => { await proc.stop(); await upstream.close(); await dir.cleanup(); });
  await waitReady(proc, ports.health);
  const egress = await eventually(async () => {
    const e = await (await fetch(`http://127.0.0.1:${ports.admin}/egress`)).json() as { proxy: { port: number } | null };
    return e.proxy?.port;
  }, 5000, 'the forward proxy port');
  await eventually(() => listeners(egress) === 2, 5000, 'both processes listening on the forward proxy port');

  for (let i = 0; i < 40; i++) {
    const r = await viaProxy(egress, `http://api.example.test:${upstream.port}/through-proxy`);
    assert.equal(r.status, 200, `request ${i}: ${r.body}\n${proc.output()}`);
    assert.equal((JSON.parse(r.body) as EchoReply).path, '/through-proxy');
  }
  const blocked = await viaProxy(egress, `http://elsewhere.example.test:${upstream.port}/`);
  assert.equal(blocked.status, 502);
});
