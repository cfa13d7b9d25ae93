import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { RateLimitPolicy, RateLimitRule, RateLimitAmount, RequestFacts } from '../api/policy.ts';
import type { Logger } from '../api/logger.ts';
import {
  compileRateLimits, counterKey, limitWindow, RATE_LIMIT_PASS, MAX_RAW_KEY,
  type RateLimits, type RateLimitDecision, type RateLimitContext, type RedisState,
} from './ratelimit.ts';
import { startRedis, type RedisServer } from '../test/helpers/redis.ts';
import { eventually } from '../test/helpers/tmp.ts';

// ---------------------------------------------------------------- helpers

function facts(over: Partial<RequestFacts> = {}): RequestFacts {
  return {
    method: 'GET', path: '/api/items', query: '', host: 'api.example.com', port: 8080, headers: {},
    sourceIp: '203.0.113.7', remoteIp: '203.0.113.7', sni: '', peerPrincipal: '', peerNamespace: '',
    ...over,
  };
}

const NO_CTX: RateLimitContext = { routeName: null, claims: null };

function amount(requests: number, unit: RateLimitAmount['unit'] = 'second', burst = 0): RateLimitAmount {
  return { requests, unit, burst };
}

function rule(name: string, limit: RateLimitAmount, key: RateLimitRule['key'] = [{ kind: 'remoteAddress' }], overrides: RateLimitRule['overrides'] = []): RateLimitRule {
  return { source: `ratelimitpolicy/default/p/rules/${name}`, name, limit, key, overrides };
}

function policy(name: string, rules: RateLimitRule[], over: Partial<RateLimitPolicy> = {}): RateLimitPolicy {
  return { source: `ratelimitpolicy/default/${name}`, mode: 'local', shadow: false, hosts: [], routes: [], rules, ...over };
}

interface TestLog extends Logger { lines: { level: string; msg: string; obj: object }[] }
function testLog(): TestLog {
  const lines: TestLog['lines'] = [];
  return {
    lines,
    info(obj, msg = '') { lines.push({ level: 'info', msg, obj }); },
    warn(obj, msg = '') { lines.push({ level: 'warn', msg, obj }); },
    error(obj, msg = '') { lines.push({ level: 'error', msg, obj }); },
  };
}

async function check(rl: RateLimits, f: RequestFacts = facts(), ctx: RateLimitContext = NO_CTX): Promise<RateLimitDecision> {
  return await rl.check(f, ctx);
}

/** Runs `n` checks in order; returns the decisions. */
async function run(rl: RateLimits, n: number, f: RequestFacts = facts(), ctx: RateLimitContext = NO_CTX): Promise<RateLimitDecision[]> {
  const out: RateLimitDecision[] = [];
  for (let i = 0; i < n; i++) out.push(await check(rl, f, ctx));
  return out;
}

const allowedCount = (ds: RateLimitDecision[]) => ds.filter((d) => d.allowed).length;

// ---------------------------------------------------------------- local limits

describe('local rate limits', () => {
  test('no policy covers the request: the shared pass decision, synchronously', () => {
    const none = compileRateLimits([], { log: testLog() });
    const d = none.check(facts(), NO_CTX);
    assert.equal(d, RATE_LIMIT_PASS);
    const other = compileRateLimits([policy('p', [rule('r', amount(1))], { hosts: ['other.example.com'], routes: [] })], { log: testLog() });
    assert.equal(other.check(facts(), NO_CTX), RATE_LIMIT_PASS);
    const byRoute = compileRateLimits([policy('p', [rule('r', amount(1))], { routes: ['virtualservice/default/api/http/1'] })], { log: testLog() });
    assert.equal(byRoute.check(facts(), { routeName: 'virtualservice/default/api/http/0', claims: null }), RATE_LIMIT_PASS);
    assert.equal(byRoute.check(facts(), NO_CTX), RATE_LIMIT_PASS);
    assert.ok(byRoute.check(facts(), { routeName: 'virtualservice/default/api/http/1', claims: null }) instanceof Promise);
  });

  test('N per second lets N through, then 429 with Retry-After and RateLimit-* headers, and refills after the window', async () => {
    const rl = compileRateLimits([policy('p', [rule('r', amount(5))])], { log: testLog() });
    const first = await run(rl, 5);
    assert.deepEqual(first.map((d) => d.allowed), [true, true, true, true, true]);
    assert.deepEqual(first.map((d) => d.headers?.['ratelimit-remaining']), ['4', '3', '2', '1', '0']);
    assert.equal(first[0].headers?.['ratelimit-limit'], '5');
    assert.equal(first[0].headers?.['ratelimit-reset'], '1');
    assert.equal(first[0].headers?.['retry-after'], undefined);

    const refused = await check(rl);
    assert.equal(refused.allowed, false);
    assert.equal(refused.status, 429);
    assert.equal(refused.body, 'rate limit exceeded\n');
    assert.equal(refused.source, 'ratelimitpolicy/default/p/rules/r');
    assert.deepEqual(refused.headers, { 'ratelimit-limit': '5', 'ratelimit-remaining': '0', 'ratelimit-reset': '1', 'retry-after': '1' });

    await new Promise((r) => setTimeout(r, Number(refused.headers!['retry-after']) * 1000 + 50));
    const again = await check(rl);
    assert.equal(again.allowed, true);
    assert.equal(again.headers?.['ratelimit-remaining'], '4');
    assert.deepEqual(rl.status().decisions, { checked: 7, rejected: 1, shadowed: 0, insurance: 0, errors: 0 });
  });

  test('burst: requests + burst pass at once; the window keeps the long-run rate at requests per unit', async () => {
    assert.deepEqual(limitWindow(amount(2, 'second', 2), 'local'), { points: 4, windowSeconds: 2 });
    assert.deepEqual(limitWindow(amount(100, 'minute', 50), 'local'), { points: 150, windowSeconds: 90 });
    assert.deepEqual(limitWindow(amount(10, 'second', 5), 'local'), { points: 15, windowSeconds: 1.5 });
    // Redis keys expire in whole seconds: rounded up, never above the asked rate.
    assert.deepEqual(limitWindow(amount(10, 'second', 5), 'global'), { points: 15, windowSeconds: 2 });
    assert.deepEqual(limitWindow(amount(0, 'hour'), 'local'), { points: 0, windowSeconds: 3600 });

    const rl = compileRateLimits([policy('p', [rule('r', amount(2, 'second', 2))])], { log: testLog() });
    const ds = await run(rl, 6);
    assert.deepEqual(ds.map((d) => d.allowed), [true, true, true, true, false, false]);
    assert.equal(ds[0].headers?.['ratelimit-limit'], '4');
    const wait = Number(ds[4].headers?.['retry-after']);
    assert.ok(wait >= 1 && wait <= 2, `Retry-After ${wait}`);
  });

  test('a limit of 0 requests refuses everything', async () => {
    const rl = compileRateLimits([policy('p', [rule('r', amount(0, 'minute'))])], { log: testLog() });
    const d = await check(rl);
    assert.equal(d.allowed, false);
    assert.equal(d.headers?.['retry-after'], '60');
  });

  test('each remote address has its own counter; an IPv4-mapped IPv6 address is the same client', async () => {
    const rl = compileRateLimits([policy('p', [rule('r', amount(2, 'minute'))])], { log: testLog() });
    const a = facts({ remoteIp: '198.51.100.1' });
    const b = facts({ remoteIp: '198.51.100.2' });
    assert.equal(allowedCount(await run(rl, 3, a)), 2);
    assert.equal(allowedCount(await run(rl, 3, b)), 2);
    assert.equal((await check(rl, facts({ remoteIp: '::ffff:198.51.100.1' }))).allowed, false);
  });

  test('key parts: header (first value, trimmed, missing = one shared counter), method in any case, host, path, claim', async () => {
    const rl = compileRateLimits([policy('p', [rule('r', amount(1, 'minute'), [{ kind: 'header', name: 'X-Api-Key' }, { kind: 'method' }])])], { log: testLog() });
    assert.equal((await check(rl, facts({ headers: { 'x-api-key': ['k1', 'other'] } }))).allowed, true);
    assert.equal((await check(rl, facts({ headers: { 'x-api-key': ['k1  '] } }))).allowed, false, 'trailing whitespace is the same key');
    assert.equal((await check(rl, facts({ method: 'get', headers: { 'x-api-key': ['k1'] } }))).allowed, false, 'lower-case method is the same key');
    assert.equal((await check(rl, facts({ method: 'POST', headers: { 'x-api-key': ['k1'] } }))).allowed, true);
    assert.equal((await check(rl, facts({ headers: { 'x-api-key': ['k2'] } }))).allowed, true);
    assert.equal((await check(rl, facts({ headers: {} }))).allowed, true);
    assert.equal((await check(rl, facts({ headers: { 'x-api-key': [] } }))).allowed, false, 'no header: one counter shared by all such requests');

    const byClaim = compileRateLimits([policy('p', [rule('r', amount(1, 'minute'), [{ kind: 'claim', name: 'sub' }, { kind: 'host' }, { kind: 'path' }])])], { log: testLog() });
    const alice = { routeName: null, claims: { sub: 'alice' } };
    assert.equal((await check(byClaim, facts(), alice)).allowed, true);
    assert.equal((await check(byClaim, facts(), alice)).allowed, false);
    assert.equal((await check(byClaim, facts(), { routeName: null, claims: { sub: 'bob' } })).allowed, true);
    assert.equal((await check(byClaim, facts({ path: '/other' }), alice)).allowed, true);
    assert.equal((await check(byClaim, facts({ host: 'b.example.com' }), alice)).allowed, true);
  });

  test('counter keys stay short and distinct for hostile values', () => {
    const huge = 'a'.repeat(100_000);
    const k1 = counterKey([{ kind: 'header', name: 'x' }], facts({ headers: { x: [huge] } }), null);
    const k2 = counterKey([{ kind: 'header', name: 'x' }], facts({ headers: { x: [huge + 'b'] } }), null);
    assert.ok(k1.length < 64 && k2.length < 64, `${k1.length}`);
    assert.notEqual(k1, k2);
    // A raw value can never equal a hashed one.
    assert.notEqual(counterKey([{ kind: 'header', name: 'x' }], facts({ headers: { x: [k1] } }), null), k1);
    assert.equal(counterKey([{ kind: 'header', name: 'x' }], facts({ headers: { x: ['a'.repeat(MAX_RAW_KEY)] } }), null).length, MAX_RAW_KEY + 1);
    // Separators inside values cannot make two different pairs one key.
    const two = [{ kind: 'header', name: 'a' }, { kind: 'header', name: 'b' }] as const;
    const x = counterKey([...two], facts({ headers: { a: ['1|2'], b: ['3'] } }), null);
    const y = counterKey([...two], facts({ headers: { a: ['1'], b: ['2|3'] } }), null);
    assert.notEqual(x, y);
  });

  test('overrides: claim plan=gold gets a higher limit; list-valued claims match any element; first override wins', async () => {
    const r = rule('per-user', amount(2, 'minute'), [{ kind: 'claim', name: 'sub' }], [
      { match: [{ part: { kind: 'claim', name: 'plan' }, value: 'gold' }], limit: amount(5, 'minute') },
      { match: [{ part: { kind: 'claim', name: 'groups' }, value: 'partners' }], limit: amount(3, 'minute') },
    ]);
    const rl = compileRateLimits([policy('p', [r])], { log: testLog() });
    const free = { routeName: null, claims: { sub: 'u1', plan: 'free' } };
    const gold = { routeName: null, claims: { sub: 'u2', plan: 'gold', groups: ['partners'] } };
    const partner = { routeName: null, claims: { sub: 'u3', groups: ['staff', 'partners'] } };
    assert.equal(allowedCount(await run(rl, 8, facts(), free)), 2);
    const golds = await run(rl, 8, facts(), gold);
    assert.equal(allowedCount(golds), 5);
    assert.equal(golds[0].headers?.['ratelimit-limit'], '5');
    assert.equal(golds[7].source, 'ratelimitpolicy/default/p/rules/per-user/overrides/0');
    assert.equal(allowedCount(await run(rl, 8, facts(), partner)), 3);
    assert.equal(allowedCount(await run(rl, 8, facts(), NO_CTX)), 2, 'no token: default limit, key part empty');
  });

  test('shadow mode counts and reports but never rejects, and adds no headers', async () => {
    const rl = compileRateLimits([policy('p', [rule('r', amount(2, 'minute'))], { shadow: true })], { log: testLog() });
    const ds = await run(rl, 5);
    assert.equal(allowedCount(ds), 5);
    assert.deepEqual(ds.map((d) => d.shadowed), [false, false, true, true, true]);
    assert.ok(ds.every((d) => d.headers === null && d.status === null));
    assert.equal(ds[4].source, 'ratelimitpolicy/default/p/rules/r');
    assert.equal(rl.status().decisions.shadowed, 3);
    assert.equal(rl.status().decisions.rejected, 0);
  });

  test('several policies apply together: each must allow, the most restrictive headers are reported', async () => {
    const rl = compileRateLimits([
      policy('wide', [rule('all', amount(10, 'minute'), [])]),
      policy('narrow', [rule('ip', amount(3, 'minute'))], { hosts: ['*.example.com'] }),
      policy('shadowed', [rule('tight', amount(1, 'minute'))], { shadow: true }),
    ], { log: testLog() });
    const ds = await run(rl, 4);
    assert.deepEqual(ds.map((d) => d.headers?.['ratelimit-limit']), ['3', '3', '3', '3']);
    assert.deepEqual(ds.map((d) => d.allowed), [true, true, true, false]);
    assert.equal(ds[3].source, 'ratelimitpolicy/default/p/rules/ip');
    assert.equal(ds[1].shadowed, true);
    // Another client is still held by the shared counter (10, of which 4 are spent).
    const other = await run(rl, 8, facts({ remoteIp: '198.51.100.9', host: 'api.other.org' }));
    assert.equal(allowedCount(other), 6);
    assert.equal(other[7].source, 'ratelimitpolicy/default/p/rules/all');
  });

  test('a new config version keeps the counters of unchanged limits and resets changed ones', async () => {
    const log = testLog();
    const v1 = compileRateLimits([policy('p', [rule('r', amount(5, 'minute')), rule('s', amount(5, 'minute'))])], { log });
    await run(v1, 3);
    const v2 = compileRateLimits([policy('p', [rule('r', amount(5, 'minute')), rule('s', amount(6, 'minute'))])], { log }, v1);
    const d = await check(v2);
    // r kept its count (4th of 5); s starts again (1st of 6) and is less restrictive.
    assert.equal(d.headers?.['ratelimit-remaining'], '1');
    assert.equal(d.source, 'ratelimitpolicy/default/p/rules/r');
    assert.equal(v2.status().decisions.checked, 4, 'counters for metrics continue across versions');
    await v1.close();
    await v2.close();
  });

  test('a global policy without Redis counts per replica and says so', async () => {
    const log = testLog();
    const rl = compileRateLimits([policy('g', [rule('r', amount(1, 'minute'))], { mode: 'global' })], { log });
    assert.equal(allowedCount(await run(rl, 2)), 1);
    assert.ok(log.lines.some((l) => l.level === 'warn' && /no Redis is configured/.test(l.msg)));
    assert.equal(rl.status().redis.state, 'not-configured');
    assert.equal(rl.status().limits[0].mode, 'local');
  });
});

// ---------------------------------------------------------------- global limits, real Redis

describe('global rate limits with a real redis-server', () => {
  let redis: RedisServer;
  const open: RateLimits[] = [];
  before(async () => { redis = await startRedis(); });
  after(async () => {
    for (const rl of open) await rl.close();
    await redis?.stop();
  });

  function replica(policies: RateLimitPolicy[], states?: RedisState[], log: TestLog = testLog()): RateLimits {
    const rl = compileRateLimits(policies, {
      redis: { host: '127.0.0.1', port: redis.port },
      log,
      replicas: 2,
      onRedisState: states ? (s) => { states.push(s); } : undefined,
    });
    open.push(rl);
    return rl;
  }

  const globalPolicy = (n: number) => [policy('shared', [rule('r', amount(n, 'minute'))], { mode: 'global' as const })];

  test('two replicas sharing one Redis let through no more than N in total', async () => {
    const a = replica(globalPolicy(5));
    const b = replica(globalPolicy(5));
    await eventually(() => a.status().redis.state === 'up' && b.status().redis.state === 'up', 3000, 'both replicas connected');
    const f = facts({ remoteIp: '192.0.2.10' });
    const ds: RateLimitDecision[] = [];
    for (let i = 0; i < 20; i++) ds.push(await check(i % 2 ? b : a, f));
    assert.equal(allowedCount(ds), 5);
    assert.ok(ds.every((d) => !d.insurance));
    const refused = ds.find((d) => !d.allowed)!;
    assert.equal(refused.headers?.['ratelimit-limit'], '5');
    assert.ok(Number(refused.headers?.['retry-after']) > 0 && Number(refused.headers?.['retry-after']) <= 60);

    // Keys are per policy and bounded in size, even for a hostile key value.
    const c = replica([policy('by-header', [rule('h', amount(5, 'minute'), [{ kind: 'header', name: 'x-user' }])], { mode: 'global' })]);
    await eventually(() => c.status().redis.state === 'up', 3000, 'connected');
    await check(c, facts({ headers: { 'x-user': ['z'.repeat(50_000)] } }));
    const probe = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: true });
    await probe.connect();
    const keys = await probe.keys('mg:rl:*');
    await probe.quit();
    assert.ok(keys.some((k) => k.startsWith('mg:rl:ratelimitpolicy/default/shared:r:')), keys.join(' '));
    assert.ok(keys.every((k) => k.length < 200), keys.join(' '));
  });

  test('Redis killed mid-run: no error, insurance answers fast, status says so; Redis back: shared counting resumes', async () => {
    const statesA: RedisState[] = [];
    const logA = testLog();
    const a = replica(globalPolicy(6), statesA, logA);
    const b = replica(globalPolicy(6));
    await eventually(() => a.status().redis.state === 'up' && b.status().redis.state === 'up', 3000, 'both replicas connected');
    const f = facts({ remoteIp: '192.0.2.20' });
    assert.equal(allowedCount([await check(a, f), await check(b, f)]), 2);

    await redis.kill();

    // Insurance: each replica allows 6 / 2 replicas = 3 per window from memory.
    const down: RateLimitDecision[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      down.push(await check(a, facts({ remoteIp: '192.0.2.21' })));
      const ms = performance.now() - t0;
      assert.ok(ms < 100, `check ${i} took ${ms.toFixed(1)} ms while Redis was down`);
    }
    assert.equal(allowedCount(down), 3);
    assert.ok(down.every((d) => d.insurance), 'every decision came from the insurance limiter');
    assert.equal(down[9].status, 429);
    assert.ok(down[9].headers?.['retry-after']);

    await eventually(() => a.status().redis.state === 'down', 2000, 'status down');
    const st = a.status();
    assert.ok(st.decisions.insurance >= 10);
    assert.equal(st.redis.outages, 1);
    assert.ok(logA.lines.some((l) => l.level === 'warn' && /insurance/.test(l.msg)));

    // 1,000 checks while Redis is down: bounded time, nothing queued in the client.
    const t0 = performance.now();
    const many = await Promise.all(Array.from({ length: 1000 }, (_, i) => a.check(facts({ remoteIp: `10.1.${i >> 8}.${i & 255}` }), NO_CTX)));
    const elapsed = performance.now() - t0;
    assert.equal(many.length, 1000);
    assert.ok(many.every((d) => d.allowed && d.insurance));
    assert.ok(elapsed < 1000, `1,000 checks took ${elapsed.toFixed(0)} ms`);
    assert.equal(a.status().redis.queued, 0);
    assert.equal(b.status().redis.queued, 0);

    await redis.restart();
    await eventually(() => a.status().redis.state === 'up' && b.status().redis.state === 'up', 6000, 'both replicas reconnected');
    assert.deepEqual(statesA.filter((s, i) => s !== statesA[i - 1]).slice(-3), ['up', 'down', 'up']);
    assert.ok(logA.lines.some((l) => l.level === 'info' && /reachable again/.test(l.msg)));

    const g = facts({ remoteIp: '192.0.2.22' });
    const back: RateLimitDecision[] = [];
    for (let i = 0; i < 16; i++) back.push(await check(i % 2 ? b : a, g));
    assert.equal(allowedCount(back), 6, 'two replicas again enforce N in total');
    assert.ok(back.every((d) => !d.insurance));
  });

  test('Redis hung (accepts, never answers): each check still answers within ~100 ms, then from insurance at once', async () => {
    const a = replica(globalPolicy(4));
    await eventually(() => a.status().redis.state === 'up', 3000, 'connected');
    redis.pause();
    try {
      const ds: RateLimitDecision[] = [];
      const slowest: number[] = [];
      const end = Date.now() + 3000;
      // Keep checking until the connection is declared down, then a few more.
      for (let i = 0; i < 200 && Date.now() < end; i++) {
        const t0 = performance.now();
        ds.push(await check(a, facts({ remoteIp: '192.0.2.40' })));
        slowest.push(performance.now() - t0);
        if (a.status().redis.state === 'down' && ds.length > 5) break;
        // Requests arrive through I/O: let the event loop turn as it would between them.
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(a.status().redis.state, 'down');
      const worst = Math.max(...slowest);
      assert.ok(worst < 120, `slowest check ${worst.toFixed(1)} ms while Redis was hung`);
      assert.ok(ds.every((d) => d.insurance));
      // Insurance is 4 / 2 replicas = 2 per window for this replica.
      assert.equal(allowedCount(ds), 2);
      const t0 = performance.now();
      await check(a, facts({ remoteIp: '192.0.2.41' }));
      assert.ok(performance.now() - t0 < 10, 'once down, no request waits on Redis at all');
    } finally {
      redis.resume();
    }
    await eventually(() => a.status().redis.state === 'up', 6000, 'reconnected after the hang');
  });

  test('a new config version reuses the Redis connection; closing the old one does not cut it', async () => {
    const v1 = replica(globalPolicy(4));
    await eventually(() => v1.status().redis.state === 'up', 3000, 'connected');
    const f = facts({ remoteIp: '192.0.2.30' });
    await run(v1, 2, f);
    const v2 = compileRateLimits(globalPolicy(4), { redis: { host: '127.0.0.1', port: redis.port }, log: testLog(), replicas: 2 }, v1);
    open.push(v2);
    await v1.close();
    assert.equal(v2.status().redis.state, 'up');
    const ds = await run(v2, 3, f);
    assert.equal(allowedCount(ds), 2);
    assert.ok(ds.every((d) => !d.insurance));
  });
});
