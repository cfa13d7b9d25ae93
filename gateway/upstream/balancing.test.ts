// Load balancing seen from a client: which upstream answered, across real requests.
import { test, describe, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createUpstreams } from './index.ts';
import type { Upstreams } from './types.ts';
import { startEcho } from '../../test/helpers/upstream.ts';
import type { Upstream } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';
import type { Downstream } from '../../test/helpers/downstream.ts';
import type { LoadBalancer } from '../../api/proxyconfig.ts';

const hashBy = (by: 'header' | 'cookie' | 'sourceIp' | 'queryParam', name: string | null, cookieTtlMs: number | null = null): LoadBalancer =>
  ({ kind: 'CONSISTENT_HASH', by, name, cookiePath: null, cookieTtlMs });

describe('load balancing through forward', () => {
  let echoes: Upstream[] = [];
  let ups: Upstreams;
  let ds: Downstream;
  const clusterFor = (req: http.IncomingMessage | { headers: Record<string, unknown> }) => String(req.headers['x-cluster']);

  before(async () => {
    echoes = await Promise.all(['a', 'b', 'c'].map((name) => startEcho({ name })));
    const ports = echoes.map((e) => e.port);
    ups = createUpstreams();
    ups.update([
      makeCluster('rr', ports),
      makeCluster('weighted', [{ port: ports[0], weight: 1 }, { port: ports[1], weight: 3 }]),
      makeCluster('random', ports, { lb: { kind: 'RANDOM' } }),
      makeCluster('least', ports.slice(0, 2), { lb: { kind: 'LEAST_REQUEST' } }),
      makeCluster('by-header', ports, { lb: hashBy('header', 'x-user') }),
      makeCluster('by-cookie', ports, { lb: hashBy('cookie', 'sticky', 3_600_000) }),
      makeCluster('by-query', ports, { lb: hashBy('queryParam', 'user') }),
      makeCluster('by-ip', ports, { lb: hashBy('sourceIp', null) }),
    ]);
    ds = await startDownstream({ upstreams: ups, cluster: clusterFor });
  });
  after(async () => {
    await ds.close();
    await ups.close();
    for (const e of echoes) await e.close();
  });

  const who = async (cluster: string, path = '/', headers: Record<string, string> = {}, localAddress?: string) => {
    const r = await new Promise<{ upstream: string; setCookie: string[] | undefined }>((resolve, reject) => {
      const req = http.request(`${ds.url}${path}`, { headers: { 'x-cluster': cluster, ...headers }, agent: false, localAddress }, (res) => {
        res.resume();
        res.on('end', () => resolve({ upstream: String(res.headers['x-upstream']), setCookie: res.headers['set-cookie'] }));
      });
      req.on('error', reject);
      req.end();
    });
    return r;
  };

  test('round robin spreads requests evenly', async () => {
    const seen: Record<string, number> = {};
    for (let i = 0; i < 30; i++) { const { upstream } = await who('rr'); seen[upstream] = (seen[upstream] ?? 0) + 1; }
    assert.deepEqual(seen, { a: 10, b: 10, c: 10 });
  });

  test('weighted round robin follows the weights', async () => {
    const seen: Record<string, number> = {};
    for (let i = 0; i < 40; i++) { const { upstream } = await who('weighted'); seen[upstream] = (seen[upstream] ?? 0) + 1; }
    assert.deepEqual(seen, { a: 10, b: 30 });
  });

  test('random reaches every endpoint', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 60; i++) seen.add((await who('random')).upstream);
    assert.equal(seen.size, 3);
  });

  test('least request sends new requests to the idle endpoint', async () => {
    // One slow request occupies an endpoint; quick requests that follow must all avoid it.
    const slow = who('least', '/', { 'x-echo-delay-ms': '300' });
    await new Promise((r) => setTimeout(r, 50));
    const snap = ups.snapshot() as Record<string, { endpoints: { activeRequests: number }[] }>;
    const active = snap.least.endpoints.map((e) => e.activeRequests);
    assert.deepEqual([...active].sort(), [0, 1]);
    const idle = active[0] === 0 ? 'a' : 'b';
    const seen: string[] = [];
    for (let i = 0; i < 10; i++) seen.push((await who('least')).upstream);
    await slow;
    assert.deepEqual(seen, Array(10).fill(idle));
  });

  test('consistent hash by header: each user sticks to one endpoint', async () => {
    const owners = new Set<string>();
    for (let u = 0; u < 12; u++) {
      const first = (await who('by-header', '/', { 'x-user': `user-${u}` })).upstream;
      owners.add(first);
      for (let i = 0; i < 3; i++) assert.equal((await who('by-header', '/', { 'x-user': `user-${u}` })).upstream, first);
    }
    assert.ok(owners.size > 1, 'different users spread over endpoints');
  });

  test('consistent hash by query parameter', async () => {
    for (let u = 0; u < 6; u++) {
      const first = (await who('by-query', `/x?user=u${u}&other=1`)).upstream;
      for (let i = 0; i < 3; i++) assert.equal((await who('by-query', `/x?other=${i}&user=u${u}`)).upstream, first);
    }
  });

  test('consistent hash by cookie: a missing cookie is generated and set, and then sticks', async () => {
    const first = await who('by-cookie');
    assert.ok(first.setCookie, 'Set-Cookie on the response');
    const m = /^sticky="([0-9a-f]{16})"; Max-Age=3600; Path=\/; HttpOnly$/.exec(first.setCookie![0]);
    assert.ok(m, first.setCookie![0]);
    for (let i = 0; i < 5; i++) {
      const again = await who('by-cookie', '/', { cookie: `other=1; sticky="${m[1]}"` });
      assert.equal(again.upstream, first.upstream);
      assert.equal(again.setCookie, undefined, 'no new cookie when the request has one');
    }
  });

  test('consistent hash by source IP: each client address sticks', async () => {
    const owners = new Set<string>();
    for (const ip of ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6']) {
      const first = (await who('by-ip', '/', {}, ip)).upstream;
      owners.add(first);
      for (let i = 0; i < 3; i++) assert.equal((await who('by-ip', '/', {}, ip)).upstream, first);
    }
    assert.ok(owners.size > 1, 'different clients spread over endpoints');
  });
});

