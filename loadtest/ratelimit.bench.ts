// Cost of one rate-limit check() on the request path, for a local limit: a request no policy
// covers (the synchronous fast path), a covered request that is allowed, one that is refused,
// and one with a hostile 10 KB key header (hashed). Not a test; prints ns per check.
// Run: node loadtest/ratelimit.bench.ts
import type { RateLimitPolicy, RequestFacts } from '../api/policy.ts';
import { compileRateLimits, type RateLimitContext, type RateLimits } from '../policies/ratelimit.ts';

const silent = { info() {}, warn() {}, error() {} };
const ctx: RateLimitContext = { routeName: 'virtualservice/default/api/http/0', claims: { sub: 'alice', plan: 'gold' } };

function facts(ip: string, headers: Record<string, string[]> = {}): RequestFacts {
  return { method: 'GET', path: '/api/items', query: '', host: 'api.example.com', port: 8080, headers, sourceIp: ip, remoteIp: ip, sni: '', peerPrincipal: '', peerNamespace: '' };
}

function policy(requests: number, key: RateLimitPolicy['rules'][0]['key'], hosts: string[] = []): RateLimitPolicy {
  return {
    source: 'ratelimitpolicy/default/bench', mode: 'local', shadow: false, hosts, routes: [],
    rules: [{
      source: 'ratelimitpolicy/default/bench/rules/0', name: 'per-client', key,
      limit: { requests, unit: 'minute', burst: 0 },
      overrides: [{ match: [{ part: { kind: 'claim', name: 'plan' }, value: 'platinum' }], limit: { requests: requests * 10, unit: 'minute', burst: 0 } }],
    }],
  };
}

async function measure(name: string, rl: RateLimits, inputs: RequestFacts[], n: number): Promise<void> {
  // Warm up so the JIT has compiled the path being measured.
  for (let i = 0; i < 20_000; i++) await rl.check(inputs[i % inputs.length], ctx);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await rl.check(inputs[i % inputs.length], ctx);
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`${name.padEnd(52)} ${ns.toFixed(0).padStart(7)} ns/check`);
}

const N = 200_000;
const clients = Array.from({ length: 1000 }, (_, i) => facts(`10.0.${i >> 8}.${i & 255}`));

const uncovered = compileRateLimits([policy(1e9, [{ kind: 'remoteAddress' }], ['other.example.com'])], { log: silent });
await measure('no policy covers the request (sync fast path)', uncovered, clients, N);

const allowed = compileRateLimits([policy(1e9, [{ kind: 'remoteAddress' }])], { log: silent });
await measure('local limit, allowed (1,000 client keys)', allowed, clients, N);

const refused = compileRateLimits([policy(1, [{ kind: 'remoteAddress' }])], { log: silent });
await measure('local limit, refused (429)', refused, clients, N);

const hostile = compileRateLimits([policy(1e9, [{ kind: 'header', name: 'x-user' }, { kind: 'remoteAddress' }])], { log: silent });
const big = Array.from({ length: 100 }, (_, i) => facts('10.9.9.9', { 'x-user': [`${i}`.padEnd(10_000, 'x')] }));
await measure('local limit, 10 KB header key (hashed)', hostile, big, N / 4);

await Promise.all([uncovered.close(), allowed.close(), refused.close(), hostile.close()]);
