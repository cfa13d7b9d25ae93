// JWT authentication cost per request: a repeated valid token (cache hit: extraction + one
// LRU lookup, synchronous) against a token seen for the first time (parse, then jose's
// jwtVerify: RS256 signature through WebCrypto + claims; the request gets a Promise).
// First sight is measured two ways: one at a time (the latency a lone request pays) and
// with many in flight (WebCrypto runs on libuv's thread pool, so throughput is what a burst
// of new tokens gets). Run: node loadtest/jwt.bench.ts
//
// Keys are inline (the Istio sample JWKS), so no network is involved; what is measured is
// what the request path runs.
import { JwtAuthenticator, type AuthnResult } from '../policies/jwt.ts';
import { istioSamples, istioSigningKey, mintToken, jwtRule, bearer } from '../test/helpers/jwt.ts';

const samples = istioSamples();
const rules = [jwtRule({ jwks: samples.jwksJson, outputClaimToHeaders: [{ header: 'x-jwt-sub', claim: 'sub' }] })];

function measure(label: string, n: number, run: (i: number) => void): number {
  for (let i = 0; i < Math.min(n, 2000); i++) run(i); // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) run(i);
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`${label.padEnd(44)} ${ns.toFixed(0).padStart(8)} ns/op  (${n} ops)`);
  return ns;
}

// Repeated token: every call after the first is a cache hit.
const hot = new JwtAuthenticator(rules);
const demo = bearer(samples.demoJwt);
await hot.authenticate(demo); // the one jose verification; the rest are cache hits
const hit = measure('repeated valid token (cache hit)', 500_000, () => {
  const r = hot.authenticate(demo);
  if (r instanceof Promise || r.outcome !== 'ok') throw new Error('expected ok');
});

// First sight: distinct tokens, each verified once (fresh authenticators so warm-up does
// not pre-fill the cache for the measured tokens).
const key = await istioSigningKey();
const N = 2000;
const facts = [];
for (let i = 0; i < N * 3; i++) facts.push(bearer(await mintToken(key, { n: i })));

async function expectOk(r: AuthnResult | Promise<AuthnResult>): Promise<void> {
  if (!(r instanceof Promise)) throw new Error('expected a first-time token to be verified asynchronously');
  if ((await r).outcome !== 'ok') throw new Error('expected ok');
}

const warm = new JwtAuthenticator(rules);
for (let i = N * 2; i < N * 3; i++) await expectOk(warm.authenticate(facts[i]));

const cold = new JwtAuthenticator(rules);
let t0 = process.hrtime.bigint();
for (let i = 0; i < N; i++) await expectOk(cold.authenticate(facts[i]));
const miss = Number(process.hrtime.bigint() - t0) / N;
console.log(`${'first verification, one at a time (RS256)'.padEnd(44)} ${miss.toFixed(0).padStart(8)} ns/op  (${N} ops)`);

const IN_FLIGHT = 64;
const burst = new JwtAuthenticator(rules);
t0 = process.hrtime.bigint();
for (let i = N; i < N * 2; i += IN_FLIGHT) {
  const batch = [];
  for (let j = i; j < Math.min(i + IN_FLIGHT, N * 2); j++) batch.push(expectOk(burst.authenticate(facts[j])));
  await Promise.all(batch);
}
const missBurst = Number(process.hrtime.bigint() - t0) / N;
console.log(`${`first verification, ${IN_FLIGHT} in flight (RS256)`.padEnd(44)} ${missBurst.toFixed(0).padStart(8)} ns/op  (${N} ops)`);

const none = new JwtAuthenticator(rules);
const anon = bearer('x');
anon.headers = {};
measure('no token (passes authn)', 500_000, () => { none.authenticate(anon); });

console.log(`first verification / cache hit: ${(miss / hit).toFixed(0)}x one at a time, ${(missBurst / hit).toFixed(0)}x in a burst; verifications: hot ${hot.stats.verifications}, cold ${cold.stats.verifications}, burst ${burst.stats.verifications}`);
