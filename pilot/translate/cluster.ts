// Destinations → clusters: the registry's endpoints for a host and port, narrowed to a
// subset, with the DestinationRule's traffic policy for that port and subset.
import type {
  ClientTLSSettings, ConnectionPoolSettings, DestinationRuleResource, LoadBalancerSettings, OutlierDetection,
  Subset, TrafficPolicy,
} from '../../api/istio.ts';
import type {
  Cluster, ConnectionPool, Endpoint, LoadBalancer, OutlierDetectionPolicy, UpstreamTls,
} from '../../api/proxyconfig.ts';
import { DEFAULT_CONNECTION_POOL } from '../../api/proxyconfig.ts';
import { endpointPort } from '../registry.ts';
import type { Service, ServicePortInfo } from '../registry.ts';
import { findDestinationRule, problemAt } from './indexes.ts';
import type { Indexes, ProblemSink } from './indexes.ts';
import { clientCredential } from './references.ts';
import type { DestinationRef, Path } from './references.ts';
import { toMs } from './route.ts';

/** A policy field as it ended up after merging, and where it was written (for messages). */
interface Setting<T> { value: T; path: Path }

interface EffectivePolicy {
  loadBalancer?: Setting<LoadBalancerSettings>;
  connectionPool?: Setting<ConnectionPoolSettings>;
  outlierDetection?: Setting<OutlierDetection>;
  tls?: Setting<ClientTLSSettings>;
}

const FIELDS = ['loadBalancer', 'connectionPool', 'outlierDetection', 'tls'] as const;

/**
 * Istio's order: the rule's trafficPolicy, then its portLevelSettings for the port, then the
 * subset's trafficPolicy, then the subset's portLevelSettings. Plain fields override one by
 * one; a matching port-level entry replaces all four, since Istio documents that port-level
 * settings do not inherit (omitted fields fall back to defaults).
 */
function applyPolicy(into: EffectivePolicy, tp: TrafficPolicy | undefined, path: Path, port: number): void {
  if (!tp) return;
  const target = into as Record<string, Setting<unknown> | undefined>;
  for (const f of FIELDS) if (tp[f] !== undefined) target[f] = { value: tp[f], path: [...path, f] };
  const k = (tp.portLevelSettings ?? []).findIndex((pl) => pl.port?.number === port);
  if (k < 0) return;
  const pl = tp.portLevelSettings![k];
  for (const f of FIELDS) {
    target[f] = pl[f] === undefined ? undefined : { value: pl[f], path: [...path, 'portLevelSettings', k, f] };
  }
}

// Istio's default since 1.14 (UNSPECIFIED means "Istio picks"): least request. PASSTHROUGH
// (original destination) has no meaning at a gateway, so it balances like ROUND_ROBIN.
function loadBalancer(lb: LoadBalancerSettings | undefined): LoadBalancer {
  const ch = lb?.consistentHash;
  if (ch) {
    if (ch.httpHeaderName) return { kind: 'CONSISTENT_HASH', by: 'header', name: ch.httpHeaderName.toLowerCase(), cookiePath: null, cookieTtlMs: null };
    if (ch.httpCookie) return { kind: 'CONSISTENT_HASH', by: 'cookie', name: ch.httpCookie.name, cookiePath: ch.httpCookie.path ?? null, cookieTtlMs: toMs(ch.httpCookie.ttl) };
    if (ch.useSourceIp) return { kind: 'CONSISTENT_HASH', by: 'sourceIp', name: null, cookiePath: null, cookieTtlMs: null };
    if (ch.httpQueryParameterName) return { kind: 'CONSISTENT_HASH', by: 'queryParam', name: ch.httpQueryParameterName, cookiePath: null, cookieTtlMs: null };
  }
  switch (lb?.simple) {
    case 'ROUND_ROBIN':
    case 'PASSTHROUGH':
      return { kind: 'ROUND_ROBIN' };
    case 'RANDOM':
      return { kind: 'RANDOM' };
    default:
      return { kind: 'LEAST_REQUEST' };
  }
}

function connectionPool(cp: ConnectionPoolSettings | undefined): ConnectionPool {
  const out: ConnectionPool = { ...DEFAULT_CONNECTION_POOL };
  if (!cp) return out;
  const tcp = cp.tcp ?? {};
  const http = cp.http ?? {};
  if (tcp.maxConnections !== undefined) out.maxConnections = tcp.maxConnections;
  out.connectTimeoutMs = toMs(tcp.connectTimeout) ?? out.connectTimeoutMs;
  if (http.http1MaxPendingRequests !== undefined) out.maxPendingRequests = http.http1MaxPendingRequests;
  if (http.http2MaxRequests !== undefined) out.http2MaxRequests = http.http2MaxRequests;
  if (http.maxRequestsPerConnection !== undefined) out.maxRequestsPerConnection = http.maxRequestsPerConnection;
  out.idleTimeoutMs = toMs(http.idleTimeout) ?? toMs(tcp.idleTimeout) ?? out.idleTimeoutMs;
  return out;
}

function outlierDetection(od: OutlierDetection | undefined): OutlierDetectionPolicy | null {
  if (!od) return null;
  // Envoy's defaults when the block is present: 5 consecutive 5xx, gateway errors off.
  let consecutive5xx = 5;
  let consecutiveGatewayErrors = 0;
  if (od.consecutiveErrors !== undefined && od.consecutiveErrors > 0) {
    // As Istio maps the deprecated field: it counts gateway errors (502/503/504) only.
    consecutiveGatewayErrors = od.consecutiveErrors;
    consecutive5xx = 0;
  }
  if (od.consecutive5xxErrors !== undefined && od.consecutive5xxErrors !== null) consecutive5xx = od.consecutive5xxErrors;
  if (od.consecutiveGatewayErrors !== undefined && od.consecutiveGatewayErrors !== null) consecutiveGatewayErrors = od.consecutiveGatewayErrors;
  return {
    consecutive5xx,
    consecutiveGatewayErrors,
    intervalMs: toMs(od.interval) ?? 10_000,
    baseEjectionMs: toMs(od.baseEjectionTime) ?? 30_000,
    maxEjectionPercent: od.maxEjectionPercent ?? 10,
    minHealthPercent: od.minHealthPercent ?? 0,
  };
}

/** Upstream TLS, null for plaintext, or 'unusable' (reported) when its credential cannot be loaded. */
function upstreamTls(
  idx: Indexes, dr: DestinationRuleResource | null, s: Setting<ClientTLSSettings> | undefined, host: string, sink: ProblemSink,
): UpstreamTls | null | 'unusable' {
  if (!s || dr === null) return null;
  const tls = s.value;
  if (tls.mode === 'ISTIO_MUTUAL') {
    sink.add(problemAt(dr, [...s.path, 'mode'], 'MG_CONFIG_UNSUPPORTED_FIELD', 'warning',
      'ISTIO_MUTUAL is not supported for gateway upstreams yet; connections are plaintext'));
    return null;
  }
  if (tls.mode !== 'SIMPLE' && tls.mode !== 'MUTUAL') return null;
  const out: UpstreamTls = {
    mode: tls.mode,
    sni: tls.sni ?? host,
    caPem: null, certPem: null, keyPem: null,
    caFile: tls.caCertificates ?? null,
    certFile: tls.mode === 'MUTUAL' ? tls.clientCertificate ?? null : null,
    keyFile: tls.mode === 'MUTUAL' ? tls.privateKey ?? null : null,
    subjectAltNames: [...(tls.subjectAltNames ?? [])],
    insecureSkipVerify: tls.insecureSkipVerify === true,
  };
  if (tls.credentialName) {
    const m = clientCredential(idx, dr, tls, s.path, sink);
    if (m === null) return 'unusable';
    out.caPem = m.caPem;
    if (tls.mode === 'MUTUAL') {
      out.certPem = m.certPem;
      out.keyPem = m.keyPem;
    }
  }
  return out;
}

function subsetEndpoints(service: Service, port: ServicePortInfo, subset: Subset | null): Endpoint[] {
  const want = Object.entries(subset?.labels ?? {});
  const out: Endpoint[] = [];
  for (const ep of service.endpoints) {
    let ok = true;
    for (const [k, v] of want) if (ep.labels[k] !== v) { ok = false; break; }
    if (!ok) continue;
    out.push({ address: ep.address, port: endpointPort(ep, port), labels: { ...ep.labels }, weight: ep.weight });
  }
  return out;
}

const HTTP2_PROTOCOLS: ReadonlySet<string> = new Set(['HTTP2', 'GRPC', 'GRPC-WEB']);

/**
 * One cluster. A destination that does not resolve (unknown host, port or subset, or an
 * unusable credential) still gets its cluster, with no endpoints: requests to it answer
 * 503 rather than fall through to another route or go out unprotected.
 */
export function buildCluster(idx: Indexes, ref: DestinationRef, sink: ProblemSink): Cluster {
  const service = idx.registry.lookup(ref.host);
  const servicePort = service?.ports.find((p) => p.number === ref.port) ?? null;
  const dr = findDestinationRule(idx, ref.host, service?.namespace ?? null);
  const subset = ref.subset === null ? null : dr?.spec.subsets?.find((s) => s.name === ref.subset) ?? null;
  const subsetIndex = subset === null ? -1 : dr!.spec.subsets!.indexOf(subset);

  const policy: EffectivePolicy = {};
  if (dr) {
    applyPolicy(policy, dr.spec.trafficPolicy, ['spec', 'trafficPolicy'], ref.port);
    if (subset) applyPolicy(policy, subset.trafficPolicy, ['spec', 'subsets', subsetIndex, 'trafficPolicy'], ref.port);
  }
  // An HTTPS service port alone does not mean TLS origination: as in Istio, only a
  // DestinationRule's tls settings make the proxy speak TLS upstream.
  const tls = upstreamTls(idx, dr, policy.tls, ref.host, sink);

  let endpoints: Endpoint[] = [];
  const resolvable = service !== null && servicePort !== null && (ref.subset === null || subset !== null) && tls !== 'unusable';
  if (resolvable) endpoints = subsetEndpoints(service!, servicePort!, subset);

  const sources = [...(service?.sources ?? [])];
  if (dr) sources.push(`destinationrule/${dr.metadata.namespace}/${dr.metadata.name}`);
  if (dr && subset) sources.push(`destinationrule/${dr.metadata.namespace}/${dr.metadata.name}/subset/${subset.name}`);

  return {
    name: ref.cluster,
    service: ref.host,
    port: ref.port,
    subset: ref.subset,
    protocol: servicePort !== null && HTTP2_PROTOCOLS.has(servicePort.protocol) ? 'http2' : 'http1',
    // A named NONE host's endpoint is the host name itself (registry.ts), resolved like DNS.
    dns: service !== null && (service.resolution === 'DNS' || service.resolution === 'DNS_ROUND_ROBIN'
      || (service.resolution === 'NONE' && !service.hostname.startsWith('*'))),
    tls: tls === 'unusable' ? null : tls,
    endpoints,
    lb: loadBalancer(policy.loadBalancer?.value),
    connectionPool: connectionPool(policy.connectionPool?.value),
    outlierDetection: outlierDetection(policy.outlierDetection?.value),
    sources,
  };
}

/** Every referenced cluster, sorted by name. */
export function buildClusters(idx: Indexes, refs: Map<string, DestinationRef>, sink: ProblemSink): Cluster[] {
  const names = [...refs.keys()].sort();
  return names.map((n) => buildCluster(idx, refs.get(n)!, sink));
}
