// The upstream half of the data plane: the `Upstreams` the downstream half calls (see
// types.ts). Holds the clusters of the applied config version by name.
//
// update(): every cluster of the new version is built (TLS files read, pickers and rings
// computed) before anything is swapped, so a failure leaves the old version running. A
// cluster whose JSON did not change keeps its runtime — connections, outlier ejections,
// round-robin position. Replaced and removed clusters drain: requests already using them
// finish on them, then their connections close.
//
// Every connection to an endpoint named by host name goes through the one resolver of the
// process (its --resolve overrides first). Requests for PASSTHROUGH_CLUSTER go to their
// own authority's host:port (passthrough.ts).
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Cluster } from '../../api/proxyconfig.ts';
import { PASSTHROUGH_CLUSTER } from '../../api/proxyconfig.ts';
import { createResolver } from '../resolver.ts';
import type { Resolver } from '../resolver.ts';
import { ClusterRuntime } from './cluster.ts';
import { BODY_NO_HEALTHY, forwardThen, forwardTo, writeLocalReply } from './forward.ts';
import { mirrorTo } from './mirror.ts';
import { PassthroughDestinations } from './passthrough.ts';
import { DestinationGuard } from '../egress/guard.ts';
import type { DownstreamReq, DownstreamRes, ForwardDone, ForwardResult, ResponseHooks, UpstreamRequest, Upstreams } from './types.ts';
import { upgradeTo, writeRawReply } from './websocket.ts';

export type { Upstreams } from './types.ts';

/** How long close() lets in-flight requests finish before cutting connections. */
const CLOSE_GRACE_MS = 2000;

const GRPC_UNAVAILABLE = 14;
const GRPC_INVALID_ARGUMENT = 3;

export interface UpstreamsOptions {
  log?: Logger;
  /** The process's resolver (--resolve); default: DNS only. */
  resolver?: Resolver;
  /** Addresses PassthroughCluster destinations must never reach (link-local, this proxy's own ports). */
  guard?: DestinationGuard;
}

export function createUpstreams(opts: UpstreamsOptions = {}): Upstreams {
  return new UpstreamSet(opts.log ?? null, opts.resolver ?? createResolver(), opts.guard ?? new DestinationGuard());
}

class UpstreamSet implements Upstreams {
  readonly log: Logger | null;
  readonly resolver: Resolver;
  clusters = new Map<string, ClusterRuntime>();
  /** Destinations of the config's PassthroughCluster; null when the config has none. */
  passthrough: PassthroughDestinations | null = null;
  closed = false;

  readonly guard: DestinationGuard;

  constructor(log: Logger | null, resolver: Resolver, guard: DestinationGuard) {
    this.log = log;
    this.resolver = resolver;
    this.guard = guard;
  }

  update(clusters: Cluster[]): void {
    const next = new Map<string, ClusterRuntime>();
    const built: ClusterRuntime[] = [];
    try {
      for (const def of clusters) {
        if (next.has(def.name)) throw new Error(`cluster ${def.name} is defined twice`);
        const key = JSON.stringify(def);
        const cur = this.clusters.get(def.name);
        if (cur !== undefined && cur.key === key) { next.set(def.name, cur); continue; }
        const rt = new ClusterRuntime(def, key, this.log, this.resolver.lookup);
        built.push(rt);
        next.set(def.name, rt);
      }
    } catch (err) {
      // The running version stays; what was built for the refused one (timers) goes.
      for (const rt of built) rt.destroy();
      throw err;
    }
    const old = this.clusters;
    this.clusters = next;
    for (const [name, rt] of old) {
      if (next.get(name) !== rt) rt.drain();
    }
    // Destinations outlive versions that keep the PassthroughCluster as it was; a changed
    // one (its connection pool) starts over, and a removed one takes them all away.
    const base = next.get(PASSTHROUGH_CLUSTER);
    if (this.passthrough !== null && this.passthrough.base !== base) {
      this.passthrough.drain();
      this.passthrough = null;
    }
    if (base !== undefined && this.passthrough === null) this.passthrough = new PassthroughDestinations(base, this.log, this.resolver.lookup, this.guard);
    this.log?.debug({ clusters: next.size }, 'upstream clusters updated');
  }

  forward(cluster: string, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks): Promise<ForwardResult> {
    let c: ClusterRuntime | string | undefined = this.clusters.get(cluster);
    if (c === undefined) return Promise.resolve(noCluster(res, up, hooks, this.log, cluster));
    if (c === this.passthrough?.base) {
      c = this.passthrough.destination(up.authority);
      if (typeof c === 'string') return Promise.resolve(badDestination(res, up, hooks, c));
    }
    return forwardTo(c, req, res, up, hooks);
  }

  forwardThen<T>(cluster: string, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks, done: ForwardDone<T>, arg: T): void {
    let c: ClusterRuntime | string | undefined = this.clusters.get(cluster);
    if (c === undefined) { done(arg, noCluster(res, up, hooks, this.log, cluster)); return; }
    if (c === this.passthrough?.base) {
      c = this.passthrough.destination(up.authority);
      if (typeof c === 'string') { done(arg, badDestination(res, up, hooks, c)); return; }
    }
    forwardThen(c, req, res, up, hooks, done, arg);
  }

  mirror(cluster: string, up: UpstreamRequest): void {
    let c: ClusterRuntime | string | undefined = this.clusters.get(cluster);
    if (c === undefined) { this.log?.debug({ cluster }, 'mirror to an unknown cluster dropped'); return; }
    if (c === this.passthrough?.base) {
      c = this.passthrough.destination(up.authority);
      if (typeof c === 'string') { this.log?.debug({ cluster, err: c }, 'mirror dropped'); return; }
    }
    mirrorTo(c, up, this.log);
  }

  upgrade(cluster: string, req: IncomingMessage, socket: Duplex, head: Buffer, up: UpstreamRequest): Promise<ForwardResult> {
    let c: ClusterRuntime | string | undefined = this.clusters.get(cluster);
    if (c === undefined) {
      this.log?.warn({ cluster }, 'route names a cluster the proxy does not have');
      const bytesSent = writeRawReply(socket, 503, BODY_NO_HEALTHY);
      return Promise.resolve({ status: 503, upstreamHost: null, attempts: 0, flags: ['NC'], bytesSent });
    }
    if (c === this.passthrough?.base) {
      c = this.passthrough.destination(up.authority);
      if (typeof c === 'string') {
        const bytesSent = writeRawReply(socket, 400, c);
        return Promise.resolve({ status: 400, upstreamHost: null, attempts: 0, flags: [], bytesSent });
      }
    }
    return upgradeTo(c, req, socket, head, up);
  }

  snapshot(): unknown {
    const out: Record<string, unknown> = {};
    for (const [name, c] of this.clusters) out[name] = c.snapshot();
    this.passthrough?.snapshot(out);
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const all = [...this.clusters.values(), ...(this.passthrough?.take() ?? [])];
    this.clusters = new Map();
    this.passthrough = null;
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<'late'>((resolve) => { timer = setTimeout(resolve, CLOSE_GRACE_MS, 'late'); });
    const closing = Promise.all(all.map((c) => c.close())).then(() => 'ok' as const);
    const outcome = await Promise.race([closing, grace]);
    clearTimeout(timer);
    if (outcome === 'late') for (const c of all) c.destroy();
    // Tunnels can live for hours; a closing proxy ends them.
    for (const c of all) c.cutTunnels();
  }
}

/** Pilot emits a cluster for every route, so an unknown name is a bug: say so in the log. */
function noCluster(res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks, log: Logger | null, cluster: string): ForwardResult {
  log?.warn({ cluster }, 'route names a cluster the proxy does not have');
  const bytesSent = writeLocalReply(res, hooks, up.grpc, 503, BODY_NO_HEALTHY, GRPC_UNAVAILABLE);
  return { status: up.grpc ? 200 : 503, upstreamHost: null, attempts: 0, flags: ['NC'], bytesSent };
}

/** An authority the PassthroughCluster cannot connect to: the client's mistake, not the upstream's. */
function badDestination(res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks, reason: string): ForwardResult {
  const bytesSent = writeLocalReply(res, hooks, up.grpc, 400, reason, GRPC_INVALID_ARGUMENT);
  return { status: up.grpc ? 200 : 400, upstreamHost: null, attempts: 0, flags: [], bytesSent };
}
