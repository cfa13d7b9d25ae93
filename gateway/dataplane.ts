// The downstream half of the data plane: owns the listener ports, compiles each pushed
// ProxyConfig into runtime tables and swaps them in, and serves the admin and health
// ports. A config is applied whole or not at all: everything that can fail (regexes, key
// material, files on disk, clusters, binding ports) is done before the swap, and a failure
// leaves the previous version serving, with an error naming what failed (pilot gets it as
// the NACK reason).
import type http from 'node:http';
import type { Logger } from 'pino';
import type { Listener, ProxyConfig } from '../api/proxyconfig.ts';
import { closeServer, startAdmin, startHealth, type AdminSource } from './admin.ts';
import { PortListener, compileSniTable, type SniTable } from './listener.ts';
import { DEFAULT_NORMALIZE, type NormalizeOptions } from './normalize.ts';
import type { ListenerRuntime } from './pipeline.ts';
import { compileRouteTable, type RouteTable } from './router.ts';
import type { Upstreams } from './upstream/types.ts';
import { JwksPool } from '../policies/jwks.ts';
import { buildPolicyRuntime, policyStatus, retirePolicyRuntime, type PolicyRuntime } from './policy.ts';
import { GatewayMetrics, renderMetrics, startMetricsServer, type MetricJson } from './metrics.ts';
import { createResolver, type Resolver } from './resolver.ts';
import { ForwardProxy } from './egress/proxy.ts';
import { buildEgressRuntime, type EgressRuntime } from './egress/runtime.ts';
import { DestinationGuard } from './egress/guard.ts';

export interface DataPlaneOptions {
  /** Default 127.0.0.1: the admin port exposes config, keep it local. */
  adminAddress?: string;
  /** Default 15000; 0 = ephemeral. */
  adminPort?: number;
  /** Default 15021; 0 = ephemeral. */
  healthPort?: number;
  /** Prometheus `/stats/prometheus` (Istio's 15090). Default 15090; 0 = ephemeral; null = no server. */
  metricsPort?: number | null;
  /** The upstream half; the DataPlane owns it and closes it in close(). */
  upstreams: Upstreams;
  log?: Logger;
  /** Gateway port → local port to bind (e.g. 80 → 8080 for unprivileged runs; 0 = ephemeral). */
  portMap?: Record<number, number>;
  /** How long removed listeners let in-flight requests finish. Default 5000 ms. */
  drainMs?: number;
  normalize?: NormalizeOptions;
  /** Bind listener ports with SO_REUSEPORT, so worker processes can share them (--concurrency). */
  reusePort?: boolean;
  /** redis:// URL where global rate limits count; null/absent: per replica, with a warning. */
  redis?: string | null;
  /** Gateway replicas sharing global rate limits (each takes 1/replicas while Redis is down). */
  replicas?: number;
  /** X-Forwarded-For hops in front of this gateway that are trusted for remote.ip / remoteIpBlocks. */
  trustedProxies?: number;
  /**
   * The egress forward proxy (HTTP_PROXY / HTTPS_PROXY target): bound when an applied config
   * has `egress` (pilot adds it for proxies whose identity says egress). `port` 0 =
   * ephemeral (see `proxyPort`); `address` default 0.0.0.0. Null/absent: no forward proxy.
   */
  forwardProxy?: { port: number; address?: string } | null;
  /** How names become addresses (DNS clusters, CONNECT tunnels, CIDR checks). Default: the system's, no overrides. */
  resolver?: Resolver;
  /** Addresses the egress proxy never connects to for a client; this data plane adds its own ports. Share it with createUpstreams. */
  guard?: DestinationGuard;
}

interface CompiledListener {
  listener: Listener;
  table: RouteTable;
  sni: SniTable | null;
}

export interface NackRecord { version: string; error: string; at: string }

export class DataPlane {
  private readonly opts: DataPlaneOptions;
  private readonly upstreams: Upstreams;
  private readonly log: Logger | null;
  private listeners = new Map<number, PortListener>();
  private forward: ForwardProxy | null = null;
  private egress: EgressRuntime | null = null;
  readonly resolver: Resolver;
  readonly guard: DestinationGuard;
  private config: ProxyConfig | null = null;
  private applying: Promise<void> = Promise.resolve();
  private admin: http.Server | null = null;
  private health: http.Server | null = null;
  private metricsServer: http.Server | null = null;
  /** --concurrency: fetches the worker processes' metrics for a scrape (set by the WorkerPool). */
  private gatherWorkers: (() => Promise<MetricJson[][]>) | null = null;
  private discoveryStatus: unknown = null;
  private configProblems: string[] = [];
  private lastNack: NackRecord | null = null;
  private policies: PolicyRuntime | null = null;
  /** JWKS outlive config versions: a push does not refetch keys it already has. */
  private readonly jwks = new JwksPool();
  private readonly startedAt = Date.now();
  /** Counted by every request of this process; policies are read at scrape time. */
  readonly metrics = new GatewayMetrics({ policies: () => this.policies });
  adminPort = 0;
  healthPort = 0;
  /** Bound metrics port; 0 when the server is off. */
  metricsPort = 0;

  constructor(opts: DataPlaneOptions) {
    this.opts = opts;
    this.upstreams = opts.upstreams;
    this.log = opts.log ?? null;
    this.resolver = opts.resolver ?? createResolver();
    this.guard = opts.guard ?? new DestinationGuard();
  }

  /** Bound port of the egress forward proxy; 0 when it is not running. */
  get proxyPort(): number {
    return this.forward === null ? 0 : this.forward.boundPort;
  }

  get version(): string | null {
    return this.config === null ? null : this.config.version;
  }

  setDiscoveryStatus(status: unknown): void { this.discoveryStatus = status; }
  setConfigProblems(lines: string[]): void { this.configProblems = lines.slice(); }
  /** Worker processes bind the ports the first process bound (which matters for ephemeral ports). */
  setPortMap(map: Record<number, number>): void { this.opts.portMap = { ...this.opts.portMap, ...map }; }

  setMetricsGatherer(gather: () => Promise<MetricJson[][]>): void { this.gatherWorkers = gather; }

  /** The text a scrape of /stats/prometheus returns: this process and its workers, summed. */
  async renderMetrics(): Promise<string> {
    const own = this.metrics.json();
    const others = this.gatherWorkers === null ? [] : await this.gatherWorkers();
    return renderMetrics([own, ...others]);
  }

  /** Actual bound port by Gateway port. */
  ports(): Record<number, number> {
    const out: Record<number, number> = {};
    for (const [port, l] of this.listeners) out[port] = l.boundPort;
    return out;
  }

  async start(): Promise<void> {
    const src = this.adminSource();
    const admin = await startAdmin(src, this.opts.adminAddress ?? '127.0.0.1', this.opts.adminPort ?? 15000);
    this.admin = admin.server;
    this.adminPort = admin.port;
    try {
      const health = await startHealth(src, this.opts.healthPort ?? 15021);
      this.health = health.server;
      this.healthPort = health.port;
      const metricsPort = this.opts.metricsPort === undefined ? 15090 : this.opts.metricsPort;
      if (metricsPort !== null) {
        const m = await startMetricsServer(() => this.renderMetrics(), metricsPort);
        this.metricsServer = m.server;
        this.metricsPort = m.port;
      }
      this.guard.addOwnPorts([this.adminPort, this.healthPort, this.metricsPort]);
    } catch (e) {
      await closeServer(admin.server);
      this.admin = null;
      if (this.health !== null) await closeServer(this.health);
      this.health = null;
      throw e;
    }
  }

  /** Applies a whole config version; throws (previous version still serving) on any failure. */
  apply(config: ProxyConfig): Promise<void> {
    // One apply at a time: a second push waits for the first to finish or fail.
    const run = this.applying.then(() => this.applyNow(config));
    this.applying = run.then(() => {}, () => {});
    return run;
  }

  private async applyNow(config: ProxyConfig): Promise<void> {
    try {
      await this.swapIn(config);
      this.lastNack = null;
      this.metrics.configApplied(config.version);
      this.log?.info({ version: config.version, listeners: config.listeners.length, clusters: config.clusters.length }, 'config applied');
    } catch (e) {
      const error = (e as Error).message;
      this.lastNack = { version: config.version, error, at: new Date().toISOString() };
      this.metrics.configRejected();
      this.log?.error({ version: config.version, error }, 'config rejected; previous version keeps serving');
      throw e;
    }
  }

  private async swapIn(config: ProxyConfig): Promise<void> {
    // 1. Compile everything first: nothing is touched until the whole config is known good.
    const compiled: CompiledListener[] = [];
    const seen = new Set<number>();
    for (const l of config.listeners) {
      if (seen.has(l.port)) throw new Error(`listener ${l.name}: port ${l.port} is used by another listener of this config`);
      seen.add(l.port);
      compiled.push({ listener: l, table: compileRouteTable(l), sni: await compileSniTable(l) });
    }

    // 1b. Policies: compiled (and JWKS fetched) before anything changes; a policy that cannot
    // be compiled rejects the version.
    let policies: PolicyRuntime | null;
    try {
      policies = await buildPolicyRuntime(config.policies, {
        pool: this.jwks, log: this.log, redis: this.opts.redis ?? null, replicas: this.opts.replicas ?? 1, trustedProxies: this.opts.trustedProxies ?? 0,
      }, this.policies);
    } catch (e) {
      throw new Error(`policies: ${(e as Error).message}`);
    }

    // 1c. Egress: the allowlist and the outbound route tables compile before anything
    // changes, like the listeners'; they share the listeners' upstreams, policies and metrics.
    let egress: EgressRuntime | null = null;
    if (config.egress !== undefined && config.egress !== null) {
      try {
        egress = buildEgressRuntime(config.egress, {
          upstreams: this.upstreams, normalize: this.opts.normalize ?? DEFAULT_NORMALIZE, log: this.log, policies, metrics: this.metrics,
        }, this.resolver, this.guard);
      } catch (e) {
        retirePolicyRuntime(policies);
        throw e;
      }
    }
    const wantProxy = egress !== null && this.opts.forwardProxy != null;

    // 2. Clusters: the upstream half validates and swaps its own state, or throws untouched.
    try {
      this.upstreams.update(config.clusters);
    } catch (e) {
      retirePolicyRuntime(policies);
      throw new Error(`clusters: ${(e as Error).message}`);
    }

    // 3. Ports: bind new ones, re-create those whose protocol class (plaintext/TLS) or
    // address changed. New ports serve the new version from their first connection.
    const opened: PortListener[] = [];
    const replaced: PortListener[] = [];
    const runtimes = new Map<number, ListenerRuntime>();
    let newProxy: ForwardProxy | null = null;
    try {
      for (const c of compiled) {
        const l = c.listener;
        const rt: ListenerRuntime = {
          table: c.table,
          port: l.port,
          scheme: c.sni === null ? 'http' : 'https',
          upstreams: this.upstreams,
          normalize: this.opts.normalize ?? DEFAULT_NORMALIZE,
          log: this.log,
          policies,
          metrics: this.metrics,
        };
        runtimes.set(l.port, rt);
        const existing = this.listeners.get(l.port);
        if (existing !== undefined && existing.tls === (c.sni !== null) && existing.address === l.address) continue;
        if (existing !== undefined) {
          await existing.stopAccepting();
          replaced.push(existing);
        }
        const local = existing?.localPort ?? this.opts.portMap?.[l.port] ?? l.port;
        const pl = new PortListener(l.address, l.port, local === 0 && existing ? existing.boundPort : local, rt, c.sni, this.opts.reusePort ?? false);
        try {
          await pl.listen();
        } catch (e) {
          throw new Error(`listener ${l.name} (${l.sources.join(', ')}): cannot listen on ${l.address}:${local}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
        opened.push(pl);
      }
      if (wantProxy && this.forward === null) {
        const fp = this.opts.forwardProxy!;
        const address = fp.address ?? '0.0.0.0';
        newProxy = new ForwardProxy(address, fp.port, egress!, this.opts.reusePort ?? false);
        try {
          await newProxy.listen();
        } catch (e) {
          newProxy = null;
          throw new Error(`egress forward proxy: cannot listen on ${address}:${fp.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
        }
      }
    } catch (e) {
      retirePolicyRuntime(policies);
      if (newProxy !== null) await newProxy.close(0);
      for (const pl of opened) await pl.close(0);
      for (const old of replaced) await old.listen(old.boundPort).catch(() => {});
      if (this.config !== null) {
        try { this.upstreams.update(this.config.clusters); } catch { /* keeps the new clusters; old routes may see NC */ }
      }
      throw e;
    }

    // 4. Swap. Synchronous from here on: no request can observe a half-applied version.
    // Each request reads its listener's runtime once, so in-flight ones finish on the old.
    this.metrics.configure(config.proxy, config.clusters);
    const next = new Map<number, PortListener>();
    for (const pl of opened) next.set(pl.gatewayPort, pl);
    for (const c of compiled) {
      const existing = this.listeners.get(c.listener.port);
      if (!next.has(c.listener.port) && existing !== undefined) {
        existing.update(runtimes.get(c.listener.port)!, c.sni);
        next.set(c.listener.port, existing);
      }
    }
    const drainMs = this.opts.drainMs ?? 5000;
    for (const old of this.listeners.values()) {
      if (next.get(old.gatewayPort) !== old) void old.close(drainMs);
    }
    this.listeners = next;
    // Egress: requests and tunnels already running keep the runtime they read.
    if (newProxy !== null) {
      this.forward = newProxy;
    } else if (this.forward !== null) {
      if (wantProxy) this.forward.update(egress!);
      else {
        void this.forward.close(drainMs);
        this.forward = null;
      }
    }
    this.egress = egress;
    this.config = config;
    this.guard.addOwnPorts([this.adminPort, this.healthPort, this.metricsPort, this.proxyPort, ...Object.values(this.ports())]);
    const retired = this.policies;
    this.policies = policies;
    retirePolicyRuntime(retired);
  }

  private ready(): boolean {
    if (this.config === null) return false;
    for (const l of this.listeners.values()) if (l.boundPort === 0) return false;
    if (this.egress !== null && this.opts.forwardProxy != null && this.proxyPort === 0) return false;
    return this.listeners.size === this.config.listeners.length;
  }

  private adminSource(): AdminSource {
    return {
      version: () => this.version,
      configDump: () => ({ version: this.version, config: this.config }),
      clusters: () => this.upstreams.snapshot(),
      listeners: () => {
        const out = [];
        for (const l of this.config?.listeners ?? []) {
          const pl = this.listeners.get(l.port);
          out.push({
            name: l.name,
            address: l.address,
            port: l.port,
            boundPort: pl?.boundPort ?? null,
            protocol: l.protocol,
            tls: l.tls !== null,
            sources: l.sources,
            virtualHosts: l.virtualHosts.map((v) => ({ name: v.name, domains: v.domains, routes: v.routes.map((r) => r.name) })),
          });
        }
        return out;
      },
      problems: () => ({ problems: this.configProblems, lastNack: this.lastNack, policies: policyStatus(this.policies) }),
      serverInfo: () => ({
        state: this.ready() ? 'LIVE' : 'PRE_INITIALIZING',
        version: this.version,
        discovery: this.discoveryStatus,
        uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000),
        node: this.config?.proxy ?? null,
      }),
      ready: () => this.ready(),
      egress: () => this.egressStatus(),
    };
  }

  /** The admin port's /egress: what the forward proxy enforces and what it decided so far. */
  private async egressStatus(): Promise<unknown> {
    const e = this.egress;
    if (e === null) return { enabled: false };
    const m = this.metrics.egressSummary(this.gatherWorkers === null ? [] : await this.gatherWorkers());
    return {
      enabled: true,
      proxy: this.forward === null ? null : { address: this.forward.address, port: this.forward.boundPort },
      mode: e.policy.mode,
      audit: e.policy.audit,
      entries: e.policy.size,
      outboundPorts: [...e.outbound.keys()],
      resolverOverrides: Object.fromEntries(this.resolver.overrides),
      // Every process's counts (--concurrency): `processes` says how many answered.
      processes: m.processes,
      tunnelsActive: m.tunnelsActive,
      hosts: m.hosts,
    };
  }

  /** Stops everything: listeners (in-flight requests get `graceMs`), admin, health, upstreams. */
  async close(graceMs = 1000): Promise<void> {
    await this.applying;
    const all = [...this.listeners.values()];
    this.listeners = new Map();
    const fp = this.forward;
    this.forward = null;
    await Promise.all([...all.map((l) => l.close(graceMs)), fp?.close(graceMs)]);
    retirePolicyRuntime(this.policies);
    this.policies = null;
    if (this.admin !== null) await closeServer(this.admin);
    if (this.health !== null) await closeServer(this.health);
    if (this.metricsServer !== null) await closeServer(this.metricsServer);
    this.admin = null;
    this.health = null;
    this.metricsServer = null;
    await this.upstreams.close();
  }
}
