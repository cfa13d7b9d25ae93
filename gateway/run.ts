// A gateway as a running thing: data plane (+ worker processes) + discovery client.
import type { Logger } from 'pino';
import type { ProxyIdentity } from '../api/proxyconfig.ts';
import { DataPlane } from './dataplane.ts';
import { createResolver, type Resolver } from './resolver.ts';
import { DestinationGuard } from './egress/guard.ts';
import { createUpstreams } from './upstream/index.ts';
import { DiscoveryClient, type Applier } from './discovery-client.ts';
import { WorkerPool, workerEnv } from './workers.ts';

export interface GatewayOptions {
  pilot: string;
  node: ProxyIdentity;
  adminPort?: number;
  healthPort?: number;
  /** Prometheus port (Istio's 15090). Default 15090; 0 = ephemeral; null = off. */
  metricsPort?: number | null;
  portMap?: Record<number, number>;
  /** Processes serving traffic (Envoy's --concurrency). Default 1. */
  concurrency?: number;
  log: Logger;
  logLevel?: string;
  redis?: string | null;
  replicas?: number;
  trustedProxies?: number;
  /** Names pinned to addresses (--resolve); default: DNS only. */
  resolver?: Resolver;
  /** The egress forward proxy's listen address (--egress); null/absent: none. */
  forwardProxy?: { port: number; address: string } | null;
}

export interface RunningGateway {
  dataplane: DataPlane;
  client: DiscoveryClient;
  close(): Promise<void>;
}

export async function startGateway(opts: GatewayOptions): Promise<RunningGateway> {
  const concurrency = opts.concurrency ?? 1;
  const resolver = opts.resolver ?? createResolver();
  const guard = new DestinationGuard();
  const dataplane = new DataPlane({
    adminPort: opts.adminPort ?? 15000,
    healthPort: opts.healthPort ?? 15021,
    metricsPort: opts.metricsPort === undefined ? 15090 : opts.metricsPort,
    upstreams: createUpstreams({ log: opts.log, resolver, guard }),
    guard,
    log: opts.log,
    portMap: opts.portMap ?? {},
    reusePort: concurrency > 1,
    redis: opts.redis ?? null,
    replicas: opts.replicas ?? 1,
    trustedProxies: opts.trustedProxies ?? 0,
    resolver,
    forwardProxy: opts.forwardProxy ?? null,
  });
  await dataplane.start();
  let applier: Applier = dataplane;
  let pool: WorkerPool | null = null;
  if (concurrency > 1) {
    pool = new WorkerPool({
      primary: dataplane, workers: concurrency - 1, log: opts.log, logLevel: opts.logLevel ?? 'info',
      env: {
        MESHGATE_REDIS: opts.redis ?? '', MESHGATE_REPLICAS: String(opts.replicas ?? 1), MESHGATE_TRUSTED_PROXIES: String(opts.trustedProxies ?? 0),
        ...workerEnv(resolver, opts.forwardProxy ?? null),
      },
    });
    await pool.start();
    applier = pool;
  }
  const client = new DiscoveryClient({ pilot: opts.pilot, node: opts.node, dataplane: applier, log: opts.log });
  client.start();
  return {
    dataplane, client,
    async close() {
      client.close();
      await pool?.close();
      await dataplane.close();
    },
  };
}
