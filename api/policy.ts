// Compiled security policy, the form pilot will push to a proxy (translated from
// RequestAuthentication, AuthorizationPolicy and meshgate's own RateLimitPolicy) and the
// policies/ modules compile into matchers once per config version. Plain JSON, every object
// names the resource it came from (`source`), as in proxyconfig.ts.
//
// The request pipeline runs them in this order: authentication (JWT) → authorization →
// rate limit → route (see DESIGN.md).

// ---------------------------------------------------------------- request facts

/**
 * What policies may look at, built once per request by the data plane. Header names are
 * lower-case; each header keeps every value it was sent with (a policy checks each value,
 * never the comma-joined string: CVE-2026-26308).
 */
export interface RequestFacts {
  method: string;
  /** Normalised path (same normalisation as routing), without query or fragment. */
  path: string;
  /** Raw query string without `?`. */
  query: string;
  /** Host/:authority, lower-cased, port removed. */
  host: string;
  /** The Gateway port the request arrived on. */
  port: number;
  headers: Record<string, string[]>;
  /** Peer address of the connection. */
  sourceIp: string;
  /** Client address from X-Forwarded-For per the trusted hop count, else sourceIp. */
  remoteIp: string;
  /** TLS SNI, or '' for plaintext. */
  sni: string;
  /** Peer identity from mTLS (SPIFFE URI), or '' (none at the edge until the CA exists). */
  peerPrincipal: string;
  /** Peer namespace from mTLS, or ''. */
  peerNamespace: string;
}

// ---------------------------------------------------------------- JWT (RequestAuthentication)

export interface JwtHeaderSource { name: string; prefix: string }

export interface JwtRule {
  /** `requestauthentication/<ns>/<name>/jwtRules/<i>` */
  source: string;
  issuer: string;
  /** Empty: any audience. */
  audiences: string[];
  /** Exactly one of jwksUri / jwks is set. */
  jwksUri: string | null;
  /** Inline JWKS JSON text. */
  jwks: string | null;
  /** Default when the resource names none of fromHeaders/fromParams/fromCookies: Authorization: Bearer, and ?access_token. */
  fromHeaders: JwtHeaderSource[];
  fromParams: string[];
  fromCookies: string[];
  /** Default false: the token is removed before the request is proxied. */
  forwardOriginalToken: boolean;
  /** Header to carry the verified payload (base64url JSON), or null. */
  outputPayloadToHeader: string | null;
  outputClaimToHeaders: { header: string; claim: string }[];
  /** JWKS fetch timeout. */
  timeoutMs: number;
  /** JWKS refresh interval (Istio's default 20 min). */
  refreshMs: number;
  /**
   * jwksUri may point at loopback / link-local / private addresses only when true
   * (SSRF: GHSA-fgw5-hp8f-xfhc). Set from an annotation on the resource, off by default.
   */
  allowPrivateJwksUri: boolean;
  /** PEM CA bundle to verify the JWKS server with; null = the system's CAs. */
  jwksCaPem: string | null;
}

// ---------------------------------------------------------------- AuthorizationPolicy

/** Each list null when absent. Values of one field are ORed, fields ANDed, `not*` negated. */
export interface AuthzSource {
  principals: string[] | null;
  notPrincipals: string[] | null;
  requestPrincipals: string[] | null;
  notRequestPrincipals: string[] | null;
  namespaces: string[] | null;
  notNamespaces: string[] | null;
  ipBlocks: string[] | null;
  notIpBlocks: string[] | null;
  remoteIpBlocks: string[] | null;
  notRemoteIpBlocks: string[] | null;
}

export interface AuthzOperation {
  hosts: string[] | null;
  notHosts: string[] | null;
  ports: string[] | null;
  notPorts: string[] | null;
  methods: string[] | null;
  notMethods: string[] | null;
  paths: string[] | null;
  notPaths: string[] | null;
}

export interface AuthzCondition {
  /** `request.auth.claims[groups]`, `request.headers[x-token]`, `source.ip`, `remote.ip`, `destination.port`, `connection.sni`, `request.auth.principal`, `request.auth.audiences`, `request.auth.presenter`, `source.namespace`, `source.principal`. */
  key: string;
  values: string[] | null;
  notValues: string[] | null;
}

/** A rule matches when any `from` matches (or there is none), any `to`, and every `when`. */
export interface AuthzRule {
  from: AuthzSource[];
  to: AuthzOperation[];
  when: AuthzCondition[];
}

export interface AuthzPolicy {
  /** `authorizationpolicy/<ns>/<name>` */
  source: string;
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  /**
   * Istio: a policy without `rules` matches nothing (ALLOW: allows nothing, so denies all;
   * DENY: denies nothing); a rule `{}` matches everything.
   */
  rules: AuthzRule[];
}

// ---------------------------------------------------------------- rate limits (meshgate.io RateLimitPolicy)

export type RateLimitKeyPart =
  | { kind: 'remoteAddress' }
  | { kind: 'header'; name: string }
  | { kind: 'claim'; name: string }
  | { kind: 'path' }
  | { kind: 'method' }
  | { kind: 'host' };

export interface RateLimitAmount {
  requests: number;
  unit: 'second' | 'minute' | 'hour';
  /** Extra requests allowed above `requests` in a burst (token bucket size = requests + burst). */
  burst: number;
}

export interface RateLimitRule {
  /** `ratelimitpolicy/<ns>/<name>/rules/<i>` */
  source: string;
  name: string;
  limit: RateLimitAmount;
  /** The counter key: the values of these parts, joined. Empty: one counter for everything the rule covers. */
  key: RateLimitKeyPart[];
  /** When every listed key part has the given value, this limit applies instead (e.g. claim plan=gold). */
  overrides: { match: { part: RateLimitKeyPart; value: string }[]; limit: RateLimitAmount }[];
}

export interface RateLimitPolicy {
  /** `ratelimitpolicy/<ns>/<name>` */
  source: string;
  /** local: each replica counts alone; global: replicas share the count in Redis. */
  mode: 'local' | 'global';
  /** Count and report, never reject. */
  shadow: boolean;
  /** Hosts (lower-case, exact or `*.suffix`) the policy covers; empty: all. */
  hosts: string[];
  /** Route names (`virtualservice/<ns>/<name>/http/<i>` or the HTTPRoute `name`) covered; empty: all. */
  routes: string[];
  rules: RateLimitRule[];
}

export interface PolicyConfig {
  jwtRules: JwtRule[];
  authorization: AuthzPolicy[];
  rateLimits: RateLimitPolicy[];
  /** How many X-Forwarded-For hops in front of the gateway are trusted (Istio's numTrustedProxies). */
  numTrustedProxies: number;
}

// ---------------------------------------------------------------- egress allowlist (ServiceEntry + outboundTrafficPolicy)

/** A ServiceEntry port as the allowlist reads it. */
export interface EgressPort {
  number: number;
  /** As written (any case): HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO, MYSQL, REDIS. '' when absent (rejected: no guessing from the name). */
  protocol: string;
  name: string;
}

/**
 * One ServiceEntry, as the egress allowlist needs it. Lists mirror the resource's
 * `spec.hosts` / `spec.addresses` / `spec.ports` index for index, so a problem's field path
 * (`spec.ports[1].protocol`) points into the YAML the user wrote.
 */
export interface EgressEntry {
  /** `serviceentry/<ns>/<name>` */
  source: string;
  /** Lower-cased, short names already qualified; exact names or `*.suffix`. */
  hosts: string[];
  /** CIDR blocks (`140.82.112.0/20`, `2001:db8::/32`) or single addresses. */
  addresses: string[];
  ports: EgressPort[];
  location: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  resolution: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';
  /**
   * resolution STATIC: where the hosts really are (IP addresses; `ports` maps a port's name
   * to the endpoint's port when it differs). Tunnels go there instead of to a DNS answer
   * for the name, as Envoy's STATIC cluster does. Absent for the other resolutions.
   */
  endpoints?: EgressEndpoint[];
}

export interface EgressEndpoint {
  address: string;
  ports: Record<string, number>;
}

export interface EgressConfig {
  /** Istio's meshConfig.outboundTrafficPolicy.mode; REGISTRY_ONLY for the egress gateway by default. */
  mode: 'REGISTRY_ONLY' | 'ALLOW_ANY';
  /** Let everything through, but mark what REGISTRY_ONLY would have blocked (to log and count it). */
  audit: boolean;
  /** In snapshot order: when two entries declare the same host and port, the first one is named. */
  entries: EgressEntry[];
}
