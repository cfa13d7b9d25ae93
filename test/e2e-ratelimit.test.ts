// Rate limits through real processes: a local limit in `meshgate up`, and a global limit
// shared by two gateway processes through a real redis-server — which is then killed (no
// 5xx, the in-memory insurance limiter takes over) and brought back (shared counting resumes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { edgeGateway, loopbackService } from './helpers/config.ts';
import { startEcho, freePort } from './helpers/upstream.ts';
import { tempDir, eventually } from './helpers/tmp.ts';
import { run, gatewayPorts, portFlags, waitReady } from './helpers/meshgate.ts';
import { startRedis } from './helpers/redis.ts';

const config = (port: number, upstream: number, mode: 'local' | 'global', requests: number) => `${edgeGateway(port)}---
${loopbackService('api', 'api.internal', upstream)}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  http:
  - name: limited
    match: [{uri: {prefix: /limited}}]
    route: [{destination: {host: api.internal}}]
  - route: [{destination: {host: api.internal}}]
---
apiVersion: meshgate.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: api, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  routes: [limited]
  mode: ${mode}
  rules:
  - name: per-client
    limit: {requests: ${requests}, per: minute}
    key: [{header: x-client}]
`;

async function hit(port: number, client = 'a'): Promise<{ status: number; headers: Headers }> {
  const r = await fetch(`http://127.0.0.1:${port}/limited`, { headers: { 'x-client': client } });
  await r.arrayBuffer();
  return { status: r.status, headers: r.headers };
}

test('local limit: N per minute pass, then 429 with Retry-After and RateLimit-* headers; other routes unaffected', async (t) => {
  const up = await startEcho();
  const dir = await tempDir();
  const port = await freePort();
  await dir.write('c.yaml', config(port, up.port, 'local', 5));
  const ports = await gatewayPorts();
  const proc = run(['up', '--config', dir.path, ...portFlags(ports),
    '--discovery-port', String(await freePort()), '--debug-port', String(await freePort())]);
  t.after(async () => { await proc.stop(); await up.close(); await dir.cleanup(); });
  await waitReady(proc, ports.health);

  const statuses: number[] = [];
  let last: Headers | null = null;
  for (let i = 0; i < 8; i++) {
    const r = await hit(port);
    statuses.push(r.status);
    last = r.headers;
    if (i === 0) {
      assert.equal(r.headers.get('ratelimit-limit'), '5');
      assert.equal(r.headers.get('ratelimit-remaining'), '4');
    }
  }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
  assert.ok(Number(last!.get('retry-after')) > 0, 'Retry-After on 429');
  assert.equal(last!.get('ratelimit-remaining'), '0');
  assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 200, 'a route the policy does not name is not limited');
});

test('global limit: two gateway processes share N through Redis; Redis down → no 5xx; Redis back → shared again', async (t) => {
  const redis = await startRedis();
  const up = await startEcho();
  const dir = await tempDir();
  const gatewayPort = await freePort();
  await dir.write('c.yaml', config(gatewayPort, up.port, 'global', 10));
  const discovery = await freePort();
  const pilot = run(['pilot', '--config', dir.path, '--discovery-port', String(discovery), '--debug-port', String(await freePort())]);
  const local = [await freePort(), await freePort()];
  const gws = await Promise.all(local.map(async (p, i) => {
    const ports = await gatewayPorts();
    const proc = run(['gateway', '--pilot', `127.0.0.1:${discovery}`, '--concurrency', '1', '--port-map', `${gatewayPort}:${p}`,
      '--redis', redis.url, '--replicas', '2', '--id', `gw-${i}`, ...portFlags(ports)]);
    return { proc, ports, port: p };
  }));
  t.after(async () => {
    await Promise.all([pilot.stop(), ...gws.map((g) => g.proc.stop())]);
    await redis.stop();
    await up.close();
    await dir.cleanup();
  });
  for (const g of gws) await waitReady(g.proc, g.ports.health);
  const redisState = async (admin: number) => ((await (await fetch(`http://127.0.0.1:${admin}/problems`)).json()) as { policies: { rateLimits: { redis: { state: string } } } }).policies.rateLimits.redis.state;
  for (const g of gws) await eventually(async () => (await redisState(g.ports.admin)) === 'up', 5000, 'gateway connected to Redis');

  // 1. Shared: 16 requests alternating between the two gateways, 10 pass in total.
  // Each phase uses a client of its own: a counter exhausted in one phase stays exhausted
  // for the rest of its window, wherever it is counted.
  const round = async (n: number, client: string) => {
    const counts = { ok: 0, limited: 0, other: 0 };
    for (let i = 0; i < n; i++) {
      const r = await hit(gws[i % 2].port, client);
      if (r.status === 200) counts.ok++; else if (r.status === 429) counts.limited++; else counts.other++;
    }
    return counts;
  };
  assert.deepEqual(await round(16, 'first'), { ok: 10, limited: 6, other: 0 });

  // 2. Redis dies: every request still gets an answer, never a 5xx; each replica allows its
  //    share (10 / 2 replicas) from memory.
  await redis.kill();
  const down = await round(16, 'second');
  assert.equal(down.other, 0, 'no 5xx while Redis is down');
  assert.equal(down.ok, 10, `each replica allows its half of the limit from memory: ${down.ok} passed`);
  for (const g of gws) await eventually(async () => (await redisState(g.ports.admin)) !== 'up', 5000, 'gateway reports Redis down');

  // 3. Redis is back (empty): the gateways reconnect and count together again.
  await redis.restart();
  for (const g of gws) await eventually(async () => (await redisState(g.ports.admin)) === 'up', 10_000, 'gateway reconnected to Redis');
  assert.deepEqual(await round(16, 'third'), { ok: 10, limited: 6, other: 0 });
});
