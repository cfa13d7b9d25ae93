// `gateway --concurrency N`: N processes share the listen sockets, all run the same
// config version, a push reaches all of them, and a worker that dies is replaced.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync, readdirSync } from 'node:fs';
import { edgeGateway, loopbackService } from './helpers/config.ts';
import { startEcho, freePort } from './helpers/upstream.ts';
import { tempDir, eventually } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, scrape, waitReady } from './helpers/meshgate.ts';

const config = (port: number, upstream: number, tag: string) => `${edgeGateway(port)}---
${loopbackService('app', 'app.internal', upstream)}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - route: [{destination: {host: app.internal}}]
    headers: {response: {set: {x-version: ${tag}}}}
`;

/** One request on a fresh connection, so the kernel picks a process for each. */
function freshGet(port: number): Promise<{ status: number; version: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, version: String(res.headers['x-version']) }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

test('gateway --concurrency 3: every process serves the pushed version, and a dead worker is replaced', async (t) => {
  const up = await startEcho({ name: 'app' });
  const dir = await tempDir();
  const port = await freePort();
  await dir.write('c.yaml', config(port, up.port, 'one'));
  const discovery = await freePort();
  const pilot = run(['pilot', '--config', dir.path, '--discovery-port', String(discovery), '--debug-port', String(await freePort())]);
  const ports = await gatewayPorts();
  const gw = run(['gateway', '--pilot', `127.0.0.1:${discovery}`, '--concurrency', '3', ...portFlags(ports)]);
  t.after(async () => {
    await Promise.all([gw.stop(), pilot.stop()]);
    await up.close();
    await dir.cleanup();
  });
  await waitReady(gw, ports.health);
  // The shell wrapper execs node, so the spawned pid is the first gateway process.
  const workers = await eventually(() => (childrenOf(gw.child.pid!).length === 2 ? childrenOf(gw.child.pid!) : null), 5000, 'two worker processes');

  const versions = async (n: number) => {
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const r = await freshGet(port);
      assert.equal(r.status, 200);
      seen.set(r.version, (seen.get(r.version) ?? 0) + 1);
    }
    return seen;
  };
  assert.deepEqual([...(await versions(60)).keys()], ['one']);

  // A push reaches every process: no connection may land on a process still on the old version.
  await dir.write('c.yaml', config(port, up.port, 'two'));
  await eventually(async () => (await freshGet(port)).version === 'two', 5000, 'new version');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual([...(await versions(60)).keys()], ['two'], 'all processes run the new version');

  // A worker killed outright is replaced, and the replacement runs the current version.
  process.kill(workers[0], 'SIGKILL');
  await eventually(() => {
    const now = childrenOf(gw.child.pid!);
    return now.length === 2 && !now.includes(workers[0]);
  }, 5000, 'replacement worker');
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual([...(await versions(60)).keys()], ['two']);
  assert.match(gw.output(), /gateway worker exited; starting a new one/);
});

test('gateway --concurrency 2 as egress gateway: the admin port\'s /egress counts every process\'s decisions', async (t) => {
  const api = await startEcho({ name: 'api' });
  const dir = await tempDir();
  await dir.write('se.yaml', `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.test]
  ports: [{number: ${api.port}, name: http, protocol: HTTP}]
  resolution: DNS
`);
  const discovery = await freePort();
  const proxyPort = await freePort();
  const pilot = run(['pilot', '--config', dir.path, '--discovery-port', String(discovery), '--debug-port', String(await freePort())]);
  const ports = await gatewayPorts();
  const gw = run(['gateway', '--pilot', `127.0.0.1:${discovery}`, '--labels', 'istio=egressgateway', '--concurrency', '2',
    '--proxy-port', String(proxyPort), '--resolve', 'api.example.test=127.0.0.1', ...portFlags(ports)]);
  t.after(async () => {
    await Promise.all([gw.stop(), pilot.stop()]);
    await api.close();
    await dir.cleanup();
  });
  await waitReady(gw, ports.health);
  await eventually(() => (childrenOf(gw.child.pid!).length === 1 ? true : null), 5000, 'one worker process');

  // Fresh connections: the kernel spreads them over both processes (all 30 on one: 2 in 2^30).
  const proxied = (host: string) => new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, path: `http://${host}/x`, headers: { host, connection: 'close' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
  await eventually(async () => (await proxied(`api.example.test:${api.port}`)) === 200, 5000, 'egress allowlist applied');
  const before = await egressCounts(ports.admin, `api.example.test:${api.port}`);
  for (let i = 0; i < 30; i++) assert.equal(await proxied(`api.example.test:${api.port}`), 200);
  for (let i = 0; i < 10; i++) assert.equal(await proxied('blocked.example.test'), 502);
  const after = await egressCounts(ports.admin, `api.example.test:${api.port}`);
  assert.equal(after.processes, 2);
  assert.equal(after.allowed - before.allowed, 30);
  const blocked = await egressCounts(ports.admin, 'blocked.example.test:80');
  assert.equal(blocked.blocked, 10);
  // The same totals as Prometheus, which has always summed the processes.
  const prom = await scrape(ports.metrics);
  const line = prom.split('\n').find((l) => l.startsWith('meshgate_egress_requests_total{') && l.includes('destination_host="blocked.example.test"') && l.includes('decision="blocked"'));
  assert.ok(line !== undefined && Number(line.split(' ').at(-1)) === 10, line);
});

async function egressCounts(admin: number, hostPort: string): Promise<{ processes: number; allowed: number; blocked: number }> {
  const r = await fetch(`http://127.0.0.1:${admin}/egress`);
  const j = await r.json() as { processes: number; hosts: Record<string, { allowed: number; blocked: number }> };
  const row = j.hosts[hostPort] ?? { allowed: 0, blocked: 0 };
  return { processes: j.processes, allowed: row.allowed, blocked: row.blocked };
}
