// Istio's PassthroughCluster (Envoy's ORIGINAL_DST cluster) for the egress proxy: the
// destination is not in the config but in the request itself, the host:port of its
// authority. Pilot sends a cluster of that name with no endpoints; each destination seen
// becomes a ClusterRuntime of its own, built from a synthetic Cluster with one DNS
// endpoint and the PassthroughCluster's connection pool, so connection reuse, timeouts,
// retries, upgrades and mirrors work exactly as for any cluster.
//
// Destinations are kept in an LRU (bounded in count, dropped after idling), because the
// set of names a forward proxy's clients ask for is open-ended; a dropped destination
// drains like a cluster removed from the config (requests using it finish, then its
// connections close).
import { lookup as dnsLookup } from 'node:dns';
import net from 'node:net';
import type { LookupFunction } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Cluster } from '../../api/proxyconfig.ts';
import { PASSTHROUGH_CLUSTER } from '../../api/proxyconfig.ts';
import { ClusterRuntime } from './cluster.ts';
import type { DestinationGuard } from '../egress/guard.ts';

/** Destinations kept at once; the least recently used one goes first. */
const MAX_DESTINATIONS = 1000;
/** A destination with no request for this long is dropped (its pool drained). */
const IDLE_MS = 5 * 60 * 1000;
/** How often idle destinations are looked for; between sweeps they are dropped on use. */
const SWEEP_MS = 30 * 1000;
/** Longest authority quoted back in an error reply. */
const MAX_QUOTED = 256;

export interface Destination {
  /** Lower-cased host name or IP address (IPv6 without brackets), trailing dot removed. */
  host: string;
  port: number;
  /** `host:port`, IPv6 in brackets: the cache key and the cluster name's suffix. */
  key: string;
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
// WHATWG URL's "ends in a number": getaddrinfo reads such names as IPv4 in odd notations
// (`0x7f.1`, `2130706433`), so they are accepted only as canonical dotted quads.
const NUMERIC_LABEL = /^(?:0x[0-9a-f]*|[0-9]+)$/;

/**
 * `host[:port]` of a request's authority (default port 80), or a reason it is not one:
 * user info, paths, empty or over-long labels, ports out of range, IPv4 in other notations.
 */
export function parseAuthority(authority: string): Destination | string {
  const a = authority.toLowerCase();
  let host: string;
  let portText: string | undefined;
  if (a.startsWith('[')) {
    const m = /^\[([0-9a-f:.]+)\](?::([0-9]{1,5}))?$/.exec(a);
    if (m === null || !net.isIPv6(m[1])) return 'not a host[:port]';
    host = m[1];
    portText = m[2];
  } else {
    const m = /^([a-z0-9_.-]+)(?::([0-9]{1,5}))?$/.exec(a);
    if (m === null) return a === '' ? 'empty' : 'not a host[:port]';
    host = m[1].endsWith('.') ? m[1].slice(0, -1) : m[1];
    portText = m[2];
    if (host.length === 0 || host.length > 253) return 'not a host name';
    const labels = host.split('.');
    for (const l of labels) if (!LABEL.test(l)) return 'not a host name';
    if (NUMERIC_LABEL.test(labels[labels.length - 1]) && (!net.isIPv4(host) || host.split('.').some((o) => o.length > 1 && o.startsWith('0')))) {
      return 'not a host name or an IPv4 address';
    }
  }
  const port = portText === undefined ? 80 : Number(portText);
  if (port < 1 || port > 65535) return `port ${portText} is out of range (1-65535)`;
  return { host, port, key: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` };
}

/** The authority as an error message may quote it. */
export function quoteAuthority(authority: string): string {
  return JSON.stringify(authority.length > MAX_QUOTED ? `${authority.slice(0, MAX_QUOTED)}…` : authority);
}

export function destinationCluster(def: Cluster, d: Destination): Cluster {
  return {
    name: `${PASSTHROUGH_CLUSTER}|${d.key}`,
    service: d.host,
    port: d.port,
    subset: null,
    // The egress proxy forwards plain HTTP requests here; TLS goes through CONNECT tunnels.
    protocol: 'http1',
    dns: net.isIP(d.host) === 0,
    tls: null,
    endpoints: [{ address: d.host, port: d.port, labels: {}, weight: 1 }],
    lb: { kind: 'ROUND_ROBIN' },
    connectionPool: def.connectionPool,
    outlierDetection: null,
    sources: def.sources,
  };
}

export class PassthroughDestinations {
  /** The config's PassthroughCluster; routes name it, the destinations replace it per request. */
  readonly base: ClusterRuntime;
  readonly log: Logger | null;
  readonly lookup: LookupFunction | undefined;
  readonly cache: LRUCache<string, ClusterRuntime>;
  readonly sweep: NodeJS.Timeout;
  /** Set by take(): the caller closes the runtimes itself. */
  taken = false;

  readonly guard: DestinationGuard | null;

  constructor(base: ClusterRuntime, log: Logger | null, lookup: LookupFunction | undefined, guard: DestinationGuard | null = null) {
    this.base = base;
    this.log = log;
    this.lookup = lookup;
    this.guard = guard;
    this.cache = new LRUCache<string, ClusterRuntime>({
      max: MAX_DESTINATIONS,
      ttl: IDLE_MS,
      updateAgeOnGet: true,
      // Second precision is plenty for a five-minute idle timeout, and spares lru-cache a
      // timer per millisecond of traffic.
      ttlResolution: 1000,
      dispose: (rt) => { if (!this.taken) rt.drain(); },
    });
    this.sweep = setInterval(sweepIdle, SWEEP_MS, this.cache);
    this.sweep.unref();
  }

  /** The runtime for the request's authority, built on first use; a string says why there is none. */
  destination(authority: string): ClusterRuntime | string {
    const d = parseAuthority(authority);
    if (typeof d === 'string') return `invalid authority ${quoteAuthority(authority)} for ${PASSTHROUGH_CLUSTER}: ${d}`;
    const cur = this.cache.get(d.key);
    if (cur !== undefined) return cur;
    // IP literals are checked here, names inside the lookup (on every resolution, so a name
    // that later resolves to a metadata address is refused then).
    const why = this.guard?.check(d.host, d.port) ?? null;
    if (why !== null) return `${PASSTHROUGH_CLUSTER} refuses ${quoteAuthority(authority)}: ${why}`;
    let rt: ClusterRuntime;
    try {
      const lookup = this.guard === null ? this.lookup : this.guard.lookup(this.lookup ?? dnsLookup, d.port);
      rt = new ClusterRuntime(destinationCluster(this.base.def, d), '', this.log, lookup);
    } catch (err) {
      return `${PASSTHROUGH_CLUSTER} cannot reach ${quoteAuthority(authority)}: ${(err as Error).message}`;
    }
    this.cache.set(d.key, rt);
    this.log?.debug({ cluster: rt.name }, 'passthrough destination added');
    return rt;
  }

  /** Live destinations by cluster name, for the admin port. */
  snapshot(out: Record<string, unknown>): void {
    const names: [string, ClusterRuntime][] = [];
    for (const rt of this.cache.values()) names.push([rt.name, rt]);
    names.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [name, rt] of names) out[name] = rt.snapshot();
  }

  /** Every destination runtime, for close(): the cache is emptied without draining them. */
  take(): ClusterRuntime[] {
    clearInterval(this.sweep);
    // Idle ones drain now; values() would not list them.
    this.cache.purgeStale();
    this.taken = true;
    const all = [...this.cache.values()];
    this.cache.clear();
    return all;
  }

  /** The PassthroughCluster was removed or replaced: every destination drains. */
  drain(): void {
    clearInterval(this.sweep);
    this.cache.clear();
  }
}

function sweepIdle(cache: LRUCache<string, ClusterRuntime>): void {
  cache.purgeStale();
}
