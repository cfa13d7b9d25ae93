// Prometheus metrics on :15090 `/stats/prometheus`, with Istio's standard names and labels
// (istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes) so dashboards built for Istio's gateways work unchanged, plus
// meshgate's own policy and config counters (issue 4: "says so in its log and metrics").
//
// Why the request series are not prom-client Counter/Histogram children: a labelled child
// hashes and validates its whole label set (25 labels here) on every inc()/observe(), a cost
// paid per request. Here each distinct label set is a `Series` of plain numbers, reached per
// request through two Map lookups (cluster name, then status code); nothing is allocated per
// request once a series exists. prom-client still does everything at scrape time: each family
// hands it values in its own JSON shape (what `register.getMetricsAsJSON()` returns), so its
// text rendering, label escaping and `AggregatorRegistry.aggregate` (one scrape over every
// --concurrency process) apply unchanged.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, Registry } from 'prom-client';
import { BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, type ProxyIdentity } from '../api/proxyconfig.ts';
import type { PolicyRuntime } from './policy.ts';
import type { DownstreamReq, ResponseFlag } from './upstream/types.ts';

/** Envoy's default histogram buckets, which Istio keeps for all three of its histograms. */
export const ISTIO_BUCKETS: readonly number[] = Object.freeze([
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
]);

export const METRICS_PATH = '/stats/prometheus';

/** One metric family as prom-client's getMetricsAsJSON() returns it (and aggregate() takes). */
export interface MetricJson {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  /** How values of several processes combine (prom-client's aggregator names). */
  aggregator: 'sum' | 'first' | 'min';
  values: { value: number; labels: Record<string, string>; metricName?: string }[];
}

/** No Envoy response flag: Istio's `response_flags="-"`. */
export const NO_FLAGS = '-';

// Envoy prints flags in a fixed order; keeping one order keeps one series per combination.
const FLAG_ORDER = ['UH', 'UF', 'UO', 'NR', 'UT', 'UR', 'UC', 'URX', 'NC', 'DI', 'FI', 'RL', 'DC'];

/** Envoy's comma-joined flags, `-` for none; `extra` adds flags decided before forwarding (DI). */
export function flagString(flags: readonly (ResponseFlag | string)[], extra: string | null): string {
  if (flags.length === 0) return extra ?? NO_FLAGS;
  let out = '';
  for (let i = 0; i < FLAG_ORDER.length; i++) {
    const f = FLAG_ORDER[i];
    if (flags.includes(f) || f === extra) out = out === '' ? f : `${out},${f}`;
  }
  return out === '' ? NO_FLAGS : out;
}

/**
 * Request body bytes as far as the request says: its content-length, 0 for a request that
 * has no body, -1 (not observed) for a streamed body of unknown length.
 */
export function declaredRequestBytes(req: DownstreamReq): number {
  const h = req.headers;
  const cl = h['content-length'];
  if (cl !== undefined) {
    const n = Number(cl);
    return n >= 0 ? n : -1;
  }
  const stream = (req as { stream?: { endAfterHeaders: boolean } }).stream;
  if (stream !== undefined) return stream.endAfterHeaders ? 0 : -1;
  return h['transfer-encoding'] === undefined ? 0 : -1;
}

// ---------------------------------------------------------------- request series

class Hist {
  /** Per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  constructor() {
    this.counts = new Float64Array(ISTIO_BUCKETS.length + 1);
  }
}

function observe(h: Hist, v: number): void {
  const b = ISTIO_BUCKETS;
  const n = b.length;
  let i = 0;
  // Most observations are small: scanning up from the first bucket ends in a few steps.
  while (i < n && v > b[i]) i++;
  h.counts[i]++;
  h.sum += v;
}

/** One label set of the four istio_* families. */
class Series {
  readonly labels: Readonly<Record<string, string>>;
  requests = 0;
  readonly duration = new Hist();
  readonly requestBytes = new Hist();
  readonly responseBytes = new Hist();
  constructor(labels: Record<string, string>) {
    this.labels = Object.freeze(labels);
  }
}

/** What Istio's labels say about the proxy reporting (a gateway reports as `source`). */
interface SourceLabels {
  source_workload: string;
  source_workload_namespace: string;
  source_app: string;
  source_version: string;
  source_canonical_service: string;
  source_canonical_revision: string;
}

/** The destination labels of one cluster, and its series by status code. */
export class Destination {
  readonly service: string;
  readonly serviceName: string;
  readonly serviceNamespace: string;
  readonly version: string;
  /** HTTP, no flags: the common case, by status code. */
  readonly plain = new Map<number, Series>();
  /** Everything else (flags, gRPC), by `protocol|code|grpc-status|flags`. */
  readonly other = new Map<string, Series>();
  constructor(service: string, subset: string) {
    this.service = service;
    this.version = subset === '' ? 'unknown' : subset;
    const svc = '.svc.cluster.local';
    if (service !== 'unknown' && service.endsWith(svc)) {
      const parts = service.slice(0, -svc.length).split('.');
      this.serviceName = parts[0];
      this.serviceNamespace = parts.length === 2 ? parts[1] : 'unknown';
    } else {
      // ServiceEntry hosts (httpbin.org): Istio names the service by its host.
      this.serviceName = service;
      this.serviceNamespace = 'unknown';
    }
  }
}

/** `outbound|<port>|<subset>|<host>` (pilot's cluster names) → host and subset. */
function parseClusterName(name: string): { service: string; subset: string } {
  // Istio reports its two special clusters under their own names (dashboards filter on them).
  if (name === BLACKHOLE_CLUSTER || name === PASSTHROUGH_CLUSTER) return { service: name, subset: '' };
  const p = name.split('|');
  if (p.length === 4 && p[0] === 'outbound' && p[3] !== '') return { service: p[3], subset: p[2] };
  return { service: 'unknown', subset: '' };
}

function sourceLabels(p: ProxyIdentity | null): SourceLabels {
  const l = p?.labels ?? {};
  // Istio's stock ingress deployment is named istio-ingressgateway and labelled
  // istio=ingressgateway; a gateway with only that label reports the same workload name.
  const workload = l.app ?? (l.istio !== undefined ? `istio-${l.istio}` : (p?.id.split('~')[1] ?? 'unknown'));
  const app = l.app ?? workload;
  const version = l.version ?? 'unknown';
  return {
    source_workload: workload,
    source_workload_namespace: p?.namespace ?? 'unknown',
    source_app: app,
    source_version: version,
    source_canonical_service: l['service.istio.io/canonical-name'] ?? app,
    source_canonical_revision: l['service.istio.io/canonical-revision'] ?? (l.version ?? 'latest'),
  };
}

function seriesLabels(src: SourceLabels, d: Destination, grpc: boolean, code: number, grpcStatus: string, flags: string): Record<string, string> {
  // Istio's label set and order (reporter=source: the gateway is the client side).
  return {
    reporter: 'source',
    source_workload: src.source_workload,
    source_canonical_service: src.source_canonical_service,
    source_canonical_revision: src.source_canonical_revision,
    source_workload_namespace: src.source_workload_namespace,
    source_principal: 'unknown',
    source_app: src.source_app,
    source_version: src.source_version,
    source_cluster: 'unknown',
    destination_workload: 'unknown',
    destination_workload_namespace: 'unknown',
    destination_principal: 'unknown',
    destination_app: 'unknown',
    destination_version: d.version,
    destination_service: d.service,
    destination_canonical_service: 'unknown',
    destination_canonical_revision: 'latest',
    destination_service_name: d.serviceName,
    destination_service_namespace: d.serviceNamespace,
    destination_cluster: 'unknown',
    request_protocol: grpc ? 'grpc' : 'http',
    response_code: String(code),
    grpc_response_status: grpcStatus,
    response_flags: flags,
    connection_security_policy: 'unknown',
  };
}

// ---------------------------------------------------------------- policy counters

/** Envoy's 401 texts (policies/jwt.ts) → a short reason label; anything else is `other`. */
const JWT_REASONS: Record<string, string> = {
  'Jwt is expired': 'expired',
  'Jwt not yet valid': 'not_yet_valid',
  'Jwt verification fails': 'bad_signature',
  'Jwt issuer is not configured': 'issuer_not_configured',
  'Audiences in Jwt are not allowed': 'audience_not_allowed',
  'Jwt is not in the form of Header.Payload.Signature with valid JSON': 'malformed',
  'No keys are available to verify Jwt from this issuer': 'no_keys',
  'Jwks does not have a key to match kid or alg from Jwt': 'unknown_kid',
  'Request carries more than one Jwt': 'multiple_tokens',
};

interface Cell { labels: Readonly<Record<string, string>>; value: number }

/** A counter family of a few fixed label sets, each a cell found once and kept. */
class Cells {
  readonly byKey = new Map<string, Cell>();
  cell(key: string, labels: Record<string, string>): Cell {
    let c = this.byKey.get(key);
    if (c === undefined) {
      c = { labels: Object.freeze(labels), value: 0 };
      this.byKey.set(key, c);
    }
    return c;
  }
  values(): MetricJson['values'] {
    const out: MetricJson['values'] = [];
    for (const c of this.byKey.values()) out.push({ value: c.value, labels: { ...c.labels } });
    return out;
  }
}

// ---------------------------------------------------------------- egress

export type EgressVerdict = 'allowed' | 'blocked' | 'audited';

/** Distinct `destination_host` values per process; later hosts are counted as `other`. */
export const MAX_EGRESS_HOSTS = 1000;
/** Distinct egress label sets per process (hosts × ports × …); later ones fold into `other`. */
const MAX_EGRESS_SERIES = 10_000;

/** An open tunnel's byte counts, read when it closes and at scrape time while it is open. */
export interface TunnelBytes {
  /** Client → destination. */
  sent(): number;
  /** Destination → client. */
  received(): number;
}

export type TunnelFailure = 'sni_refused' | 'tcp_refused' | 'clienthello_invalid' | 'clienthello_timeout' | 'connect_error' | 'connect_timeout';

// ---------------------------------------------------------------- the metrics of one process

export interface GatewayMetricsOptions {
  /** The policies serving now (rate-limit counters are read from their status at scrape time). */
  policies?: () => PolicyRuntime | null;
}

export class GatewayMetrics {
  private source: SourceLabels = sourceLabels(null);
  private sourceKey = '';
  /** Every series ever made, in creation order (counters never go away). */
  private readonly all: Series[] = [];
  private byCluster = new Map<string, Destination>();
  private unknownDest = new Destination('unknown', '');
  private readonly policies: () => PolicyRuntime | null;

  private readonly jwt = new Cells();
  private readonly jwtOk: Cell;
  private readonly jwtNone: Cell;
  private readonly authz = new Cells();
  private readonly authzAllow: Cell;
  private readonly authzDeny: Cell;
  /** Last `allowed` value reported (it is derived, and a counter must never go down), per limiter counters object. */
  private rateLimitAllowed = 0;
  private rateLimitStats: object | null = null;

  private configVersion: string | null = null;
  private readonly applies = new Cells();

  /** meshgate_egress_requests_total, by `host|port|protocol|decision`. */
  private readonly egress = new Cells();
  /** Host label values handed out so far; beyond MAX_EGRESS_HOSTS a new host counts as `other`. */
  private readonly egressHosts = new Set<string>();
  private readonly tunnels = new Set<TunnelBytes>();
  /** Bytes of tunnels already closed; open ones are read at scrape time. */
  private tunnelSent = 0;
  private tunnelReceived = 0;
  private readonly tunnelFailures = new Cells();

  constructor(opts: GatewayMetricsOptions = {}) {
    this.policies = opts.policies ?? (() => null);
    this.jwtOk = this.jwt.cell('ok', { result: 'ok', reason: '' });
    this.jwtNone = this.jwt.cell('none', { result: 'none', reason: '' });
    this.authzAllow = this.authz.cell('allow', { result: 'allow' });
    this.authzDeny = this.authz.cell('deny', { result: 'deny' });
    this.applies.cell('ack', { result: 'ack' });
    this.applies.cell('nack', { result: 'nack' });
  }

  // -------------------------------------------------------------- at apply time

  /** The proxy's identity (source_* labels) and its clusters (destination_* labels). */
  configure(proxy: ProxyIdentity, clusters: readonly { name: string; service: string; subset: string | null }[]): void {
    const key = JSON.stringify([proxy.id, proxy.namespace, proxy.labels]);
    if (key !== this.sourceKey) {
      this.sourceKey = key;
      this.source = sourceLabels(proxy);
      // New label values: new series from here on; the old ones keep their counts.
      this.byCluster = new Map();
      this.unknownDest = new Destination('unknown', '');
    }
    const next = new Map<string, Destination>();
    for (const c of clusters) {
      const cur = this.byCluster.get(c.name);
      const subset = c.subset ?? '';
      if (c.name === PASSTHROUGH_CLUSTER || c.name === BLACKHOLE_CLUSTER) {
        next.set(c.name, cur ?? new Destination(c.name, ''));
        continue;
      }
      next.set(c.name, cur !== undefined && cur.service === c.service && cur.version === (subset === '' ? 'unknown' : subset) ? cur : new Destination(c.service, subset));
    }
    this.byCluster = next;
  }

  configApplied(version: string): void {
    this.configVersion = version;
    this.applies.byKey.get('ack')!.value++;
  }

  configRejected(): void {
    this.applies.byKey.get('nack')!.value++;
  }

  // -------------------------------------------------------------- per request

  /** Destination labels of a cluster; null (no route, or a route without clusters): unknown. */
  destination(cluster: string | null): Destination {
    if (cluster === null) return this.unknownDest;
    const d = this.byCluster.get(cluster);
    if (d !== undefined) return d;
    // A cluster the config does not list (NC): labels from its name, kept for next time.
    const p = parseClusterName(cluster);
    const made = new Destination(p.service, p.subset);
    this.byCluster.set(cluster, made);
    return made;
  }

  /**
   * One finished request. `grpcStatus` is '' for plain HTTP; `requestBytes` < 0 is not
   * observed (a streamed body of unknown length).
   */
  record(d: Destination, grpc: boolean, code: number, grpcStatus: string, flags: string, requestBytes: number, responseBytes: number, ms: number): void {
    let s: Series | undefined;
    if (!grpc && flags === NO_FLAGS) {
      s = d.plain.get(code);
      if (s === undefined) s = this.newSeries(d, false, code, '', NO_FLAGS, true);
    } else {
      const key = `${grpc ? 'g' : 'h'}|${code}|${grpcStatus}|${flags}`;
      s = d.other.get(key);
      if (s === undefined) s = this.newSeries(d, grpc, code, grpcStatus, flags, false);
    }
    s.requests++;
    observe(s.duration, ms);
    if (requestBytes >= 0) observe(s.requestBytes, requestBytes);
    observe(s.responseBytes, responseBytes);
  }

  private newSeries(d: Destination, grpc: boolean, code: number, grpcStatus: string, flags: string, plain: boolean): Series {
    const s = new Series(seriesLabels(this.source, d, grpc, code, grpcStatus, flags));
    if (plain) d.plain.set(code, s);
    else d.other.set(`${grpc ? 'g' : 'h'}|${code}|${grpcStatus}|${flags}`, s);
    this.all.push(s);
    return s;
  }

  /** A request passed every policy stage; `authenticated`: it carried a verified JWT. */
  policiesPassed(p: PolicyRuntime, authenticated: boolean): void {
    if (p.authn !== null) (authenticated ? this.jwtOk : this.jwtNone).value++;
    if (p.authz !== null) this.authzAllow.value++;
  }

  /**
   * A policy stage answered: 401 (authentication), 403 (authorization) or 429 (rate limit;
   * its own counts are read from the limiter). The stages before the one that answered
   * passed, and are counted as such.
   */
  policyDenied(p: PolicyRuntime, status: number, body: string, authenticated: boolean): void {
    if (status === 401) {
      const reason = JWT_REASONS[body] ?? 'other';
      this.jwt.cell(`fail|${reason}`, { result: 'fail', reason }).value++;
      return;
    }
    if (p.authn !== null) (authenticated ? this.jwtOk : this.jwtNone).value++;
    if (status === 403) this.authzDeny.value++;
    else if (p.authz !== null) this.authzAllow.value++;
  }

  // -------------------------------------------------------------- egress forward proxy

  /**
   * One forward-proxy decision (a plain request, or a tunnel once its ClientHello was
   * checked). The host label is whatever the client asked for, so the number of distinct
   * values is capped: a client cycling through random names cannot grow the scrape without
   * bound.
   */
  egressDecision(host: string, port: number, protocol: 'http' | 'connect', decision: EgressVerdict): void {
    let h = host;
    if (!this.egressHosts.has(h)) {
      if (this.egressHosts.size >= MAX_EGRESS_HOSTS) h = 'other';
      else this.egressHosts.add(h);
    }
    let key = `${h}|${port}|${protocol}|${decision}`;
    let c = this.egress.byKey.get(key);
    if (c === undefined) {
      // Ports multiply the host values; past the series cap the port is folded too.
      let p = String(port);
      if (this.egress.byKey.size >= MAX_EGRESS_SERIES) {
        h = 'other';
        p = 'other';
        key = `other|other|${protocol}|${decision}`;
      }
      c = this.egress.cell(key, { destination_host: h, destination_port: p, protocol, decision });
    }
    c.value++;
  }

  tunnelOpened(t: TunnelBytes): void {
    this.tunnels.add(t);
  }

  tunnelClosed(t: TunnelBytes): void {
    if (!this.tunnels.delete(t)) return;
    this.tunnelSent += t.sent();
    this.tunnelReceived += t.received();
  }

  /** A tunnel that was allowed at CONNECT but ended before carrying anything. */
  tunnelFailed(reason: TunnelFailure): void {
    const c = this.tunnelFailures.byKey.get(reason) ?? this.tunnelFailures.cell(reason, { reason });
    c.value++;
  }

  /** Per destination host: what the forward proxy decided so far (the admin port's /egress). */
  /**
   * The admin port's egress counts: this process's, plus those of `others` (the workers'
   * metrics, as they answered a scrape) — the same numbers /stats/prometheus sums.
   */
  egressSummary(others: MetricJson[][] = []): EgressSummary {
    const sum: EgressSummary = { processes: 1 + others.length, tunnelsActive: this.tunnels.size, hosts: {} };
    for (const c of this.egress.byKey.values()) addEgressCount(sum.hosts, c.labels, c.value);
    for (const proc of others) {
      for (const m of proc) {
        if (m.name === 'meshgate_egress_requests_total') for (const v of m.values) addEgressCount(sum.hosts, v.labels, v.value);
        else if (m.name === 'meshgate_egress_tunnels_active') for (const v of m.values) sum.tunnelsActive += v.value;
      }
    }
    return sum;
  }

  private egressJson(out: MetricJson[]): void {
    if (this.egress.byKey.size === 0 && this.tunnelFailures.byKey.size === 0 && this.tunnels.size === 0 && this.tunnelSent === 0) return;
    let sent = this.tunnelSent;
    let received = this.tunnelReceived;
    for (const t of this.tunnels) {
      sent += t.sent();
      received += t.received();
    }
    out.push(
      { name: 'meshgate_egress_requests_total', help: 'Egress forward-proxy decisions: plain HTTP requests (protocol http) and CONNECT tunnels (protocol connect), by destination; audited = let through by audit mode, REGISTRY_ONLY would block it.', type: 'counter', aggregator: 'sum', values: this.egress.values() },
      { name: 'meshgate_egress_tunnels_active', help: 'CONNECT tunnels open now.', type: 'gauge', aggregator: 'sum', values: [{ value: this.tunnels.size, labels: {} }] },
      {
        name: 'meshgate_egress_tunnel_bytes_total', help: 'Bytes carried by CONNECT tunnels: sent to the destination, received from it.', type: 'counter', aggregator: 'sum',
        values: [{ value: sent, labels: { direction: 'sent' } }, { value: received, labels: { direction: 'received' } }],
      },
      { name: 'meshgate_egress_tunnel_failures_total', help: 'CONNECT tunnels that ended before carrying data: ClientHello refused, timed out or too large; destination unreachable.', type: 'counter', aggregator: 'sum', values: this.tunnelFailures.values() },
    );
  }

  // -------------------------------------------------------------- at scrape time

  /** This process's metrics in prom-client's JSON shape (what a worker sends the first process). */
  json(): MetricJson[] {
    const all = this.all;
    const requests: MetricJson['values'] = [];
    const duration: MetricJson['values'] = [];
    const reqBytes: MetricJson['values'] = [];
    const resBytes: MetricJson['values'] = [];
    for (const s of all) {
      requests.push({ value: s.requests, labels: { ...s.labels } });
      histValues(duration, 'istio_request_duration_milliseconds', s.labels, s.duration);
      histValues(reqBytes, 'istio_request_bytes', s.labels, s.requestBytes);
      histValues(resBytes, 'istio_response_bytes', s.labels, s.responseBytes);
    }
    const out: MetricJson[] = [
      { name: 'istio_requests_total', help: 'Requests handled by this gateway (Istio standard metric).', type: 'counter', aggregator: 'sum', values: requests },
      { name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds, first byte in to last byte out (Istio standard metric).', type: 'histogram', aggregator: 'sum', values: duration },
      { name: 'istio_request_bytes', help: 'Request body size in bytes, from content-length (Istio standard metric).', type: 'histogram', aggregator: 'sum', values: reqBytes },
      { name: 'istio_response_bytes', help: 'Response body size in bytes (Istio standard metric).', type: 'histogram', aggregator: 'sum', values: resBytes },
      { name: 'meshgate_jwt_authentications_total', help: 'JWT authentication outcomes: ok (verified token), none (no token), fail (401, by reason).', type: 'counter', aggregator: 'sum', values: this.jwt.values() },
      { name: 'meshgate_authz_decisions_total', help: 'Authorization policy decisions.', type: 'counter', aggregator: 'sum', values: this.authz.values() },
      // Config is applied by every process; the first process's view is the gateway's.
      { name: 'meshgate_config_applies_total', help: 'Config versions applied (ack) or rejected (nack) by this gateway.', type: 'counter', aggregator: 'first', values: this.applies.values() },
      { name: 'meshgate_config_version_info', help: 'The config version serving now (value 1).', type: 'gauge', aggregator: 'first', values: this.configVersion === null ? [] : [{ value: 1, labels: { version: this.configVersion } }] },
    ];
    this.rateLimitJson(out);
    this.egressJson(out);
    return out;
  }

  private rateLimitJson(out: MetricJson[]): void {
    const limits = this.policies()?.limits ?? null;
    if (limits === null) return;
    const st = limits.status();
    const d = st.decisions;
    // Counters carry over between config versions with the same stats object; a new one
    // (limits removed, then added again) starts from zero, which Prometheus reads as a reset.
    if (limits.stats !== this.rateLimitStats) {
      this.rateLimitStats = limits.stats;
      this.rateLimitAllowed = 0;
    }
    // `checked` counts a request before its decision is known and the others after it, so
    // checked − rejected − shadowed briefly includes requests still being decided; holding
    // the last value keeps the counter from ever going down.
    const allowed = Math.max(this.rateLimitAllowed, d.checked - d.rejected - d.shadowed);
    this.rateLimitAllowed = allowed;
    out.push(
      {
        name: 'meshgate_ratelimit_decisions_total', help: 'Rate-limit decisions for requests some RateLimitPolicy covers: allowed, limited (429) or shadowed (would have been limited; shadow mode let it through).',
        type: 'counter', aggregator: 'sum',
        values: [
          { value: allowed, labels: { result: 'allowed' } },
          { value: d.rejected, labels: { result: 'limited' } },
          { value: d.shadowed, labels: { result: 'shadowed' } },
        ],
      },
      { name: 'meshgate_ratelimit_insurance_decisions_total', help: 'Global rate-limit decisions answered from memory because Redis was down or slow.', type: 'counter', aggregator: 'sum', values: [{ value: d.insurance, labels: {} }] },
      { name: 'meshgate_ratelimit_errors_total', help: 'Limiter failures that let the request through (fail open).', type: 'counter', aggregator: 'sum', values: [{ value: d.errors, labels: {} }] },
    );
    if (st.redis.state !== 'not-configured') {
      out.push(
        { name: 'meshgate_ratelimit_redis_up', help: 'Whether Redis, where global rate limits are shared, is reachable (1) or not (0: each replica counts alone).', type: 'gauge', aggregator: 'min', values: [{ value: st.redis.state === 'up' ? 1 : 0, labels: {} }] },
        { name: 'meshgate_ratelimit_redis_outages_total', help: 'Times Redis went from reachable to unreachable.', type: 'counter', aggregator: 'sum', values: [{ value: st.redis.outages, labels: {} }] },
      );
    }
  }
}

function histValues(out: MetricJson['values'], name: string, labels: Readonly<Record<string, string>>, h: Hist): void {
  const b = ISTIO_BUCKETS;
  let cum = 0;
  for (let i = 0; i < b.length; i++) {
    cum += h.counts[i];
    out.push({ value: cum, labels: { ...labels, le: String(b[i]) }, metricName: `${name}_bucket` });
  }
  cum += h.counts[b.length];
  out.push({ value: cum, labels: { ...labels, le: '+Inf' }, metricName: `${name}_bucket` });
  out.push({ value: h.sum, labels: { ...labels }, metricName: `${name}_sum` });
  out.push({ value: cum, labels: { ...labels }, metricName: `${name}_count` });
}

/** Text exposition of several processes' metrics, summed (or as each family's aggregator says). */
export interface EgressSummary {
  /** Processes whose counts are in (the first one and the workers that answered). */
  processes: number;
  tunnelsActive: number;
  /** `host:port` → decisions (allowed, blocked, audited). */
  hosts: Record<string, Record<string, number>>;
}

function addEgressCount(hosts: EgressSummary['hosts'], l: Record<string, string>, value: number): void {
  const row = hosts[`${l.destination_host}:${l.destination_port}`] ??= { allowed: 0, blocked: 0, audited: 0 };
  row[l.decision] = (row[l.decision] ?? 0) + value;
}

export async function renderMetrics(perProcess: MetricJson[][]): Promise<string> {
  const registry = AggregatorRegistry.aggregate(perProcess as object[]) as Registry;
  return registry.metrics();
}

// ---------------------------------------------------------------- the :15090 server

export interface MetricsServer { server: http.Server; port: number }

/**
 * Serves `/stats/prometheus` on every address, as Istio's 15090 does (Prometheus scrapes it
 * from outside the pod); it exposes counts, never config.
 */
export async function startMetricsServer(render: () => Promise<string>, port: number): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { 'content-length': '0' }); res.end(); return; }
    if (path !== METRICS_PATH) {
      const body = `not found: metrics are at ${METRICS_PATH}\n`;
      res.writeHead(404, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    render().then((text) => {
      res.writeHead(200, { 'content-type': Registry.PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : text);
    }, (err: unknown) => {
      const body = `metrics unavailable: ${(err as Error).message}\n`;
      res.writeHead(500, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 5_000;
  try {
    const bound = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port }, () => {
        server.removeListener('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
    return { server, port: bound };
  } catch (e) {
    throw new Error(`metrics port ${port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
