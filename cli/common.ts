// Pieces the long-running commands share: logging, identity flags, shutdown.
import { hostname } from 'node:os';
import pino, { type Logger } from 'pino';
import type { ProxyIdentity } from '../api/proxyconfig.ts';
import { parseLabels, parsePort, parsePortMap, UsageError } from './args.ts';

export function makeLogger(level: string | undefined): Logger {
  const lvl = level ?? process.env.MESHGATE_LOG_LEVEL ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(lvl)) throw new UsageError(`--log-level: "${lvl}" is not one of error, warn, info, debug, silent`);
  return pino({ level: lvl, base: { pid: process.pid } });
}

export const gatewayFlags = {
  labels: { type: 'string', default: 'istio=ingressgateway' },
  namespace: { type: 'string', default: 'istio-system' },
  id: { type: 'string' },
  'admin-port': { type: 'string', default: '15000' },
  'health-port': { type: 'string', default: '15021' },
  'metrics-port': { type: 'string', default: '15090' },
  'port-map': { type: 'string', default: '' },
  concurrency: { type: 'string' },
  redis: { type: 'string' },
  replicas: { type: 'string', default: '1' },
  'trusted-proxies': { type: 'string', default: '0' },
  'log-level': { type: 'string', default: 'info' },
} as const;

export interface GatewayFlagValues {
  node: ProxyIdentity;
  concurrency: number;
  logLevel: string;
  /** redis:// URL for global rate limits, or null. */
  redis: string | null;
  replicas: number;
  trustedProxies: number;
  adminPort: number;
  healthPort: number;
  /** Prometheus /stats/prometheus port; null: `--metrics-port off`. */
  metricsPort: number | null;
  portMap: Record<number, number>;
}

/** `defaultConcurrency`: `gateway` uses every core, as Envoy does; `up` is one process. */
export function readGatewayFlags(v: Record<string, string | boolean | undefined>, defaultConcurrency = 1): GatewayFlagValues {
  const labels = parseLabels('--labels', String(v.labels));
  const namespace = String(v.namespace);
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) throw new UsageError(`--namespace: "${namespace}" is not a valid namespace name`);
  const id = typeof v.id === 'string' ? v.id : `gateway~${hostname()}-${process.pid}~${namespace}`;
  const concurrency = v.concurrency === undefined ? defaultConcurrency : Number(v.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new UsageError(`--concurrency: "${String(v.concurrency)}" is not a number of processes (1-256)`);
  const redis = typeof v.redis === 'string' && v.redis !== '' ? v.redis : null;
  if (redis !== null && !/^rediss?:\/\//.test(redis)) throw new UsageError(`--redis: "${redis}" is not a redis:// or rediss:// URL`);
  const replicas = Number(v.replicas ?? 1);
  if (!Number.isInteger(replicas) || replicas < 1) throw new UsageError(`--replicas: "${String(v.replicas)}" is not a number of gateway replicas (1 or more)`);
  const trustedProxies = Number(v['trusted-proxies'] ?? 0);
  if (!Number.isInteger(trustedProxies) || trustedProxies < 0 || trustedProxies > 16) throw new UsageError(`--trusted-proxies: "${String(v['trusted-proxies'])}" is not a number of proxy hops (0-16)`);
  return {
    node: { id, namespace, labels },
    concurrency,
    redis,
    replicas,
    trustedProxies,
    logLevel: String(v['log-level'] ?? 'info'),
    adminPort: parsePort('--admin-port', String(v['admin-port'])),
    healthPort: parsePort('--health-port', String(v['health-port'])),
    metricsPort: v['metrics-port'] === 'off' ? null : parsePort('--metrics-port', String(v['metrics-port'] ?? '15090')),
    portMap: parsePortMap('--port-map', String(v['port-map'] ?? '')),
  };
}

/** Resolves when the process is asked to stop; runs `close` first. */
export function untilSignal(log: Logger, close: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'shutting down');
      const force = setTimeout(() => resolve(1), 10_000);
      force.unref();
      close().then(() => resolve(0), (err: Error) => {
        log.error({ err: err.message }, 'error while shutting down');
        resolve(1);
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}
