// Config updates: in-flight requests survive a cluster being replaced or removed; unchanged
// clusters keep their connections and ejections; removed clusters close once drained.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { createUpstreams } from './index.ts';
import { startEcho } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';

/** An upstream that answers after `x-delay` ms and reports its open connections. */
async function countingServer(name: string) {
  const open = new Set<Socket>();
  let connections = 0;
  const server = http.createServer((req, res) => {
    setTimeout(() => { res.setHeader('x-upstream', name); res.end(`${name} done`); }, Number(req.headers['x-delay'] ?? 0));
  });
  server.on('connection', (s: Socket) => { connections++; open.add(s); s.on('close', () => open.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    open,
    get connections() { return connections; },
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  for (const t0 = Date.now(); !cond() && Date.now() - t0 < ms;) await new Promise((r) => setTimeout(r, 10));
  return cond();
}

describe('update()', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('a request in flight finishes when its cluster is replaced, and the next goes to the new endpoints', async () => {
    const v1 = await countingServer('v1');
    const v2 = await countingServer('v2');
    const ups = createUpstreams();
    ups.update([makeCluster('c', [v1.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => v1.close(), () => v2.close(), () => ups.close(), () => ds.close());

    const slow = get(ds.url, { headers: { 'x-delay': '200' } });
    await until(() => v1.connections === 1);
    ups.update([makeCluster('c', [v2.port])]);
    const quick = await get(ds.url);
    assert.equal(quick.body, 'v2 done');
    const r = await slow;
    assert.equal(r.status, 200);
    assert.equal(r.body, 'v1 done', 'not cut by the update');
    assert.ok(await until(() => v1.open.size === 0), 'the replaced cluster closed its connections once drained');
  });

  test('a request in flight finishes when its cluster is removed; new requests get NC', async () => {
    const v1 = await countingServer('v1');
    const ups = createUpstreams();
    ups.update([makeCluster('gone', [v1.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'gone' });
    closers.push(() => v1.close(), () => ups.close(), () => ds.close());

    const slow = get(ds.url, { headers: { 'x-delay': '200' } });
    await until(() => v1.connections === 1);
    ups.update([]);
    const after = await get(ds.url);
    assert.equal(after.status, 503);
    assert.equal((await slow).body, 'v1 done');
    assert.ok(await until(() => v1.open.size === 0));
    const results = [await ds.nextResult(), await ds.nextResult()];
    assert.deepEqual(results.map((x) => x.flags.join()).sort(), ['', 'NC']);
  });

  test('an unchanged cluster keeps its connections and its ejections; a changed one starts fresh', async () => {
    const srv = await countingServer('s');
    const bad = await startEcho({ handler: (_req, res) => { res.statusCode = 503; res.end(); return true; } });
    const od = { consecutive5xx: 1, consecutiveGatewayErrors: 0, intervalMs: 1000, baseEjectionMs: 60_000, maxEjectionPercent: 100, minHealthPercent: 0 };
    const defs = () => [makeCluster('keep', [srv.port]), makeCluster('flaky', [bad.port, srv.port], { outlierDetection: od })];
    const ups = createUpstreams();
    ups.update(defs());
    const ds = await startDownstream({ upstreams: ups, cluster: (req) => String(req.headers['x-cluster']) });
    closers.push(() => srv.close(), () => bad.close(), () => ups.close(), () => ds.close());

    await get(ds.url, { headers: { 'x-cluster': 'keep' } });
    for (let i = 0; i < 2; i++) await get(ds.url, { headers: { 'x-cluster': 'flaky' } });
    type Snap = Record<string, { endpoints: { ejected: boolean }[] }>;
    assert.deepEqual((ups.snapshot() as Snap).flaky.endpoints.map((e) => e.ejected), [true, false]);
    const conns = srv.connections;

    ups.update(defs());
    await get(ds.url, { headers: { 'x-cluster': 'keep' } });
    assert.equal(srv.connections, conns, 'same pool, same keep-alive connection');
    assert.deepEqual((ups.snapshot() as Snap).flaky.endpoints.map((e) => e.ejected), [true, false], 'ejection kept');

    ups.update([makeCluster('keep', [srv.port]), makeCluster('flaky', [bad.port, srv.port], { outlierDetection: { ...od, baseEjectionMs: 30_000 } })]);
    assert.deepEqual((ups.snapshot() as Snap).flaky.endpoints.map((e) => e.ejected), [false, false], 'a changed cluster starts fresh');
  });
});
