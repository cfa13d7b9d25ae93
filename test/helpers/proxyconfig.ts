// Hand-written ProxyConfig pieces with defaults, so a data plane test states only the
// fields it is about. Names follow pilot's (`virtualservice/<ns>/<name>/http/<i>`).
import type {
  Listener, ProxyConfig, Route, RouteMatch, ServerCertificate, StringMatcher, VirtualHost, WeightedCluster, Cluster,
} from '../../api/proxyconfig.ts';

let seq = 0;

export const exact = (value: string): StringMatcher => ({ kind: 'exact', value });
export const prefix = (value: string): StringMatcher => ({ kind: 'prefix', value });
export const regex = (value: string): StringMatcher => ({ kind: 'regex', value });
export const present = (): StringMatcher => ({ kind: 'present' });

export function match(over: Partial<RouteMatch> = {}): RouteMatch {
  return {
    name: over.name ?? `match/${seq++}`,
    uri: null, scheme: null, method: null, authority: null,
    headers: [], withoutHeaders: [], queryParams: [], ignoreUriCase: false,
    ...over,
  };
}

export function dest(cluster: string, weight = 100, over: Partial<WeightedCluster> = {}): WeightedCluster {
  return { cluster, weight, requestHeaders: null, responseHeaders: null, ...over };
}

/** A route to clusters; pass `action` in `over` for redirects and direct responses. */
export function route(name: string, matches: RouteMatch[], clusters: WeightedCluster[] = [], over: Partial<Route> = {}): Route {
  return {
    name: `virtualservice/default/${name}`,
    routeName: null,
    match: matches,
    action: { kind: 'route', clusters, totalWeight: clusters.reduce((s, c) => s + c.weight, 0) },
    rewrite: null,
    timeoutMs: null,
    retries: null,
    fault: null,
    mirrors: [],
    cors: null,
    requestHeaders: null,
    responseHeaders: null,
    ...over,
  };
}

export function direct(status: number, body: string | null = null): Route['action'] {
  return { kind: 'directResponse', status, body, bodyBase64: false };
}

export function vhost(domains: string[], routes: Route[], over: Partial<VirtualHost> = {}): VirtualHost {
  return { name: `${domains[0]}:80`, domains, httpsRedirect: false, routes, ...over };
}

export function listener(port: number, virtualHosts: VirtualHost[], over: Partial<Listener> = {}): Listener {
  return {
    name: `127.0.0.1_${port}`,
    address: '127.0.0.1',
    port,
    protocol: 'HTTP',
    tls: null,
    virtualHosts,
    sources: [`gateway/default/gw/server/${port}`],
    ...over,
  };
}

export function serverCert(sniHosts: string[], over: Partial<ServerCertificate> = {}): ServerCertificate {
  return {
    source: `gateway/default/gw/server/${sniHosts[0]}`,
    sniHosts,
    mode: 'SIMPLE',
    certPem: null, keyPem: null, certFile: null, keyFile: null, caPem: null, caFile: null,
    subjectAltNames: [],
    minVersion: null, maxVersion: null, cipherSuites: [], alpn: ['h2', 'http/1.1'],
    ...over,
  };
}

export function proxyConfig(listeners: Listener[], clusters: Cluster[] = [], version = `v${seq++}`): ProxyConfig {
  return {
    version,
    proxy: { id: 'gateway~test~default', namespace: 'default', labels: { istio: 'ingressgateway' } },
    listeners,
    clusters: [...clusters].sort((a, b) => a.name.localeCompare(b.name)),
    policies: { jwtRules: [], authorization: [], rateLimits: [], numTrustedProxies: 0 },
  };
}
