// Pieces the long-running commands share: logging, identity flags, shutdown.
import net from 'node:net';
import { hostname } from 'node:os';
import pino, { type Logger } from 'pino';
import type { ProxyIdentity } from '../api/proxyconfig.ts';
import { createResolver, parseResolveFlags, type Resolver } from '../gateway/resolver.ts';
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
  // host=addr[,addr], repeatable, like curl's --resolve: pins names for DNS clusters, the
  // egress proxy's tunnels and passthrough requests, before DNS is asked.
  resolve: { type: 'string', multiple: true },
  // Run the egress forward proxy (HTTP_PROXY / HTTPS_PROXY) and ask pilot for the egress
  // config. Default: on when --labels has istio=egressgateway, as Istio's egress gateway.
  egress: { type: 'boolean' },
  // The forward proxy's port (3128, where HTTP_PROXY users expect a proxy); `off` runs none.
  'proxy-port': { type: 'string', default: '3128' },
  'proxy-address': { type: 'string', default: '0.0.0.0' },
  'log-level': { type: 'string', default: 'info' },
} as const;

/** The label Istio's egress gateway deployment carries. */
const EGRESS_LABEL = ['istio', 'egressgateway'] as const;

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
  /** One per process: --resolve overrides, then DNS. */
  resolver: Resolver;
  /** Where the egress forward proxy listens; null: not an egress proxy, or `--proxy-port off`. */
  forwardProxy: { port: number; address: string } | null;
}

type FlagValues = Readonly<Record<string, string | boolean | (string | boolean)[] | undefined>>;

/** `defaultConcurrency`: `gateway` uses every core, as Envoy does; `up` is one process. */
export function readGatewayFlags(v: FlagValues, defaultConcurrency = 1): GatewayFlagValues {
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
  const resolveValues = v.resolve === undefined ? [] : (Array.isArray(v.resolve) ? v.resolve : [v.resolve]).map(String);
  let resolver: Resolver;
  try {
    resolver = createResolver(parseResolveFlags(resolveValues));
  } catch (err) {
    throw new UsageError(`--resolve: ${(err as Error).message}`);
  }
  const egress = v.egress === true || labels[EGRESS_LABEL[0]] === EGRESS_LABEL[1];
  const proxyPortText = String(v['proxy-port'] ?? '3128');
  const proxyPort = proxyPortText === 'off' ? null : parsePort('--proxy-port', proxyPortText);
  const proxyAddress = String(v['proxy-address'] ?? '0.0.0.0');
  if (net.isIP(proxyAddress) === 0) throw new UsageError(`--proxy-address: "${proxyAddress}" is not an IP address to listen on (e.g. 0.0.0.0, 127.0.0.1, ::)`);
  return {
    node: { id, namespace, labels, ...(egress ? { egress: true } : {}) },
    concurrency,
    redis,
    replicas,
    trustedProxies,
    logLevel: String(v['log-level'] ?? 'info'),
    adminPort: parsePort('--admin-port', String(v['admin-port'])),
    healthPort: parsePort('--health-port', String(v['health-port'])),
    metricsPort: v['metrics-port'] === 'off' ? null : parsePort('--metrics-port', String(v['metrics-port'] ?? '15090')),
    portMap: parsePortMap('--port-map', String(v['port-map'] ?? '')),
    resolver,
    forwardProxy: egress && proxyPort !== null ? { port: proxyPort, address: proxyAddress } : null,
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
