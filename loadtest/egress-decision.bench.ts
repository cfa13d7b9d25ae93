// Cost of one egress allowlist decision against the number of ServiceEntries: 1 vs 5,000
// entries of each kind (exact hosts, `*.wildcard` hosts, CIDR addresses), printed side by
// side with their ratio. Exact hosts are a Map probe, wildcards one probe per label of the
// requested name, addresses a walk down a prefix trie, so each ratio should stay near 1.
// Not a test: numbers depend on the machine.
// Run: node_modules/.bin/node loadtest/egress-decision.bench.ts  (BENCH_ITERATIONS=… to change)
import type { EgressEntry } from '../api/policy.ts';
import { compileEgress, type EgressPolicy, type EgressRequest } from '../policies/egress.ts';

type Kind = 'exact' | 'wildcard' | 'cidr';

function entryFor(kind: Kind, i: number): EgressEntry {
  const base = { source: `serviceentry/bench/${kind}-${i}`, location: 'MESH_EXTERNAL' as const, resolution: 'DNS' as const };
  if (kind === 'exact') return { ...base, hosts: [`api-${i}.vendor${i % 97}.com`], addresses: [], ports: [{ number: 443, protocol: 'HTTPS', name: 'https' }] };
  if (kind === 'wildcard') return { ...base, hosts: [`*.tenant-${i}.saas.io`], addresses: [], ports: [{ number: 443, protocol: 'HTTPS', name: 'https' }] };
  return {
    ...base, hosts: [`db-${i}.internal`], ports: [{ number: 5432, protocol: 'TCP', name: 'tcp-pg' }],
    addresses: [`10.${i >> 8}.${i & 255}.0/24`, `2001:db8:${i.toString(16)}::/48`],
  };
}

function requestFor(kind: Kind, i: number, v6: boolean): EgressRequest {
  if (kind === 'exact') return { host: `api-${i}.vendor${i % 97}.com`, port: 443, protocol: 'TLS', sni: `api-${i}.vendor${i % 97}.com`, address: null };
  if (kind === 'wildcard') return { host: `eu-1.objects.tenant-${i}.saas.io`, port: 443, protocol: 'TLS', sni: `eu-1.objects.tenant-${i}.saas.io`, address: null };
  return { host: '', port: 5432, protocol: 'TCP', sni: null, address: v6 ? `2001:db8:${i.toString(16)}:7::42` : `10.${i >> 8}.${i & 255}.77` };
}

// Requests spread over the entries, so the large config is not measured on one warm entry.
// The JSON round trip makes flat strings, as the HTTP parser hands them over (template
// literals would be rope strings, slower to scan and not what a proxy sees).
function requests(kind: Kind, n: number): EgressRequest[] {
  const out: EgressRequest[] = [];
  for (let k = 0; k < 16; k++) {
    const i = Math.max(0, (n - 1 - k * 313) % n);
    out.push(JSON.parse(JSON.stringify(requestFor(kind, i, k % 2 === 1))) as EgressRequest);
  }
  return out;
}

function measure(policy: EgressPolicy, reqs: EgressRequest[], iterations: number): number {
  const mask = reqs.length - 1;
  for (let i = 0; i < 100_000; i++) policy.decide(reqs[i & mask]);
  let allowed = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) if (policy.decide(reqs[i & mask]).allowed) allowed++;
  const ns = Number(process.hrtime.bigint() - start) / iterations;
  // A benchmark of refusals would measure the wrong path.
  if (allowed !== iterations) throw new Error('a benchmark request was refused');
  return ns;
}

const iterations = Number(process.env.BENCH_ITERATIONS ?? 1_000_000);
const ROUNDS = 3;
const rows: { kind: Kind; one: number; many: number }[] = [];
for (const kind of ['exact', 'wildcard', 'cidr'] as const) {
  const cells = [1, 5000].map((n) => {
    const entries: EgressEntry[] = [];
    for (let i = 0; i < n; i++) entries.push(entryFor(kind, i));
    return { policy: compileEgress({ mode: 'REGISTRY_ONLY', audit: false, entries }), reqs: requests(kind, n), best: Infinity };
  });
  // Rounds alternate the two sizes and keep each one's best, so a noisy neighbour on the
  // machine does not land on one side only.
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of cells) c.best = Math.min(c.best, measure(c.policy, c.reqs, iterations));
  }
  rows.push({ kind, one: cells[0].best, many: cells[1].best });
}

console.log(`egress decide(), ${iterations.toLocaleString('en-US')} calls per cell, best of ${ROUNDS} rounds`);
console.log('kind        1 entry   5,000 entries   ratio');
for (const r of rows) {
  console.log(`${r.kind.padEnd(10)} ${r.one.toFixed(0).padStart(6)} ns ${r.many.toFixed(0).padStart(11)} ns   ${(r.many / r.one).toFixed(2)}×`);
}
