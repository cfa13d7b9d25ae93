// TypeScript shapes of the resources meshgate accepts. They mirror Istio's API
// (networking.istio.io v1 / v1beta1 / v1alpha3 share one shape) and only list the
// fields meshgate reads; validation (api/validate.ts) warns about the rest by name.
import type { MeshConfig } from './meshconfig.ts';

export interface ObjectMeta {
  name: string;
  /** Always set after loading: files without a namespace are in `default`. */
  namespace: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
}

/** Where a resource came from, so every message can point back to it. */
export interface SourceRef {
  /** File path as given to the loader (relative to the config dir when loaded from one). */
  file: string;
  /** 1-based line of the document's first line in the file. */
  line: number;
  /** 0-based index of the YAML document in the file. */
  doc: number;
}

export interface Resource<K extends string = string, S = unknown> {
  apiVersion: string;
  kind: K;
  metadata: ObjectMeta;
  spec: S;
  source: SourceRef;
}

export type StringMatch = { exact: string } | { prefix: string } | { regex: string } | Record<string, never>;

export interface PortSelector { number?: number }
export interface Percent { value?: number }

// ---------------------------------------------------------------- Gateway

export interface GatewaySpec {
  selector?: Record<string, string>;
  servers?: Server[];
}

export interface Server {
  port: { number: number; name?: string; protocol: string; targetPort?: number };
  bind?: string;
  hosts: string[];
  tls?: ServerTLSSettings;
  name?: string;
}

export interface ServerTLSSettings {
  httpsRedirect?: boolean;
  mode?: 'PASSTHROUGH' | 'SIMPLE' | 'MUTUAL' | 'AUTO_PASSTHROUGH' | 'ISTIO_MUTUAL' | 'OPTIONAL_MUTUAL';
  serverCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  credentialName?: string;
  subjectAltNames?: string[];
  minProtocolVersion?: TLSVersion;
  maxProtocolVersion?: TLSVersion;
  cipherSuites?: string[];
}
export type TLSVersion = 'TLS_AUTO' | 'TLSV1_0' | 'TLSV1_1' | 'TLSV1_2' | 'TLSV1_3';

// ---------------------------------------------------------------- VirtualService

export interface VirtualServiceSpec {
  hosts?: string[];
  gateways?: string[];
  http?: HTTPRoute[];
  tls?: unknown[];
  tcp?: unknown[];
  exportTo?: string[];
}

export interface HTTPRoute {
  name?: string;
  match?: HTTPMatchRequest[];
  route?: HTTPRouteDestination[];
  redirect?: HTTPRedirect;
  directResponse?: HTTPDirectResponse;
  delegate?: { name?: string; namespace?: string };
  rewrite?: HTTPRewrite;
  timeout?: string;
  retries?: HTTPRetry;
  fault?: HTTPFaultInjection;
  mirror?: Destination;
  mirrors?: HTTPMirrorPolicy[];
  mirrorPercentage?: Percent;
  corsPolicy?: CorsPolicy;
  headers?: Headers;
}

export interface HTTPMatchRequest {
  name?: string;
  uri?: StringMatch;
  scheme?: StringMatch;
  method?: StringMatch;
  authority?: StringMatch;
  headers?: Record<string, StringMatch>;
  port?: number;
  sourceLabels?: Record<string, string>;
  gateways?: string[];
  queryParams?: Record<string, StringMatch>;
  ignoreUriCase?: boolean;
  withoutHeaders?: Record<string, StringMatch>;
  sourceNamespace?: string;
  statPrefix?: string;
}

export interface Destination {
  host: string;
  subset?: string;
  port?: PortSelector;
}

export interface HTTPRouteDestination {
  destination: Destination;
  weight?: number;
  headers?: Headers;
}

export interface HeaderOperations {
  set?: Record<string, string>;
  add?: Record<string, string>;
  remove?: string[];
}
export interface Headers { request?: HeaderOperations; response?: HeaderOperations }

export interface HTTPRedirect {
  uri?: string;
  authority?: string;
  port?: number;
  derivePort?: 'FROM_PROTOCOL_DEFAULT' | 'FROM_REQUEST_PORT';
  scheme?: string;
  redirectCode?: number;
}

export interface HTTPDirectResponse {
  status: number;
  body?: { string?: string; bytes?: string };
}

export interface HTTPRewrite {
  uri?: string;
  authority?: string;
  uriRegexRewrite?: { match: string; rewrite: string };
}

export interface HTTPRetry {
  attempts?: number;
  perTryTimeout?: string;
  retryOn?: string;
  retryRemoteLocalities?: boolean;
}

export interface HTTPFaultInjection {
  delay?: { fixedDelay?: string; percentage?: Percent; percent?: number };
  abort?: { httpStatus?: number; grpcStatus?: string; percentage?: Percent };
}

export interface HTTPMirrorPolicy { destination: Destination; percentage?: Percent }

export interface CorsPolicy {
  allowOrigins?: StringMatch[];
  allowMethods?: string[];
  allowHeaders?: string[];
  exposeHeaders?: string[];
  maxAge?: string;
  allowCredentials?: boolean;
  unmatchedPreflights?: 'UNSPECIFIED' | 'FORWARD' | 'IGNORE';
}

// ---------------------------------------------------------------- DestinationRule

export interface DestinationRuleSpec {
  host: string;
  trafficPolicy?: TrafficPolicy;
  subsets?: Subset[];
  exportTo?: string[];
  workloadSelector?: { matchLabels?: Record<string, string> };
}

export interface Subset {
  name: string;
  labels?: Record<string, string>;
  trafficPolicy?: TrafficPolicy;
}

export interface TrafficPolicy {
  loadBalancer?: LoadBalancerSettings;
  connectionPool?: ConnectionPoolSettings;
  outlierDetection?: OutlierDetection;
  tls?: ClientTLSSettings;
  portLevelSettings?: PortTrafficPolicy[];
}

export interface PortTrafficPolicy {
  port?: PortSelector;
  loadBalancer?: LoadBalancerSettings;
  connectionPool?: ConnectionPoolSettings;
  outlierDetection?: OutlierDetection;
  tls?: ClientTLSSettings;
}

export interface LoadBalancerSettings {
  simple?: 'UNSPECIFIED' | 'LEAST_CONN' | 'RANDOM' | 'PASSTHROUGH' | 'ROUND_ROBIN' | 'LEAST_REQUEST';
  consistentHash?: {
    httpHeaderName?: string;
    httpCookie?: { name: string; path?: string; ttl?: string };
    useSourceIp?: boolean;
    httpQueryParameterName?: string;
    ringHash?: { minimumRingSize?: number };
    maglev?: { tableSize?: number };
    minimumRingSize?: number;
  };
  localityLbSetting?: unknown;
  warmupDurationSecs?: string;
}

export interface ConnectionPoolSettings {
  tcp?: { maxConnections?: number; connectTimeout?: string; idleTimeout?: string; maxConnectionDuration?: string; tcpKeepalive?: unknown };
  http?: {
    http1MaxPendingRequests?: number;
    http2MaxRequests?: number;
    maxRequestsPerConnection?: number;
    maxRetries?: number;
    idleTimeout?: string;
    h2UpgradePolicy?: 'DEFAULT' | 'DO_NOT_UPGRADE' | 'UPGRADE';
    useClientProtocol?: boolean;
    maxConcurrentStreams?: number;
  };
}

export interface OutlierDetection {
  consecutiveErrors?: number;
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  interval?: string;
  baseEjectionTime?: string;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
  splitExternalLocalOriginErrors?: boolean;
  consecutiveLocalOriginFailures?: number;
}

export interface ClientTLSSettings {
  mode?: 'DISABLE' | 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';
  clientCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  credentialName?: string;
  subjectAltNames?: string[];
  sni?: string;
  insecureSkipVerify?: boolean;
}

// ---------------------------------------------------------------- ServiceEntry

export interface ServiceEntrySpec {
  hosts: string[];
  addresses?: string[];
  ports?: ServicePort[];
  location?: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
  resolution?: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';
  endpoints?: WorkloadEntrySpec[];
  workloadSelector?: { labels?: Record<string, string> };
  exportTo?: string[];
  subjectAltNames?: string[];
}

export interface ServicePort { number: number; protocol?: string; name: string; targetPort?: number }

export interface WorkloadEntrySpec {
  address?: string;
  ports?: Record<string, number>;
  labels?: Record<string, string>;
  network?: string;
  locality?: string;
  weight?: number;
  serviceAccount?: string;
}

// ---------------------------------------------------------------- Kubernetes Secret

export interface SecretBody {
  type?: string;
  /** base64 values, as in Kubernetes */
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

// ---------------------------------------------------------------- security.istio.io

export interface WorkloadSelector { matchLabels?: Record<string, string> }
export interface PolicyTargetReference { group?: string; kind: string; name: string; namespace?: string }

export interface JWTRuleSpec {
  issuer: string;
  audiences?: string[];
  jwksUri?: string;
  jwks?: string;
  fromHeaders?: { name: string; prefix?: string }[];
  fromParams?: string[];
  fromCookies?: string[];
  outputPayloadToHeader?: string;
  forwardOriginalToken?: boolean;
  outputClaimToHeaders?: { header: string; claim: string }[];
  timeout?: string;
}

export interface RequestAuthenticationSpec {
  selector?: WorkloadSelector;
  targetRef?: PolicyTargetReference;
  targetRefs?: PolicyTargetReference[];
  jwtRules?: JWTRuleSpec[];
}

export interface AuthorizationPolicySpec {
  selector?: WorkloadSelector;
  targetRef?: PolicyTargetReference;
  targetRefs?: PolicyTargetReference[];
  rules?: {
    from?: { source?: Record<string, string[] | undefined> }[];
    to?: { operation?: Record<string, string[] | undefined> }[];
    when?: { key: string; values?: string[]; notValues?: string[] }[];
  }[];
  action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  provider?: { name?: string };
}

// ---------------------------------------------------------------- meshgate.io (docs/ratelimit.md)

/** `remoteAddress`, `path`, `method`, `host`, `{header: NAME}` or `{claim: NAME}`. */
export type RateLimitKeyPartSpec = 'remoteAddress' | 'path' | 'method' | 'host' | { header: string } | { claim: string };

export interface RateLimitAmountSpec {
  requests: number;
  per: 'second' | 'minute' | 'hour';
  burst?: number;
}

/** Every condition must hold; several names in one `claim`/`header` map are ANDed. */
export interface RateLimitWhenSpec {
  claim?: Record<string, string>;
  header?: Record<string, string>;
  path?: string;
  method?: string;
  host?: string;
  remoteAddress?: string;
}

export interface RateLimitRuleSpec {
  name: string;
  limit: RateLimitAmountSpec;
  key?: RateLimitKeyPartSpec[];
  overrides?: { when: RateLimitWhenSpec; limit: RateLimitAmountSpec }[];
}

export interface RateLimitPolicySpec {
  /** Gateway labels, as a Gateway's `selector` (a plain map, not `matchLabels`). */
  selector?: Record<string, string>;
  targetRef?: PolicyTargetReference;
  targetRefs?: PolicyTargetReference[];
  hosts?: string[];
  routes?: string[];
  mode?: 'local' | 'global';
  shadow?: boolean;
  rules: RateLimitRuleSpec[];
}

export type GatewayResource = Resource<'Gateway', GatewaySpec>;
export type RateLimitPolicyResource = Resource<'RateLimitPolicy', RateLimitPolicySpec>;
export type RequestAuthenticationResource = Resource<'RequestAuthentication', RequestAuthenticationSpec>;
export type AuthorizationPolicyResource = Resource<'AuthorizationPolicy', AuthorizationPolicySpec>;
export type VirtualServiceResource = Resource<'VirtualService', VirtualServiceSpec>;
export type DestinationRuleResource = Resource<'DestinationRule', DestinationRuleSpec>;
export type ServiceEntryResource = Resource<'ServiceEntry', ServiceEntrySpec>;
/** For Secrets, `spec` holds `{type, data, stringData}` lifted from the top level. */
export type SecretResource = Resource<'Secret', SecretBody>;

/** Kinds meshgate reads, with the API groups each may come from. */
export const SUPPORTED_KINDS: Readonly<Record<string, readonly string[]>> = {
  Gateway: ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'],
  VirtualService: ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'],
  DestinationRule: ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'],
  ServiceEntry: ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'],
  Secret: ['v1'],
  RequestAuthentication: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
  AuthorizationPolicy: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
  RateLimitPolicy: ['meshgate.io/v1alpha1'],
};

/**
 * The validated configuration at one moment: every accepted resource, by kind.
 * Produced by pilot's store, consumed by translation. Arrays are sorted by
 * (creationTimestamp, namespace, name) so translation is deterministic.
 */
export interface ConfigSnapshot {
  gateways: GatewayResource[];
  virtualServices: VirtualServiceResource[];
  destinationRules: DestinationRuleResource[];
  serviceEntries: ServiceEntryResource[];
  secrets: SecretResource[];
  requestAuthentications: RequestAuthenticationResource[];
  authorizationPolicies: AuthorizationPolicyResource[];
  rateLimitPolicies: RateLimitPolicyResource[];
  /**
   * The mesh config (`--mesh-config`) this snapshot is translated with; absent means the
   * defaults (defaultMeshConfig()). Part of the snapshot so translation stays a function of
   * its inputs and a mesh config change is a new snapshot like any other.
   */
  mesh?: MeshConfig;
}
