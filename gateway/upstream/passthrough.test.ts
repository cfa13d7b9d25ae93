// PassthroughCluster (Istio's ORIGINAL_DST for the egress proxy): a request goes to the
// host:port of its own authority, resolved by the process's resolver; bad authorities are
// answered locally; destinations show on the admin port, are bounded in number and go away
// with the PassthroughCluster.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createUpstreams } from './index.ts';
import { ClusterRuntime } from './cluster.ts';
import { PassthroughDestinations, parseAuthority } from './passthrough.ts';
import { createResolver } from '../resolver.ts';
import { PASSTHROUGH_CLUSTER } from '../../api/proxyconfig.ts';
import type { Cluster } from '../../api/proxyconfig.ts';
import { startEcho } from '../../test/helpers/upstream.ts';
import type { EchoReply } from '../../test/helpers/upstream.ts';
import { makeCluster, startDownstream, get } from '../../test/helpers/downstream.ts';
import { eventually } from '../../test/helpers/tmp.ts';

/** As pilot sends it: no endpoints, DNS. */
function passthroughCluster(over: Partial<Cluster> = {}): Cluster {
  return makeCluster(PASSTHROUGH_CLUSTER, [], { dns: true, service: PASSTHROUGH_CLUSTER, port: 0, sources: ['mesh/outboundTrafficPolicy'], ...over });
}

type Snapshot = Record<string, { service: string; port: number; endpoints: { address: string; totalRequests: number }[] }>;

describe('authorities the PassthroughCluster accepts', () => {
  test('host[:port], default port 80, lower-cased, trailing dot dropped, IPv6 in brackets', () => {
    assert.deepEqual(parseAuthority('api.example.com'), { host: 'api.example.com', port: 80, key: 'api.example.com:80' });
    assert.deepEqual(parseAuthority('API.Example.com.:8080'), { host: 'api.example.com', port: 8080, key: 'api.example.com:8080' });
    assert.deepEqual(parseAuthority('127.0.0.1:9000'), { host: '127.0.0.1', port: 9000, key: '127.0.0.1:9000' });
    assert.deepEqual(parseAuthority('[::1]:443'), { host: '::1', port: 443, key: '[::1]:443' });
    assert.deepEqual(parseAuthority('_srv.internal-1.example'), { host: '_srv.internal-1.example', port: 80, key: '_srv.internal-1.example:80' });
  });

  test('anything else is refused with a reason', () => {
    for (const bad of [
      '', ':80', 'user@api.example.com', 'http://api.example.com', 'api.example.com/path', 'a..b', 'api.example.com:',
      'api.example.com:0', 'api.example.com:65536', '-lead.example.com', `${'a'.repeat(64)}.example.com`, '[::g]:80', '[::1',
      // IPv4 in notations getaddrinfo would accept: they could dodge an allowlist written for dotted quads.
      '2130706433', '0x7f.1', '127.1', '127.0.0.01', '1.2.3.256',
    ]) {
      assert.equal(typeof parseAuthority(bad), 'string', `${JSON.stringify(bad)} must be refused`);
    }
  });
});

describe('PassthroughCluster', () => {
  const resolver = createResolver(new Map([['a.example.test', ['127.0.0.1']], ['b.example.test', ['127.0.0.1']]]));
  const closers: (() => Promise<unknown>)[] = [];
  after(async () => { for (const c of closers.reverse()) await c(); });

  const setup = async (clusters: Cluster[] = [passthroughCluster()], extra: Partial<Parameters<typeof startDownstream>[0]> = {}) => {
    const ups = createUpstreams({ resolver });
    ups.update(clusters);
    const ds = await startDownstream({ upstreams: ups, cluster: PASSTHROUGH_CLUSTER, ...extra });
    closers.push(() => ups.close(), () => ds.close());
    return { ups, ds };
  };

  test('each request goes to its own authority, resolved by the resolver; the admin snapshot lists the destinations', async () => {
    const a = await startEcho({ name: 'a' });
    const b = await startEcho({ name: 'b' });
    closers.push(() => a.close(), () => b.close());
    const { ups, ds } = await setup();
    for (const [host, name] of [[`a.example.test:${a.port}`, 'a'], [`b.example.test:${b.port}`, 'b'], [`a.example.test:${a.port}`, 'a']]) {
      const r = await get(`${ds.url}/x?y=1`, { headers: { host } });
      assert.equal(r.status, 200, r.body);
      const echo = JSON.parse(r.body) as EchoReply;
      assert.equal(echo.name, name);
      assert.equal(echo.authority, host, 'the Host header is the client\'s');
      assert.equal(echo.path, '/x?y=1');
      assert.equal((await ds.nextResult()).upstreamHost, host);
    }
    const snap = ups.snapshot() as Snapshot;
    const da = snap[`${PASSTHROUGH_CLUSTER}|a.example.test:${a.port}`];
    const db = snap[`${PASSTHROUGH_CLUSTER}|b.example.test:${b.port}`];
    assert.ok(da && db, Object.keys(snap).join(', '));
    assert.equal(da.service, 'a.example.test');
    assert.deepEqual(da.endpoints.map((e) => [e.address, e.totalRequests]), [[`a.example.test:${a.port}`, 2]]);
    assert.deepEqual(db.endpoints.map((e) => [e.address, e.totalRequests]), [[`b.example.test:${b.port}`, 1]]);
    assert.deepEqual(snap[PASSTHROUGH_CLUSTER].endpoints, []);
  });

  test('an IP address authority needs no resolver; no port means port 80', async () => {
    const a = await startEcho({ name: 'ip' });
    closers.push(() => a.close());
    const { ds } = await setup();
    const r = await get(ds.url, { headers: { host: `127.0.0.1:${a.port}` } });
    assert.equal(r.status, 200);
    await ds.nextResult();
    // Whatever listens on port 80 here (likely nothing), the destination is host:80.
    await get(ds.url, { headers: { host: 'a.example.test' } });
    assert.equal((await ds.nextResult()).upstreamHost, 'a.example.test:80');
  });

  test('an authority that is not host[:port] gets 400 naming it, and no connection is tried', async () => {
    const { ups, ds } = await setup();
    for (const host of ['user@a.example.test', 'a..example.test', 'a.example.test:0', '2130706433']) {
      const r = await get(ds.url, { headers: { host } });
      assert.equal(r.status, 400, host);
      assert.match(r.body, /^invalid authority ".*" for PassthroughCluster: /);
      assert.ok(r.body.includes(JSON.stringify(host)), r.body);
      const res = await ds.nextResult();
      assert.equal(res.attempts, 0);
      assert.equal(res.upstreamHost, null);
    }
    assert.deepEqual(Object.keys(ups.snapshot() as Snapshot), [PASSTHROUGH_CLUSTER]);
  });

  test('WebSocket upgrades and mirrors go to the authority too', async () => {
    const ws1 = await startEcho({ name: 'ws', websocket: true });
    const shadow = await startEcho({ name: 'shadow' });
    closers.push(() => ws1.close(), () => shadow.close());
    const { ds } = await setup();
    const ws = new WebSocket(`ws://127.0.0.1:${ds.port}/live`, { headers: { host: `a.example.test:${ws1.port}` } });
    const hello = await new Promise<string>((resolve, reject) => { ws.once('message', (m) => resolve(m.toString())); ws.once('error', reject); });
    assert.equal(hello, 'ws connected /live');
    ws.close();
    assert.equal((await ds.nextResult()).status, 101);

    const main = await startEcho({ name: 'main' });
    closers.push(() => main.close());
    const m = await setup([passthroughCluster(), makeCluster('main', [main.port])], { cluster: 'main', mirror: PASSTHROUGH_CLUSTER, bufferBody: true });
    assert.equal((await get(m.ds.url, { headers: { host: `b.example.test:${shadow.port}` } })).status, 200);
    const copy = await eventually(() => shadow.received[0], 3000, 'the mirrored request');
    assert.equal(copy.authority, `b.example.test-shadow:${shadow.port}`);
  });

  test('a bad authority on an upgrade is refused with 400 on the raw socket', async () => {
    const { ds } = await setup();
    const r = await get(ds.url, { headers: { host: 'a..b', connection: 'Upgrade', upgrade: 'websocket' } });
    assert.equal(r.status, 400);
    assert.match(r.body, /invalid authority "a\.\.b"/);
  });

  test('destinations survive a version that keeps the PassthroughCluster, and go with one that removes it', async () => {
    const a = await startEcho({ name: 'a' });
    closers.push(() => a.close());
    const { ups, ds } = await setup();
    const name = `${PASSTHROUGH_CLUSTER}|a.example.test:${a.port}`;
    assert.equal((await get(ds.url, { headers: { host: `a.example.test:${a.port}` } })).status, 200);
    await ds.nextResult();
    ups.update([passthroughCluster(), makeCluster('other', [a.port])]);
    assert.ok(name in (ups.snapshot() as Snapshot));
    // A changed connection pool starts the destinations over.
    ups.update([passthroughCluster({ connectionPool: { ...passthroughCluster().connectionPool, maxConnections: 7 } })]);
    assert.ok(!(name in (ups.snapshot() as Snapshot)));
    assert.equal((await get(ds.url, { headers: { host: `a.example.test:${a.port}` } })).status, 200);
    await ds.nextResult();
    assert.ok(name in (ups.snapshot() as Snapshot));
    ups.update([makeCluster('other', [a.port])]);
    assert.deepEqual(Object.keys(ups.snapshot() as Snapshot), ['other']);
    const r = await get(ds.url, { headers: { host: `a.example.test:${a.port}` } });
    assert.equal(r.status, 503);
    assert.deepEqual((await ds.nextResult()).flags, ['NC']);
  });

  test('at most 1000 destinations are kept; the least recently used one is drained and closed', () => {
    const base = new ClusterRuntime(passthroughCluster(), '');
    const pt = new PassthroughDestinations(base, null, resolver.lookup);
    try {
      const first = pt.destination('d0.example.test');
      assert.ok(first instanceof ClusterRuntime);
      for (let i = 1; i <= 1000; i++) assert.ok(pt.destination(`d${i}.example.test`) instanceof ClusterRuntime);
      assert.equal(pt.cache.size, 1000);
      assert.equal(first.closed, true);
      assert.equal(pt.destination('d1000.example.test'), pt.destination('d1000.example.test'), 'a kept destination is reused');
    } finally {
      for (const rt of pt.take()) rt.destroy();
      base.destroy();
    }
  });
});
