// JWT authentication cost per request: a repeated valid token (cache hit: extraction + one
// LRU lookup) against a token seen for the first time (parse + RS256 signature check +
// claims). Run: node loadtest/jwt.bench.ts
//
// Keys are inline (the Istio sample JWKS), so no network is involved; what is measured is
// what the request path runs.
import { JwtAuthenticator } from '../policies/jwt.ts';
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
const hit = measure('repeated valid token (cache hit)', 500_000, () => {
  const r = hot.authenticate(demo);
  if (r instanceof Promise || r.outcome !== 'ok') throw new Error('expected ok');
});

// First sight: distinct tokens, each verified once (fresh authenticator so warm-up does
// not pre-fill the cache for the measured tokens).
const key = await istioSigningKey();
const N = 2000;
const facts = [];
for (let i = 0; i < N * 2; i++) facts.push(bearer(await mintToken(key, { n: i })));
const warm = new JwtAuthenticator(rules);
for (let i = N; i < N * 2; i++) warm.authenticate(facts[i]);
const cold = new JwtAuthenticator(rules);
const t0 = process.hrtime.bigint();
for (let i = 0; i < N; i++) {
  const r = cold.authenticate(facts[i]);
  if (r instanceof Promise || r.outcome !== 'ok') throw new Error('expected ok');
}
const miss = Number(process.hrtime.bigint() - t0) / N;
console.log(`${'first verification (RS256, 2048-bit)'.padEnd(44)} ${miss.toFixed(0).padStart(8)} ns/op  (${N} ops)`);

const none = new JwtAuthenticator(rules);
const anon = bearer('x');
anon.headers = {};
measure('no token (passes authn)', 500_000, () => { none.authenticate(anon); });

console.log(`first verification / cache hit: ${(miss / hit).toFixed(0)}x; verifications: hot ${hot.stats.verifications}, cold ${cold.stats.verifications}`);
