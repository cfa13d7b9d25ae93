// Route lookup cost against config size: the data plane's virtual host + route match for
// the last route of the last host, over 1 VirtualService × 10 routes and over
// 1,000 VirtualServices × 10 routes. Host lookup is a map and matchers are compiled at apply
// time, so both should cost the same. Run: npm run bench:routes
//
// The config goes through the real path (YAML → validation → translate → compiled table),
// so what is measured is what a gateway runs.
import { parseConfigText } from '../api/load.ts';
import { validateResources, toSnapshot } from '../api/validate.ts';
import { translate } from '../pilot/translate/index.ts';
import { compileRouteTable, matchRoute, type MatchInput, type RouteTable } from '../gateway/router.ts';

const ROUTES_PER_VS = 10;

function configYaml(vsCount: number): string {
  const docs = [`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]`,
  `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]`];
  for (let i = 0; i < vsCount; i++) {
    const routes: string[] = [];
    for (let j = 0; j < ROUTES_PER_VS; j++) {
      routes.push(`  - match:
    - uri: {prefix: /api/r${j}/}
      headers: {x-tenant: {exact: t${j}}}
    - uri: {regex: "/v${j}/[a-z]+/[0-9]+"}
    route: [{destination: {host: backend.internal}}]`);
    }
    docs.push(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs-${i}}
spec:
  hosts: [host-${i}.example.com]
  gateways: [istio-system/edge]
  http:
${routes.join('\n')}`);
  }
  return docs.join('\n---\n');
}

function buildTable(vsCount: number): RouteTable {
  const loaded = parseConfigText('bench.yaml', configYaml(vsCount));
  const { accepted, problems } = validateResources(loaded.resources);
  const errors = [...loaded.problems, ...problems].filter((p) => p.severity === 'error');
  if (errors.length) throw new Error(`bench config invalid: ${errors[0].message}`);
  const { config } = translate(toSnapshot(accepted), { id: 'bench', namespace: 'istio-system', labels: { istio: 'ingressgateway' } });
  return compileRouteTable(config.listeners[0]);
}

function measure(table: RouteTable, input: MatchInput, iterations: number): number {
  // Warm up so the JIT has compiled the match path before timing.
  for (let i = 0; i < 50_000; i++) matchRoute(table, input);
  const start = process.hrtime.bigint();
  let hits = 0;
  for (let i = 0; i < iterations; i++) if (matchRoute(table, input) !== null) hits++;
  const ns = Number(process.hrtime.bigint() - start) / iterations;
  if (hits !== iterations) throw new Error('the benchmark request did not match its route');
  return ns;
}

const iterations = Number(process.env.BENCH_ITERATIONS ?? 1_000_000);
const results: { virtualServices: number; routes: number; nsPerLookup: number }[] = [];
for (const vsCount of [1, 1000]) {
  const table = buildTable(vsCount);
  const last = vsCount - 1;
  // The last route of the last host, matched by its regex entry: the worst case within a host.
  const input: MatchInput = {
    authority: `host-${last}.example.com:8080`, path: `/v${ROUTES_PER_VS - 1}/items/42`, method: 'GET', scheme: 'http',
    headers: { 'x-tenant': 'nobody' }, query: '', port: 8080,
  };
  const samples = [measure(table, input, iterations), measure(table, input, iterations), measure(table, input, iterations)].sort((a, b) => a - b);
  results.push({ virtualServices: vsCount, routes: vsCount * ROUTES_PER_VS, nsPerLookup: Math.round(samples[1]) });
}
for (const r of results) console.log(`${String(r.virtualServices).padStart(5)} VirtualServices × ${ROUTES_PER_VS} routes (${r.routes} routes): ${r.nsPerLookup} ns per lookup (median of 3 × ${iterations})`);
console.log(`ratio 1000 VS / 1 VS: ${(results[1].nsPerLookup / results[0].nsPerLookup).toFixed(2)}`);
