// `--concurrency N`, as Envoy's: N processes serve traffic. The first one (the process
// that was started) also talks to pilot and serves the admin and health ports; N-1
// worker processes only serve. Each process binds every listener port with SO_REUSEPORT,
// so the kernel spreads connections over them with no hand-off through a primary.
//
// A pushed version is applied by all processes or by none: the first process applies it,
// then the workers (bound to the ports the first one got); if any worker fails, everyone
// goes back to the previous version and pilot gets a NACK naming the worker and reason.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { ProxyConfig } from '../api/proxyconfig.ts';
import type { DataPlane } from './dataplane.ts';
import { createResolver, type Resolver } from './resolver.ts';
import type { Applier } from './discovery-client.ts';
import type { MetricJson } from './metrics.ts';

/** Messages between the first process and its workers (node IPC). */
export type ToWorker =
  /** `proxyPort`: where the first process's forward proxy listens (0: it runs none). */
  | { type: 'apply'; id: number; config: ProxyConfig; ports: Record<number, number>; proxyPort: number; ownPorts: number[] }
  | { type: 'metrics'; id: number }
  | { type: 'close' };
export type FromWorker =
  | { type: 'ready' }
  | { type: 'applied'; id: number }
  | { type: 'failed'; id: number; error: string }
  | { type: 'metrics'; id: number; metrics: MetricJson[] };

/**
 * Environment that gives a worker the first process's resolver overrides and forward proxy
 * address. The port comes with each `apply`: the first process binds it when a config with
 * `egress` arrives (an ephemeral one only then), and the workers share it (SO_REUSEPORT).
 */
export function workerEnv(resolver: Resolver, forwardProxy: { port: number; address: string } | null): Record<string, string> {
  return {
    MESHGATE_RESOLVE: JSON.stringify([...resolver.overrides]),
    MESHGATE_FORWARD_PROXY: forwardProxy === null ? '' : JSON.stringify(forwardProxy),
  };
}

/** workerEnv's settings, in the worker. */
export function readWorkerEnv(env: NodeJS.ProcessEnv): { resolver: Resolver; forwardProxy: { port: number; address: string } | null } {
  const pinned = JSON.parse(env.MESHGATE_RESOLVE || '[]') as [string, string[]][];
  const fp = env.MESHGATE_FORWARD_PROXY ? JSON.parse(env.MESHGATE_FORWARD_PROXY) as { port: number; address: string } : null;
  return { resolver: createResolver(new Map(pinned)), forwardProxy: fp };
}

/** How long a scrape waits for a worker's metrics; a worker that does not answer is left out. */
const METRICS_TIMEOUT_MS = 1000;

const WORKER_MAIN = fileURLToPath(new URL('./worker-main.ts', import.meta.url));

interface Worker {
  index: number;
  child: ChildProcess;
  ready: Promise<void>;
  pending: Map<number, { resolve(): void; reject(err: Error): void }>;
  /** Scrapes waiting for this worker's metrics, by request id. */
  scrapes: Map<number, (m: MetricJson[] | null) => void>;
}

export interface WorkerPoolOptions {
  /** The first process's data plane (it must bind with reusePort). */
  primary: DataPlane;
  /** Worker processes besides the first: concurrency - 1. */
  workers: number;
  log: Logger;
  logLevel: string;
  /** Settings the workers' data planes need (redis URL, replicas, trusted proxies), as environment. */
  env?: Record<string, string>;
}

export class WorkerPool implements Applier {
  private readonly opts: WorkerPoolOptions;
  private readonly workers: Worker[] = [];
  private current: ProxyConfig | null = null;
  private nextId = 1;
  private closing = false;

  constructor(opts: WorkerPoolOptions) {
    this.opts = opts;
  }

  get version(): string | null {
    return this.opts.primary.version;
  }

  setConfigProblems(lines: string[]): void { this.opts.primary.setConfigProblems(lines); }
  setDiscoveryStatus(status: object): void { this.opts.primary.setDiscoveryStatus(status); }

  async start(): Promise<void> {
    for (let i = 0; i < this.opts.workers; i++) this.workers.push(this.spawn(i + 1));
    await Promise.all(this.workers.map((w) => w.ready));
    this.opts.primary.setMetricsGatherer(() => this.gatherMetrics());
  }

  /** Every worker's own metrics, for one scrape of the first process's metrics port. */
  async gatherMetrics(): Promise<MetricJson[][]> {
    const all = await Promise.all(this.workers.map((w) => this.askMetrics(w)));
    return all.filter((m): m is MetricJson[] => m !== null);
  }

  private askMetrics(w: Worker): Promise<MetricJson[] | null> {
    if (!w.child.connected) return Promise.resolve(null);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), METRICS_TIMEOUT_MS);
      const finish = (m: MetricJson[] | null) => {
        clearTimeout(timer);
        w.scrapes.delete(id);
        resolve(m);
      };
      w.scrapes.set(id, finish);
      const msg: ToWorker = { type: 'metrics', id };
      w.child.send(msg, (err) => { if (err) finish(null); });
    });
  }

  private spawn(index: number): Worker {
    const child = fork(WORKER_MAIN, [], {
      env: { ...process.env, ...this.opts.env, MESHGATE_LOG_LEVEL: this.opts.logLevel, MESHGATE_WORKER: String(index) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let markReady!: () => void;
    const w: Worker = { index, child, ready: new Promise<void>((r) => { markReady = r; }), pending: new Map(), scrapes: new Map() };
    child.on('message', (m: FromWorker) => {
      if (m.type === 'ready') return markReady();
      if (m.type === 'metrics') return w.scrapes.get(m.id)?.(m.metrics);
      const p = w.pending.get(m.id);
      if (!p) return;
      w.pending.delete(m.id);
      if (m.type === 'applied') p.resolve();
      else p.reject(new Error(`worker ${index}: ${m.error}`));
    });
    child.on('exit', (code, signal) => {
      for (const p of w.pending.values()) p.reject(new Error(`worker ${index} exited (${signal ?? code})`));
      w.pending.clear();
      for (const s of [...w.scrapes.values()]) s(null);
      if (this.closing) return;
      // A worker that dies is replaced and brought to the current version; the others
      // keep serving meanwhile.
      this.opts.log.error({ worker: index, code, signal }, 'gateway worker exited; starting a new one');
      const slot = this.workers.indexOf(w);
      const t = setTimeout(() => {
        if (this.closing) return;
        const fresh = this.spawn(index);
        if (slot >= 0) this.workers[slot] = fresh;
        void fresh.ready.then(() => {
          if (this.current) return this.send(fresh, this.current).catch((err: Error) => this.opts.log.error({ err: err.message }, 'replacement worker could not apply the current config'));
        });
      }, 500);
      t.unref();
    });
    return w;
  }

  private send(w: Worker, config: ProxyConfig): Promise<void> {
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      w.pending.set(id, { resolve, reject });
      const msg: ToWorker = { type: 'apply', id, config, ports: this.opts.primary.ports(), proxyPort: this.opts.primary.proxyPort, ownPorts: this.opts.primary.guard.ownPorts() };
      w.child.send(msg, (err) => {
        if (err) {
          w.pending.delete(id);
          reject(new Error(`worker ${w.index}: ${err.message}`));
        }
      });
    });
  }

  async apply(config: ProxyConfig): Promise<void> {
    const previous = this.current;
    await this.opts.primary.apply(config);
    const results = await Promise.allSettled(this.workers.map((w) => this.send(w, config)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      if (previous) {
        await this.opts.primary.apply(previous).catch(() => {});
        await Promise.allSettled(this.workers.map((w) => this.send(w, previous)));
      }
      throw failed.reason as Error;
    }
    this.current = config;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => new Promise<void>((resolve) => {
      if (w.child.exitCode !== null || w.child.signalCode !== null) return resolve();
      const t = setTimeout(() => w.child.kill('SIGKILL'), 5000);
      w.child.once('exit', () => { clearTimeout(t); resolve(); });
      const msg: ToWorker = { type: 'close' };
      if (w.child.connected) w.child.send(msg);
      else w.child.kill('SIGTERM');
    })));
  }
}
