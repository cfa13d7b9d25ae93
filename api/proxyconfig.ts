import type { EgressConfig, PolicyConfig } from './policy.ts';

// The compiled configuration pilot pushes to a proxy. It is plain JSON (it crosses the
// discovery connection and is printed by config_dump), self-contained (certificates are
// inlined, hosts fully qualified, durations in milliseconds) and carries, on every object,
// the name of the resource and rule it came from (`source`), so a dump leads back to YAML.
//
// The data plane compiles this once per version into its runtime tables (regexes, host
// maps, pools); nothing here is re-read per request.

export interface ProxyIdentity {
  /** Unique per proxy instance, e.g. `gateway~istio-ingressgateway-7d4f~istio-system`. */
  id: string;
  /** Namespace the proxy runs in (Istio: the gateway deployment's namespace). */
  namespace: string;
  /** Workload labels; Gateways select proxies by these. */
  labels: Record<string, string>;
  /**
   * The proxy runs the egress forward proxy (`gateway --labels istio=egressgateway`, or
   * `--egress`): pilot adds `ProxyConfig.egress`. Absent or false: no egress section.
   */
  egress?: boolean;
}

export interface ProxyConfig {
  /** Set by discovery: a content hash of the rest, so an unchanged config is not re-pushed. */
  version: string;
  proxy: ProxyIdentity;
  listeners: Listener[];
  /** Every cluster a route, mirror or redirect of this proxy refers to, sorted by name. */
  clusters: Cluster[];
  /** Authentication, authorization and rate-limit policies that apply to this proxy. */
  policies: PolicyConfig;
  /** Only for proxies whose identity says `egress: true`. */
  egress?: EgressProxyConfig;
}

// ---------------------------------------------------------------- egress

/** The cluster name of Istio's ORIGINAL_DST cluster: connect to the host:port the request names. */
export const PASSTHROUGH_CLUSTER = 'PassthroughCluster';
/** The name Istio's metrics use for what REGISTRY_ONLY refused. */
export const BLACKHOLE_CLUSTER = 'BlackHoleCluster';

/**
 * Istio's catch-all virtual host of an outbound route table: whatever host the allowlist let
 * through goes where it asked to. Pilot ends every outbound listener with it; the data plane
 * uses it alone for ports that have no outbound listener.
 */
export function passthroughVirtualHost(name: string): VirtualHost {
  return {
    name,
    domains: ['*'],
    httpsRedirect: false,
    routes: [{
      name: 'passthrough',
      routeName: null,
      match: [],
      action: { kind: 'route', clusters: [{ cluster: PASSTHROUGH_CLUSTER, weight: 100, requestHeaders: null, responseHeaders: null }], totalWeight: 100 },
      rewrite: null,
      timeoutMs: null,
      // The destination is whatever the client named: do not replay its requests elsewhere.
      retries: null,
      fault: null,
      mirrors: [],
      cors: null,
      requestHeaders: null,
      responseHeaders: null,
    }],
  };
}

/**
 * What an egress proxy runs besides its Gateway listeners: the allowlist, and the mesh's
 * outbound routing for the plain HTTP requests its forward proxy accepts.
 *
 * The forward proxy (absolute-form `GET http://host:port/…`, origin-form with a Host header,
 * and `CONNECT host:port`) first asks `policy` whether host:port may be reached; a blocked
 * destination gets 502 naming host and reason and never reaches routing. An allowed plain
 * HTTP request is then routed exactly like a request to a Gateway listener, through the
 * `outbound` listener of its destination port (virtual host by host name, first matching
 * route). A port with no outbound listener, or a host with no virtual host, goes to
 * PASSTHROUGH_CLUSTER. CONNECT tunnels are not routed: the proxy connects to the named
 * host:port (resolved by the proxy's resolver) once the ClientHello's SNI passed `policy`.
 */
export interface EgressProxyConfig {
  /** The allowlist: mode and audit from the mesh config, entries from every ServiceEntry that compiled. */
  policy: EgressConfig;
  /**
   * One listener per destination port (name `outbound_<port>`, address `0.0.0.0`, protocol
   * `HTTP`, tls null), sorted by port, as a sidecar's outbound route tables: virtual hosts
   * from VirtualServices that bind to `mesh` (no `gateways`, or `gateways` lists `mesh`)
   * and, for every other non-wildcard ServiceEntry host with an HTTP-family port, a default
   * route to `outbound|<port>||<host>`; last, a `*` virtual host routing to
   * PASSTHROUGH_CLUSTER. Every cluster these routes name is in ProxyConfig.clusters
   * (PASSTHROUGH_CLUSTER included, with no endpoints and `dns: true`).
   */
  outbound: Listener[];
}

// ---------------------------------------------------------------- listeners

export type ListenerProtocol = 'HTTP' | 'HTTPS' | 'HTTP2' | 'GRPC';

export interface Listener {
  /** `0.0.0.0_8080` as Envoy names them. */
  name: string;
  /** Bind address; `0.0.0.0` unless a Server sets `bind`. */
  address: string;
  port: number;
  /** The protocol of the port's servers (all servers on one port share it; pilot checks). */
  protocol: ListenerProtocol;
  /** Null for plaintext; otherwise the certificates to pick from by SNI. */
  tls: ListenerTls | null;
  /** Virtual hosts for this port, most specific domain first (see VirtualHost.domains). */
  virtualHosts: VirtualHost[];
  /** The Gateway servers that make up this listener: `gateway/<ns>/<name>/server/<i>`. */
  sources: string[];
}

export interface ListenerTls {
  /**
   * Candidate certificates, in the order Envoy's filter chain match picks them: a server
   * whose `sniHosts` contains the exact SNI, then the longest wildcard suffix, then `*`.
   * Connections without SNI get the first entry whose sniHosts contains `*`, else the first.
   */
  certificates: ServerCertificate[];
}

export interface ServerCertificate {
  /** `gateway/<ns>/<name>/server/<i>` */
  source: string;
  /** Lower-cased server hosts without their `ns/` prefix: `example.com`, `*.example.com`, `*`. */
  sniHosts: string[];
  mode: 'SIMPLE' | 'MUTUAL';
  /**
   * Key material comes either inline (from a `credentialName` Secret, resolved by pilot) or
   * as file paths (`serverCertificate`/`privateKey`/`caCertificates`): those name files on
   * the proxy's own filesystem, as in Istio, so the data plane reads them when it applies
   * the config (and NACKs if it cannot).
   */
  certPem: string | null;
  keyPem: string | null;
  certFile: string | null;
  keyFile: string | null;
  /** CA bundle that client certificates must chain to (MUTUAL only). */
  caPem: string | null;
  caFile: string | null;
  /** Client certificate SANs accepted (MUTUAL only); empty = any cert from the CA. */
  subjectAltNames: string[];
  minVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  maxVersion: 'TLSv1.2' | 'TLSv1.3' | null;
  /** OpenSSL cipher names; empty = node's defaults. */
  cipherSuites: string[];
  /** ALPN protocols offered, e.g. ['h2', 'http/1.1']. */
  alpn: string[];
}

export interface VirtualHost {
  /** `<host>:<port>` as Istio names them, e.g. `bookinfo.com:80`, `*:8080`. */
  name: string;
  /**
   * Lower-cased domains this virtual host answers for: exact names, `*.suffix` wildcards,
   * or `*`. The data plane picks a virtual host by the request's authority (port removed):
   * exact first, then the longest matching `*.suffix`, then `*`.
   */
  domains: string[];
  /** From the Gateway server's `tls.httpsRedirect`: answer every request with 301 to https. */
  httpsRedirect: boolean;
  /** In order; the first route whose match succeeds wins. No match: 404. */
  routes: Route[];
}

// ---------------------------------------------------------------- routes

/** A compiled string matcher. `regex` is RE2 syntax and must match the whole value. */
export type StringMatcher =
  | { kind: 'exact'; value: string }
  | { kind: 'prefix'; value: string }
  | { kind: 'regex'; value: string }
  /** `{}` in Istio: the header/param is present with any value. */
  | { kind: 'present' };

export interface KeyMatcher { name: string; match: StringMatcher }

/** All set fields must match (AND). A route's `match` list is ORed. */
export interface RouteMatch {
  /** The HTTPMatchRequest name, or `match/<j>`. */
  name: string;
  /** Matched against the normalised path without the query string. */
  uri: StringMatcher | null;
  scheme: StringMatcher | null;
  method: StringMatcher | null;
  /** Matched against the Host/:authority header, port included if the client sent one. */
  authority: StringMatcher | null;
  /** Header names lower-cased. */
  headers: KeyMatcher[];
  /** Headers that must NOT match (absent, or with a value that does not match). */
  withoutHeaders: KeyMatcher[];
  queryParams: KeyMatcher[];
  /** uri (and only uri) is compared case-insensitively. Pilot lower-cases uri values. */
  ignoreUriCase: boolean;
}

export interface HeaderOps {
  /** Lower-cased names. `set` replaces, `add` appends, `remove` deletes. */
  set: [string, string][];
  add: [string, string][];
  remove: string[];
}

export interface WeightedCluster {
  /** Cluster name; may name a cluster that has no endpoints (503 no healthy upstream). */
  cluster: string;
  weight: number;
  /** Per-destination header edits, applied after the route's. */
  requestHeaders: HeaderOps | null;
  responseHeaders: HeaderOps | null;
}

export type RouteAction =
  | { kind: 'route'; clusters: WeightedCluster[]; totalWeight: number }
  | {
      kind: 'redirect';
      /** Replaces the whole path (query kept) when set. */
      uri: string | null;
      authority: string | null;
      /** Explicit port, or derive it. null + derivePort null = keep the request's port. */
      port: number | null;
      derivePort: 'FROM_PROTOCOL_DEFAULT' | 'FROM_REQUEST_PORT' | null;
      scheme: string | null;
      /** Default 301. */
      code: number;
    }
  | { kind: 'directResponse'; status: number; body: string | null; bodyBase64: boolean };

export interface RetryPolicy {
  /** Retries after the first try (Istio's `attempts`). */
  attempts: number;
  /** Null: each try may use the whole route timeout. */
  perTryTimeoutMs: number | null;
  /**
   * Envoy retry policy names: 5xx, gateway-error, reset, connect-failure, retriable-4xx,
   * refused-stream, retriable-status-codes, retriable-headers, cancelled, deadline-exceeded,
   * internal, resource-exhausted, unavailable (the last five are gRPC statuses).
   */
  retryOn: string[];
  /** Status codes listed in retryOn (Istio lets you list them there); retried as such. */
  retriableStatusCodes: number[];
}

export interface FaultPolicy {
  delay: { ms: number; percent: number } | null;
  abort: { httpStatus: number | null; grpcStatus: string | null; percent: number } | null;
}

export interface MirrorPolicy {
  cluster: string;
  /** 0–100 */
  percent: number;
}

export interface CorsPolicy {
  allowOrigins: StringMatcher[];
  allowMethods: string[];
  allowHeaders: string[];
  exposeHeaders: string[];
  /** Seconds, or null. */
  maxAgeSeconds: number | null;
  allowCredentials: boolean;
  /** What to do with a preflight whose origin does not match: forward it (Istio's default) or answer it. */
  unmatchedPreflights: 'FORWARD' | 'IGNORE';
}

export interface Route {
  /** `virtualservice/<ns>/<name>/http/<i>`; `http/<i>` is the index in the VirtualService. */
  name: string;
  /** The HTTPRoute `name`, when set. */
  routeName: string | null;
  /** ORed. Empty: matches every request. */
  match: RouteMatch[];
  action: RouteAction;
  rewrite: {
    /** Replaces the matched prefix (prefix match) or the whole path (other matches). */
    uri: string | null;
    authority: string | null;
    /** RE2 pattern and substitution (`\1` style groups), applied to the path. */
    uriRegex: { match: string; rewrite: string } | null;
  } | null;
  /** Null: no timeout (Istio's default for HTTP routes). */
  timeoutMs: number | null;
  /** Istio's default when `retries` is not set: 2 attempts on connect-failure,refused-stream,unavailable,cancelled,503. */
  retries: RetryPolicy | null;
  fault: FaultPolicy | null;
  mirrors: MirrorPolicy[];
  cors: CorsPolicy | null;
  requestHeaders: HeaderOps | null;
  responseHeaders: HeaderOps | null;
}

// ---------------------------------------------------------------- clusters

export interface Endpoint {
  /** IP address, or a DNS name when the cluster's `dns` is true. */
  address: string;
  port: number;
  labels: Record<string, string>;
  /** Relative weight for load balancing; default 1. */
  weight: number;
}

export type LoadBalancer =
  | { kind: 'ROUND_ROBIN' }
  | { kind: 'LEAST_REQUEST' }
  | { kind: 'RANDOM' }
  | { kind: 'CONSISTENT_HASH'; by: 'header' | 'cookie' | 'sourceIp' | 'queryParam'; name: string | null; cookiePath: string | null; cookieTtlMs: number | null };

export interface ConnectionPool {
  /** Max upstream connections per endpoint. Envoy's default is effectively unlimited; ours 1024. */
  maxConnections: number;
  connectTimeoutMs: number;
  /** Requests allowed to wait for a connection; beyond it, 503 (overflow). */
  maxPendingRequests: number;
  /** 0 = unlimited. */
  maxRequestsPerConnection: number;
  /** Idle upstream connections are closed after this long. */
  idleTimeoutMs: number;
  /** Concurrent requests over HTTP/2 to one endpoint. */
  http2MaxRequests: number;
}

export interface OutlierDetectionPolicy {
  /** 0 = disabled. */
  consecutive5xx: number;
  /** 0 = disabled. 502, 503, 504 and connect failures. */
  consecutiveGatewayErrors: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
  minHealthPercent: number;
}

export interface UpstreamTls {
  mode: 'SIMPLE' | 'MUTUAL';
  /** SNI to send; default: the service host name. */
  sni: string;
  /** Null (and caFile null): the system's CA store. */
  caPem: string | null;
  certPem: string | null;
  keyPem: string | null;
  /** Paths on the proxy's filesystem (DestinationRule tls caCertificates etc.), read at apply time. */
  caFile: string | null;
  certFile: string | null;
  keyFile: string | null;
  subjectAltNames: string[];
  insecureSkipVerify: boolean;
}

export interface Cluster {
  /** `outbound|<port>|<subset>|<host>` as Istio names them (subset empty when none). */
  name: string;
  /** Fully qualified service host, e.g. `reviews.default.svc.cluster.local`. */
  service: string;
  port: number;
  subset: string | null;
  /** How to speak to the endpoints, from the service port's protocol (and tls). */
  protocol: 'http1' | 'http2';
  /** Endpoints are DNS names resolved at connect time (ServiceEntry resolution DNS). */
  dns: boolean;
  tls: UpstreamTls | null;
  endpoints: Endpoint[];
  lb: LoadBalancer;
  connectionPool: ConnectionPool;
  outlierDetection: OutlierDetectionPolicy | null;
  /** What made this cluster: `serviceentry/<ns>/<name>`, `destinationrule/<ns>/<name>[/subset/<s>]`. */
  sources: string[];
}

/** Istio's defaults for a route without `retries`. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  attempts: 2,
  perTryTimeoutMs: null,
  retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
  retriableStatusCodes: [503],
};

export const DEFAULT_CONNECTION_POOL: ConnectionPool = {
  maxConnections: 1024,
  connectTimeoutMs: 10_000,
  maxPendingRequests: 1024,
  maxRequestsPerConnection: 0,
  idleTimeoutMs: 60 * 60 * 1000,
  http2MaxRequests: 1024,
};
