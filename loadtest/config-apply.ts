// The control-plane scenario: how long from saving a file to the gateway serving the new
// version, at 100 / 1,000 / 10,000 VirtualServices, and what memory that much config costs.
// `meshgate up` is pilot and gateway in one process (plus workers with --concurrency), so
// its process tree's RSS is pilot + gateway.
//
// Routes sit in files of 100 VirtualServices, as teams keep them (one file per service or
// team); an edit rewrites one of those files. The version is polled on the admin port's
// /server_info, which carries the same applied version as /config_dump without
// serialising 10,000 routes on every poll (that would load the process being timed);
// /config_dump's version is checked once per size to agree.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startMeshgate, writeConfig } from './meshgate.ts';
import { treePids, treeRssKb } from './procstat.ts';
import { getJson, waitFor, freePort, sleep } from './util.ts';
import type { ConfigApplyRow } from './report.ts';

const PER_FILE = 100;

function gatewayYaml(port: number): string {
  return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: ${port}, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.bench.internal]
  location: MESH_INTERNAL
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {http: 9}
`;
}

/** One file of VirtualServices [from, to); `edit` changes the last one's route so the config really differs. */
function routesFile(from: number, to: number, edit: number): string {
  const docs: string[] = [];
  for (let i = from; i < to; i++) {
    const prefix = i === to - 1 && edit > 0 ? `/edit-${edit}` : `/svc-${i}`;
    docs.push(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs-${i}, namespace: default}
spec:
  hosts: [h${i}.bench.local]
  gateways: [istio-system/bench]
  http:
  - match:
    - uri: {prefix: ${prefix}}
    route:
    - destination: {host: backend.bench.internal}
      headers:
        request:
          set: {x-route: vs-${i}}
`);
  }
  return docs.join('---\n');
}

const fileName = (k: number) => `routes-${String(k).padStart(4, '0')}.yaml`;

export interface ApplyOptions {
  sizes: number[];
  edits: number;
  workers: number;
  tmp: string;
  log(line: string): void;
}

export async function configApply(opts: ApplyOptions): Promise<ConfigApplyRow[]> {
  const rows: ConfigApplyRow[] = [];
  for (const size of opts.sizes) {
    const dir = join(opts.tmp, `config-apply-${size}`);
    const files: Record<string, string> = { 'gateway.yaml': gatewayYaml(await freePort()) };
    const nFiles = Math.ceil(size / PER_FILE);
    for (let k = 0; k < nFiles; k++) files[fileName(k)] = routesFile(k * PER_FILE, Math.min(size, (k + 1) * PER_FILE), 0);
    const yamlKb = Object.values(files).reduce((a, f) => a + Buffer.byteLength(f), 0) / 1024;
    await writeConfig(dir, files);
    const t0 = performance.now();
    // Startup at 10,000 routes is itself a measurement; allow it generously but bound it.
    const mg = await startMeshgate(dir, opts.workers, 180_000);
    const startupMs = performance.now() - t0;
    let peakKb = treeRssKb(mg.pid);
    const applyMs: number[] = [];
    try {
      const last = nFiles - 1;
      const lastTo = size;
      for (let e = 1; e <= opts.edits; e++) {
        const before = await mg.version();
        // A pause between edits so the file source's debounce window of the previous edit is over.
        await sleep(300);
        const t = performance.now();
        await writeFile(join(dir, fileName(last)), routesFile(last * PER_FILE, lastTo, e));
        await waitFor(async () => {
          const kb = treeRssKb(mg.pid);
          if (kb > peakKb) peakKb = kb;
          const v = await mg.version();
          return v !== null && v !== before;
        }, 120_000, `version change after edit ${e} at ${size} VirtualServices`, 10);
        applyMs.push(performance.now() - t);
      }
      const dump = await getJson<{ version: string }>(`http://127.0.0.1:${mg.admin}/config_dump`, 60_000);
      const info = await mg.version();
      if (dump?.version !== info) opts.log(`config-apply ${size}: config_dump version ${dump?.version} differs from server_info ${info}`);
      await sleep(200);
      const rssKb = treeRssKb(mg.pid);
      const sorted = [...applyMs].sort((a, b) => a - b);
      rows.push({
        virtualServices: size,
        yamlKb,
        startupMs,
        applyMs,
        applyMedianMs: sorted[sorted.length >> 1],
        rssMb: rssKb / 1024,
        peakRssMb: Math.max(peakKb, rssKb) / 1024,
        processes: treePids(mg.pid).length,
      });
      opts.log(`config-apply ${size}: ready in ${Math.round(startupMs)} ms, edits applied in ${applyMs.map((x) => Math.round(x)).join(', ')} ms, RSS ${(rssKb / 1024).toFixed(0)} MB`);
    } finally {
      await mg.stop();
    }
  }
  return rows;
}
