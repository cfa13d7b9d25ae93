// Outlier detection rules (unit) and ejection seen through forward() (integration).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { EndpointState } from './endpoint.ts';
import { Candidates } from './lb.ts';
import { OutlierDetector } from './outlier.ts';
import { createUpstreams } from './index.ts';
import type { OutlierDetectionPolicy } from '../../api/proxyconfig.ts';
import { startEcho } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';

const policy = (over: Partial<OutlierDetectionPolicy> = {}): OutlierDetectionPolicy => ({
  consecutive5xx: 0, consecutiveGatewayErrors: 0, intervalMs: 0, baseEjectionMs: 1000, maxEjectionPercent: 100, minHealthPercent: 0, ...over,
});

function setup(n: number, p: OutlierDetectionPolicy): { e: EndpointState[]; d: OutlierDetector } {
  const e = Array.from({ length: n }, (_, i) => new EndpointState({ address: `10.0.0.${i}`, port: 80, labels: {}, weight: 1 }, i));
  const d = new OutlierDetector(p, new Candidates(e));
  return { e, d };
}

describe('outlier detection rules', () => {
  test('consecutive 5xx ejects; a success in between resets the count', () => {
    const { e, d } = setup(3, policy({ consecutive5xx: 3 }));
    d.recordStatus(e[0], 500); d.recordStatus(e[0], 500); d.recordStatus(e[0], 200);
    d.recordStatus(e[0], 500); d.recordStatus(e[0], 500);
    assert.equal(e[0].ejected, false);
    d.recordStatus(e[0], 500);
    assert.equal(e[0].ejected, true);
    assert.deepEqual(d.c.list, [e[1], e[2]]);
  });

  test('gateway errors count 502/503/504 and connect failures, not 500', () => {
    const { e, d } = setup(3, policy({ consecutiveGatewayErrors: 2 }));
    d.recordStatus(e[0], 502); d.recordStatus(e[0], 500);
    assert.equal(e[0].ejected, false);
    d.recordStatus(e[0], 503); d.recordLocalFailure(e[0]);
    assert.equal(e[0].ejected, true);
  });

  test('ejection time grows with each ejection; un-ejection on the interval', () => {
    const { e, d } = setup(2, policy({ consecutive5xx: 1, baseEjectionMs: 100 }));
    d.tryEject(e[0], 1000);
    assert.equal(e[0].ejectedUntil, 1100);
    d.tick(1099);
    assert.equal(e[0].ejected, true);
    d.tick(1100);
    assert.equal(e[0].ejected, false);
    d.tryEject(e[0], 1100);
    assert.equal(e[0].ejectedUntil, 1300, 'second ejection lasts twice the base');
  });

  test('maxEjectionPercent caps ejections but always allows one', () => {
    const { e, d } = setup(4, policy({ consecutive5xx: 1, maxEjectionPercent: 10 }));
    d.recordStatus(e[0], 500);
    d.recordStatus(e[1], 500);
    assert.deepEqual(e.map((x) => x.ejected), [true, false, false, false]);
    const half = setup(4, policy({ consecutive5xx: 1, maxEjectionPercent: 50 }));
    for (const x of half.e) half.d.recordStatus(x, 500);
    assert.equal(half.e.filter((x) => x.ejected).length, 2);
    const none = setup(4, policy({ consecutive5xx: 1, maxEjectionPercent: 0 }));
    none.d.recordStatus(none.e[0], 500);
    assert.equal(none.e[0].ejected, false);
  });

  test('below minHealthPercent no more ejections happen', () => {
    const { e, d } = setup(4, policy({ consecutive5xx: 1, minHealthPercent: 80 }));
    d.recordStatus(e[0], 500);
    assert.equal(e[0].ejected, true, '100% healthy: first ejection allowed');
    d.recordStatus(e[1], 500);
    assert.equal(e[1].ejected, false, '75% healthy is below 80%: ejection stops');
    assert.equal(d.c.panic, true);
  });
});

describe('outlier detection through forward', () => {
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  test('an endpoint failing N times in a row is ejected, then returns after the ejection time', async () => {
    const good = await startEcho({ name: 'good' });
    const bad = await startEcho({ name: 'bad', handler: (_req, res) => { res.statusCode = 500; res.end('boom'); return true; } });
    const ups = createUpstreams();
    ups.update([makeCluster('c', [good.port, bad.port], {
      outlierDetection: policy({ consecutive5xx: 2, intervalMs: 20, baseEjectionMs: 250 }),
    })]);
    const ds = await startDownstream({ upstreams: ups, cluster: 'c' });
    closers.push(() => good.close(), () => bad.close(), () => ups.close(), () => ds.close());

    for (let i = 0; i < 4; i++) await get(ds.url);
    assert.equal(bad.received.length, 2, 'round robin sent two requests to the bad endpoint, then ejected it');
    const snap = ups.snapshot() as Record<string, { endpoints: { address: string; ejected: boolean }[] }>;
    assert.deepEqual(snap.c.endpoints.map((x) => x.ejected), [false, true]);
    for (let i = 0; i < 6; i++) assert.equal((await get(ds.url)).status, 200);
    assert.equal(bad.received.length, 2, 'no traffic while ejected');

    await new Promise((r) => setTimeout(r, 320));
    for (let i = 0; i < 4; i++) await get(ds.url);
    assert.ok(bad.received.length > 2, 'back in rotation after the ejection time');
  });
});
