// Mirroring: the shadow cluster gets a copy (authority suffixed -shadow); the main request
// neither waits for it nor suffers from its failures.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { createUpstreams } from './index.ts';
import { shadowAuthority } from './mirror.ts';
import { startEcho, freePort } from '../../test/helpers/upstream.ts';
import type { EchoReply } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';

async function until(cond: () => boolean, ms = 1000): Promise<void> {
  for (const t0 = Date.now(); !cond() && Date.now() - t0 < ms;) await new Promise((r) => setTimeout(r, 10));
}

describe('mirror', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('-shadow goes on the host, before any port', () => {
    assert.equal(shadowAuthority('reviews.example.com'), 'reviews.example.com-shadow');
    assert.equal(shadowAuthority('reviews:9080'), 'reviews-shadow:9080');
    assert.equal(shadowAuthority('[::1]:80'), '[::1]-shadow:80');
  });

  test('the mirror receives a copy with the -shadow authority; the client gets the main response', async () => {
    const main = await startEcho({ name: 'main' });
    const shadow = await startEcho({ name: 'shadow' });
    const ups = createUpstreams();
    ups.update([makeCluster('main', [main.port]), makeCluster('shadow', [shadow.port])]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'main', mirror: 'shadow', bufferBody: true });
    closers.push(() => main.close(), () => shadow.close(), () => ups.close(), () => ds.close());
    const r = await get(`${ds.url}/orders?id=7`, { method: 'POST', headers: { host: 'shop.example.com', 'x-k': 'v' }, body: 'order-body' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upstream'], 'main');
    await until(() => shadow.received.length === 1);
    const copy: EchoReply = shadow.received[0];
    assert.equal(copy.authority, 'shop.example.com-shadow');
    assert.equal(copy.path, '/orders?id=7');
    assert.equal(copy.method, 'POST');
    assert.equal(copy.body, 'order-body');
    assert.equal(copy.headers['x-k'], 'v');
    assert.equal(main.received[0].authority, 'shop.example.com', 'the main request keeps its authority');
  });

  test('a slow or dead mirror neither delays nor fails the main request; its errors are counted', async () => {
    const main = await startEcho({ name: 'main' });
    const slow = await startEcho({ name: 'slow', handler: (_req, res) => { setTimeout(() => res.end('late'), 2000).unref(); return true; } });
    const ups = createUpstreams();
    ups.update([makeCluster('main', [main.port]), makeCluster('slow', [slow.port]), makeCluster('dead', [await freePort()])]);
    const viaSlow = await startDownstream({ upstreams: ups, cluster: 'main', mirror: 'slow', bufferBody: true });
    const viaDead = await startDownstream({ upstreams: ups, cluster: 'main', mirror: 'dead', bufferBody: true });
    // The slow upstream closes first, so the mirror still waiting on it ends at once.
    closers.push(() => main.close(), () => ups.close(), () => slow.close(), () => viaSlow.close(), () => viaDead.close());

    const t0 = Date.now();
    const r1 = await get(viaSlow.url);
    assert.equal(r1.status, 200);
    assert.ok(Date.now() - t0 < 1000, 'not held up by the mirror');
    const r2 = await get(viaDead.url);
    assert.equal(r2.status, 200);
    const snap = () => ups.snapshot() as Record<string, { mirrorsSent: number; mirrorErrors: number }>;
    await until(() => snap().dead.mirrorErrors === 1);
    assert.deepEqual([snap().dead.mirrorsSent, snap().dead.mirrorErrors], [1, 1]);
  });
});
