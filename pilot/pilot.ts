// Pilot as a running thing: config source → store → discovery server, plus a small
// loopback-only debug port showing connected proxies and config problems.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FileSource } from './source/file.ts';
import { MeshConfigSource } from './source/mesh.ts';
import { ConfigStore } from './store.ts';
import { DiscoveryServer, type Logger } from './discovery/server.ts';
import { formatProblem, type Problem } from '../api/problems.ts';

export interface PilotOptions {
  configDir: string;
  /** `--mesh-config FILE`: Istio's MeshConfig (or its ConfigMap), watched. Absent: the defaults. */
  meshConfigFile?: string | null;
  discoveryHost?: string;
  discoveryPort?: number;
  /** Debug port (loopback only): /debug/syncz, /debug/problems. Null: none. */
  debugPort?: number | null;
  log: Logger;
}

export interface RunningPilot {
  store: ConfigStore;
  discovery: DiscoveryServer;
  discoveryPort: number;
  debugPort: number | null;
  close(): Promise<void>;
}

/** Logs the problems that are new since the last update, so an edit logs what it caused. */
function problemLogger(log: Logger): (problems: Problem[]) => void {
  let previous = new Set<string>();
  return (problems) => {
    const lines = new Set(problems.map(formatProblem));
    for (const line of lines) {
      if (previous.has(line)) continue;
      if (line.startsWith('error')) log.error({ problem: line }, line);
      else log.warn({ problem: line }, line);
    }
    previous = lines;
  };
}

export async function startPilot(opts: PilotOptions): Promise<RunningPilot> {
  const source = new FileSource(opts.configDir);
  const store = new ConfigStore();
  const logProblems = problemLogger(opts.log);
  // The mesh config first, so the first snapshot proxies get is translated with it.
  let mesh: MeshConfigSource | null = null;
  if (opts.meshConfigFile) {
    mesh = new MeshConfigSource(opts.meshConfigFile);
    store.updateMesh(await mesh.load());
    opts.log.info({ file: opts.meshConfigFile, mesh: store.state.snapshot.mesh }, 'mesh config loaded');
    mesh.on('change', (result) => {
      const next = store.updateMesh(result);
      logProblems(next.problems);
      opts.log.info({ generation: next.generation, mesh: next.snapshot.mesh }, 'mesh config changed');
    });
    mesh.on('error', (err: Error) => opts.log.error({ err: err.message }, 'mesh config source error'));
    mesh.watch();
  }
  const initial = store.update(await source.load());
  logProblems(initial.problems);
  opts.log.info({ generation: initial.generation, dir: opts.configDir, resources: countResources(initial.snapshot) }, 'config loaded');
  source.on('change', (state) => {
    const next = store.update(state);
    logProblems(next.problems);
    opts.log.info({ generation: next.generation, resources: countResources(next.snapshot) }, 'config changed');
  });
  source.on('error', (err: Error) => opts.log.error({ err: err.message }, 'config source error'));
  source.watch();

  const discovery = new DiscoveryServer({ store, host: opts.discoveryHost ?? '127.0.0.1', port: opts.discoveryPort ?? 15010, log: opts.log });
  const discoveryPort = await discovery.start();
  opts.log.info({ address: `${opts.discoveryHost ?? '127.0.0.1'}:${discoveryPort}` }, 'discovery listening');

  let debug: Server | null = null;
  let debugPort: number | null = null;
  if (opts.debugPort !== null && opts.debugPort !== undefined) {
    debug = createServer((req, res) => {
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body, null, 2) + '\n');
      };
      if (req.url === '/debug/syncz') return send(200, discovery.proxies());
      if (req.url === '/debug/problems') return send(200, store.state.problems.map(formatProblem));
      if (req.url === '/debug/config') return send(200, { generation: store.state.generation, snapshot: store.state.snapshot });
      send(404, { error: 'not found', endpoints: ['/debug/syncz', '/debug/problems', '/debug/config'] });
    });
    // Config dumps only on loopback (ISTIO-SECURITY-2026-001).
    await new Promise<void>((resolve, reject) => {
      debug!.once('error', reject);
      debug!.listen(opts.debugPort!, '127.0.0.1', () => resolve());
    });
    debugPort = (debug.address() as AddressInfo).port;
  }

  return {
    store, discovery, discoveryPort, debugPort,
    async close() {
      source.close();
      mesh?.close();
      await discovery.close();
      if (debug) await new Promise<void>((r) => debug!.close(() => r()));
    },
  };
}

function countResources(s: { gateways: unknown[]; virtualServices: unknown[]; destinationRules: unknown[]; serviceEntries: unknown[]; secrets: unknown[] }) {
  return { gateways: s.gateways.length, virtualServices: s.virtualServices.length, destinationRules: s.destinationRules.length, serviceEntries: s.serviceEntries.length, secrets: s.secrets.length };
}
