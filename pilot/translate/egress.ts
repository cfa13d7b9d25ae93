// What an egress proxy runs besides its Gateway listeners (ProxyConfig.egress): the
// allowlist, compiled from every ServiceEntry, and the mesh's outbound route tables for the
// plain HTTP requests its forward proxy accepts, built from VirtualServices bound to `mesh`
// exactly as gateway routes are built (route.ts), so both get every route feature.
import type { ConfigSnapshot, ServiceEntryResource, VirtualServiceResource } from '../../api/istio.ts';
import type { EgressEntry } from '../../api/policy.ts';
import type { Cluster, Listener, Route, VirtualHost } from '../../api/proxyconfig.ts';
import { DEFAULT_CONNECTION_POOL, PASSTHROUGH_CLUSTER, passthroughVirtualHost } from '../../api/proxyconfig.ts';
import type { Problem } from '../../api/problems.ts';
import { parseFieldPath } from '../../api/load.ts';
import { intersectHosts, qualifyHost } from '../../api/hosts.ts';
import { egressProblem, validateEgress } from '../../policies/egress.ts';
import type { EgressConfigError } from '../../policies/egress.ts';
import { MESH_GATEWAY, problemAt } from './indexes.ts';
import { clusterName } from './references.ts';
import { compareDomains, compileRoutes, retryPolicy } from './route.ts';
import type { RouteContext } from './route.ts';

// ---------------------------------------------------------------- allowlist

/** A ServiceEntry as the allowlist reads it; lists stay index for index with the YAML. */
export function toEgressEntry(se: ServiceEntryResource): EgressEntry {
  const ns = se.metadata.namespace;
  const spec = se.spec;
  return {
    source: `serviceentry/${ns}/${se.metadata.name}`,
    hosts: (spec.hosts ?? []).map((h) => (typeof h === 'string' ? qualifyHost(h, ns) : h)),
    addresses: [...(spec.addresses ?? [])],
    // The protocol as written: the allowlist does not guess one from the port name.
    ports: (spec.ports ?? []).map((p) => ({ number: p.number, protocol: p.protocol ?? '', name: p.name ?? '' })),
    location: spec.location ?? 'MESH_EXTERNAL',
    resolution: spec.resolution ?? 'NONE',
    // STATIC: where tunnels go. Unix socket endpoints are ignored (load warns about them).
    ...staticEndpoints(spec),
  };
}

function staticEndpoints(spec: ServiceEntryResource['spec']): Pick<EgressEntry, 'endpoints'> {
  if (spec.resolution !== 'STATIC') return {};
  const endpoints = (spec.endpoints ?? [])
    .filter((e) => typeof e.address === 'string' && !e.address.startsWith('unix://'))
    .map((e) => ({ address: e.address!, ports: { ...(e.ports ?? {}) } }));
  return endpoints.length > 0 ? { endpoints } : {};
}

// Istio accepts a port without a protocol (it guesses from the name) and protocols such as
// UDP that an allowlist cannot carry, so those are warnings: the ServiceEntry still serves
// routing. Everything else the allowlist refuses (a host with a scheme, a CIDR without a
// prefix length…) Istio refuses as well: errors.
const PROTOCOL_FIELD = /^spec\.ports\[\d+\]\.protocol$/;

function entryProblem(e: EgressConfigError, se: ServiceEntryResource | undefined): Problem {
  const base = egressProblem(e);
  const severity = PROTOCOL_FIELD.test(e.field) ? 'warning' : 'error';
  const message = `${base.message}; ${e.source} is left out of the egress allowlist until this is fixed`;
  if (se === undefined) return { ...base, severity, message };
  return problemAt(se, parseFieldPath(e.field), base.code, severity, message);
}

export interface EgressEntries {
  /** The entries that compiled, in snapshot order. */
  entries: EgressEntry[];
  /** One per problem; the entry it names is not in `entries` (the others keep working). */
  problems: Problem[];
}

/** Every ServiceEntry of the snapshot as an allowlist entry, the bad ones left out and reported. */
export function egressEntries(snapshot: ConfigSnapshot): EgressEntries {
  const all = snapshot.serviceEntries.map(toEgressEntry);
  const bySource = new Map<string, ServiceEntryResource>();
  for (const se of snapshot.serviceEntries) bySource.set(`serviceentry/${se.metadata.namespace}/${se.metadata.name}`, se);
  // Mode and audit come from the mesh config, which has its own checks; only entries here.
  const errors = validateEgress({ mode: 'REGISTRY_ONLY', audit: false, entries: all });
  const bad = new Set<string>();
  const problems: Problem[] = [];
  for (const e of errors) {
    bad.add(e.source);
    problems.push(entryProblem(e, bySource.get(e.source)));
  }
  return { entries: bad.size === 0 ? all : all.filter((e) => !bad.has(e.source)), problems };
}

// ---------------------------------------------------------------- outbound route tables

// Plain HTTP on the wire: what the forward proxy can route. HTTPS and TLS ports carry TLS
// from the client, which the proxy tunnels (CONNECT) instead of routing, and TCP is opaque;
// those ports get no outbound listener and go to PassthroughCluster once the allowlist
// said yes.
const HTTP_FAMILY: ReadonlySet<string> = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB']);

interface VhostBuilder {
  domain: string;
  routes: Route[];
  /** VirtualServices already appended, so one reached through two services counts once. */
  added: Set<string>;
}

interface PortTable {
  vhosts: Map<string, VhostBuilder>;
  /** The ServiceEntries that declare this port, in registry order. */
  sources: string[];
}

/** Istio's catch-all: whatever host the allowlist let through on this port goes where it asked to. */
function passthroughHost(port: number): VirtualHost {
  return passthroughVirtualHost(`*:${port}`);
}

/** A ServiceEntry host no mesh VirtualService routes: straight to its own cluster, as Istio's default route. */
function defaultRoute(source: string, cluster: string): Route {
  return {
    name: `${source}/default`,
    routeName: null,
    match: [],
    action: { kind: 'route', clusters: [{ cluster, weight: 100, requestHeaders: null, responseHeaders: null }], totalWeight: 100 },
    rewrite: null,
    timeoutMs: null,
    retries: retryPolicy(undefined),
    fault: null,
    mirrors: [],
    cors: null,
    requestHeaders: null,
    responseHeaders: null,
  };
}

const SOURCE_FIELDS = ['sourceLabels', 'sourceNamespace'] as const;

/** Source matches are about the workload that sent a request, which the egress proxy cannot see. */
function warnSourceMatches(ctx: RouteContext, vs: VirtualServiceResource): void {
  (vs.spec.http ?? []).forEach((r, i) => {
    (r.match ?? []).forEach((m, j) => {
      for (const f of SOURCE_FIELDS) {
        if (m[f] === undefined) continue;
        ctx.sink.add(problemAt(vs, ['spec', 'http', i, 'match', j, f], 'MG_CONFIG_UNSUPPORTED_FIELD', 'warning',
          `${f} cannot be evaluated at the egress proxy (it does not know which workload sent a request); this match applies to every workload that uses the egress proxy`));
      }
    });
  });
}

/**
 * One listener per HTTP-family service port, as a sidecar's outbound route tables. For each
 * registry service and port: the mesh VirtualServices whose hosts cover the service (their
 * routes as compiled for gateway `mesh` and that port, in snapshot order), or, when none
 * has a route for it, a default route to `outbound|<port>||<host>` (not for wildcard hosts:
 * they name no one host to connect to). Last in every listener, `*` → PassthroughCluster.
 * Route clusters are recorded in `ctx.clusters`.
 */
export function buildOutbound(ctx: RouteContext): Listener[] {
  const meshServices = ctx.idx.vsByGateway.get(MESH_GATEWAY) ?? [];
  const meshHosts = meshServices.map((vs) => ({
    vs,
    key: `${vs.metadata.namespace}/${vs.metadata.name}`,
    hosts: (vs.spec.hosts ?? []).map((h) => qualifyHost(h, vs.metadata.namespace)),
  }));
  const tables = new Map<number, PortTable>();
  const compiled = new Map<string, Route[]>();
  const used = new Set<VirtualServiceResource>();

  for (const svc of ctx.idx.registry.services) {
    for (const port of svc.ports) {
      if (!HTTP_FAMILY.has(port.protocol)) continue;
      let table = tables.get(port.number);
      if (table === undefined) {
        table = { vhosts: new Map(), sources: [] };
        tables.set(port.number, table);
      }
      for (const s of svc.sources) if (!table.sources.includes(s)) table.sources.push(s);
      const vhostFor = (domain: string): VhostBuilder => {
        let v = table!.vhosts.get(domain);
        if (v === undefined) {
          v = { domain, routes: [], added: new Set() };
          table!.vhosts.set(domain, v);
        }
        return v;
      };

      let routed = false;
      for (const m of meshHosts) {
        for (const vh of m.hosts) {
          const domain = intersectHosts(vh, svc.hostname);
          if (domain === null) continue;
          const cacheKey = `${m.key}|${port.number}`;
          let routes = compiled.get(cacheKey);
          if (routes === undefined) {
            routes = compileRoutes(ctx, m.vs, MESH_GATEWAY, port.number);
            compiled.set(cacheKey, routes);
          }
          // Nothing left for this port (every match names another port or gateway): the
          // VirtualService does not take the host over here.
          if (routes.length === 0) continue;
          used.add(m.vs);
          if (domain === svc.hostname) routed = true;
          const v = vhostFor(domain);
          if (v.added.has(m.key)) continue;
          v.added.add(m.key);
          for (const r of routes) v.routes.push(r);
        }
      }
      if (!routed && !svc.hostname.startsWith('*')) {
        const v = vhostFor(svc.hostname);
        if (v.routes.length === 0) {
          const cluster = clusterName(svc.hostname, port.number, null);
          if (!ctx.clusters.has(cluster)) ctx.clusters.set(cluster, { host: svc.hostname, port: port.number, subset: null, cluster });
          v.routes.push(defaultRoute(svc.source, cluster));
        }
      }
    }
  }
  for (const vs of meshServices) if (used.has(vs)) warnSourceMatches(ctx, vs);

  return [...tables.entries()].sort((a, b) => a[0] - b[0]).map(([port, table]): Listener => ({
    name: `outbound_${port}`,
    address: '0.0.0.0',
    port,
    protocol: 'HTTP',
    tls: null,
    virtualHosts: [
      ...[...table.vhosts.values()]
        .sort((a, b) => compareDomains(a.domain, b.domain))
        .map((v) => ({ name: `${v.domain}:${port}`, domains: [v.domain], httpsRedirect: false, routes: v.routes })),
      passthroughHost(port),
    ],
    sources: table.sources,
  }));
}

/** Connects to the host:port each request names (Istio's ORIGINAL_DST cluster). */
export function passthroughCluster(): Cluster {
  return {
    name: PASSTHROUGH_CLUSTER,
    service: PASSTHROUGH_CLUSTER,
    port: 0,
    subset: null,
    protocol: 'http1',
    dns: true,
    tls: null,
    endpoints: [],
    lb: { kind: 'ROUND_ROBIN' },
    connectionPool: { ...DEFAULT_CONNECTION_POOL },
    outlierDetection: null,
    sources: [],
  };
}
