// VirtualServices → virtual hosts and routes of one listener. Binding follows Istio's
// gateway rules: a VirtualService reaches a server when it names the server's Gateway,
// the server's `ns/` host prefix admits its namespace, and one of its hosts intersects a
// server host. Everything the data plane needs per request is decided here, once.
import type {
  CorsPolicy as IstioCors, Destination, HTTPMatchRequest, HTTPRetry, HTTPRoute, HeaderOperations, StringMatch,
  VirtualServiceResource,
} from '../../api/istio.ts';
import type {
  CorsPolicy, FaultPolicy, HeaderOps, KeyMatcher, MirrorPolicy, RetryPolicy, Route, RouteAction, RouteMatch,
  StringMatcher, VirtualHost,
} from '../../api/proxyconfig.ts';
import { DEFAULT_RETRY_POLICY } from '../../api/proxyconfig.ts';
import { intersectHosts, qualifyHost, splitNamespacedHost } from '../../api/hosts.ts';
import { parseDuration } from '../../api/duration.ts';
import { problemAt, resolveGatewayName } from './indexes.ts';
import type { Indexes, ProblemSink } from './indexes.ts';
import { resolveDestination } from './references.ts';
import type { DestinationRef, Path } from './references.ts';
import type { ListenerPlan } from './gateway.ts';

/** Shared by the steps of one translation: problems, and every cluster a route refers to. */
export interface RouteContext {
  idx: Indexes;
  sink: ProblemSink;
  /** Cluster name → what it points at; clusters.ts builds one cluster per entry. */
  clusters: Map<string, DestinationRef>;
}

/** Milliseconds of a validated duration; null when absent. */
export function toMs(d: string | undefined): number | null {
  if (d === undefined) return null;
  return parseDuration(d);
}

// ---------------------------------------------------------------- matchers

function stringMatcher(m: StringMatch | undefined, presentWhenEmpty: boolean): StringMatcher | null {
  if (m === undefined || m === null) return null;
  const o = m as { exact?: unknown; prefix?: unknown; regex?: unknown };
  if (typeof o.exact === 'string') return { kind: 'exact', value: o.exact };
  if (typeof o.prefix === 'string') return { kind: 'prefix', value: o.prefix };
  if (typeof o.regex === 'string') return { kind: 'regex', value: o.regex };
  // `{}`: for headers and query parameters Istio reads it as "present with any value".
  return presentWhenEmpty ? { kind: 'present' } : null;
}

function keyMatchers(map: Record<string, StringMatch> | undefined, lowerNames: boolean): KeyMatcher[] {
  if (!map) return [];
  const out: KeyMatcher[] = [];
  for (const [name, m] of Object.entries(map)) {
    out.push({ name: lowerNames ? name.toLowerCase() : name, match: stringMatcher(m, true)! });
  }
  return out;
}

function uriMatcher(m: StringMatch | undefined, ignoreCase: boolean): StringMatcher | null {
  const s = stringMatcher(m, false);
  if (s === null || !ignoreCase) return s;
  // Istio: "The case will be ignored only in the case of exact and prefix URI matches";
  // Envoy likewise ignores case_sensitive for safe_regex. A regex stays as written.
  if (s.kind === 'exact' || s.kind === 'prefix') return { kind: s.kind, value: s.value.toLowerCase() };
  return s;
}

function compileMatch(m: HTTPMatchRequest, j: number): RouteMatch {
  const ignoreUriCase = m.ignoreUriCase === true;
  return {
    name: m.name ?? `match/${j}`,
    uri: uriMatcher(m.uri, ignoreUriCase),
    scheme: stringMatcher(m.scheme, false),
    method: stringMatcher(m.method, false),
    authority: stringMatcher(m.authority, false),
    headers: keyMatchers(m.headers, true),
    withoutHeaders: keyMatchers(m.withoutHeaders, true),
    queryParams: keyMatchers(m.queryParams, false),
    ignoreUriCase,
  };
}

/**
 * The match entries of a route that apply on this gateway and port, with their original
 * index (match names use it). Null when the route has entries but none apply: the route
 * does not exist here.
 */
function applicableMatches(r: HTTPRoute, vsNamespace: string, gatewayKey: string, port: number): RouteMatch[] | null {
  const all = r.match ?? [];
  if (all.length === 0) return [];
  const out: RouteMatch[] = [];
  all.forEach((m, j) => {
    if (m.port !== undefined && m.port !== port) return;
    if (m.gateways && m.gateways.length > 0 && !m.gateways.some((g) => resolveGatewayName(g, vsNamespace) === gatewayKey)) return;
    out.push(compileMatch(m, j));
  });
  return out.length > 0 ? out : null;
}

// ---------------------------------------------------------------- route parts

function headerOps(ops: HeaderOperations | undefined): HeaderOps | null {
  if (!ops) return null;
  const set = Object.entries(ops.set ?? {}).map(([k, v]): [string, string] => [k.toLowerCase(), String(v)]);
  const add = Object.entries(ops.add ?? {}).map(([k, v]): [string, string] => [k.toLowerCase(), String(v)]);
  const remove = (ops.remove ?? []).map((k) => k.toLowerCase());
  if (set.length === 0 && add.length === 0 && remove.length === 0) return null;
  return { set, add, remove };
}

// Istio: no `retries` → the default policy; `attempts` 0 or unset → no retries at all; a
// `retryOn` replaces the default conditions, its numbers become retriable status codes.
export function retryPolicy(r: HTTPRetry | undefined): RetryPolicy | null {
  if (r === undefined) {
    return { ...DEFAULT_RETRY_POLICY, retryOn: [...DEFAULT_RETRY_POLICY.retryOn], retriableStatusCodes: [...DEFAULT_RETRY_POLICY.retriableStatusCodes] };
  }
  if (!r.attempts || r.attempts <= 0) return null;
  let retryOn = [...DEFAULT_RETRY_POLICY.retryOn];
  let codes = [...DEFAULT_RETRY_POLICY.retriableStatusCodes];
  if (r.retryOn) {
    retryOn = [];
    codes = [];
    for (const part of r.retryOn.split(',')) {
      const p = part.trim();
      if (p === '') continue;
      if (/^\d+$/.test(p)) {
        const code = Number(p);
        if (!codes.includes(code)) codes.push(code);
      } else if (!retryOn.includes(p)) retryOn.push(p);
    }
    if (codes.length > 0 && !retryOn.includes('retriable-status-codes')) retryOn.push('retriable-status-codes');
  }
  return { attempts: r.attempts, perTryTimeoutMs: toMs(r.perTryTimeout), retryOn, retriableStatusCodes: codes };
}

function faultPolicy(r: HTTPRoute): FaultPolicy | null {
  const f = r.fault;
  if (!f) return null;
  let delay: FaultPolicy['delay'] = null;
  const fixed = toMs(f.delay?.fixedDelay);
  if (f.delay && fixed !== null) {
    // `percent` (an integer) is the deprecated spelling of `percentage.value`.
    delay = { ms: fixed, percent: f.delay.percentage?.value ?? f.delay.percent ?? 100 };
  }
  let abort: FaultPolicy['abort'] = null;
  if (f.abort && (f.abort.httpStatus !== undefined || f.abort.grpcStatus !== undefined)) {
    abort = { httpStatus: f.abort.httpStatus ?? null, grpcStatus: f.abort.grpcStatus ?? null, percent: f.abort.percentage?.value ?? 100 };
  }
  return delay === null && abort === null ? null : { delay, abort };
}

function corsPolicy(c: IstioCors | undefined): CorsPolicy | null {
  if (!c) return null;
  const maxAge = toMs(c.maxAge);
  return {
    allowOrigins: (c.allowOrigins ?? []).map((o) => stringMatcher(o, false)).filter((o): o is StringMatcher => o !== null),
    allowMethods: [...(c.allowMethods ?? [])],
    allowHeaders: [...(c.allowHeaders ?? [])],
    exposeHeaders: [...(c.exposeHeaders ?? [])],
    maxAgeSeconds: maxAge === null ? null : Math.floor(maxAge / 1000),
    allowCredentials: c.allowCredentials === true,
    unmatchedPreflights: c.unmatchedPreflights === 'IGNORE' ? 'IGNORE' : 'FORWARD',
  };
}

function destination(ctx: RouteContext, vs: VirtualServiceResource, d: Destination, path: Path): string {
  const ref = resolveDestination(ctx.idx, vs, d, path, ctx.sink);
  if (!ctx.clusters.has(ref.cluster)) ctx.clusters.set(ref.cluster, ref);
  return ref.cluster;
}

function routeAction(ctx: RouteContext, vs: VirtualServiceResource, r: HTTPRoute, i: number): RouteAction | null {
  if (r.redirect) {
    const x = r.redirect;
    return {
      kind: 'redirect', uri: x.uri ?? null, authority: x.authority ?? null, port: x.port ?? null,
      derivePort: x.derivePort ?? null, scheme: x.scheme ?? null, code: x.redirectCode ?? 301,
    };
  }
  if (r.directResponse) {
    const body = r.directResponse.body;
    if (body?.string !== undefined) return { kind: 'directResponse', status: r.directResponse.status, body: body.string, bodyBase64: false };
    if (body?.bytes !== undefined) return { kind: 'directResponse', status: r.directResponse.status, body: body.bytes, bodyBase64: true };
    return { kind: 'directResponse', status: r.directResponse.status, body: null, bodyBase64: false };
  }
  const dests = r.route ?? [];
  if (dests.length === 0) {
    if (r.delegate) {
      ctx.sink.add(problemAt(vs, ['spec', 'http', i, 'delegate'], 'MG_CONFIG_UNSUPPORTED_FIELD', 'warning',
        'delegate is not supported by meshgate yet; this route is skipped'));
    }
    return null;
  }
  // Istio: a lone destination takes all traffic; among several, a missing weight is 0.
  const single = dests.length === 1;
  let totalWeight = 0;
  const clusters = dests.map((d, j) => {
    const weight = d.weight ?? (single ? 100 : 0);
    totalWeight += weight;
    return {
      cluster: destination(ctx, vs, d.destination, ['spec', 'http', i, 'route', j, 'destination']),
      weight,
      requestHeaders: headerOps(d.headers?.request),
      responseHeaders: headerOps(d.headers?.response),
    };
  });
  return { kind: 'route', clusters, totalWeight };
}

function mirrorPolicies(ctx: RouteContext, vs: VirtualServiceResource, r: HTTPRoute, i: number): MirrorPolicy[] {
  const out: MirrorPolicy[] = [];
  if (r.mirror) {
    out.push({ cluster: destination(ctx, vs, r.mirror, ['spec', 'http', i, 'mirror']), percent: r.mirrorPercentage?.value ?? 100 });
  }
  (r.mirrors ?? []).forEach((m, k) => {
    out.push({ cluster: destination(ctx, vs, m.destination, ['spec', 'http', i, 'mirrors', k, 'destination']), percent: m.percentage?.value ?? 100 });
  });
  return out;
}

/** The routes of `vs` as they apply on one gateway and listener port, in `http` order. */
export function compileRoutes(ctx: RouteContext, vs: VirtualServiceResource, gatewayKey: string, port: number): Route[] {
  const ns = vs.metadata.namespace;
  const out: Route[] = [];
  (vs.spec.http ?? []).forEach((r, i) => {
    const match = applicableMatches(r, ns, gatewayKey, port);
    if (match === null) return;
    const action = routeAction(ctx, vs, r, i);
    if (action === null) return;
    const rw = r.rewrite;
    const timeout = toMs(r.timeout);
    out.push({
      name: `virtualservice/${ns}/${vs.metadata.name}/http/${i}`,
      routeName: r.name ?? null,
      match,
      action,
      rewrite: rw ? { uri: rw.uri ?? null, authority: rw.authority ?? null, uriRegex: rw.uriRegexRewrite ? { ...rw.uriRegexRewrite } : null } : null,
      // `0s` disables the timeout, as in Envoy.
      timeoutMs: timeout === 0 ? null : timeout,
      retries: retryPolicy(r.retries),
      fault: faultPolicy(r),
      mirrors: mirrorPolicies(ctx, vs, r, i),
      cors: corsPolicy(r.corsPolicy),
      requestHeaders: headerOps(r.headers?.request),
      responseHeaders: headerOps(r.headers?.response),
    });
  });
  return out;
}

// ---------------------------------------------------------------- virtual hosts

interface VhostBuilder {
  domain: string;
  httpsRedirect: boolean;
  routes: Route[];
  /** `vs ns/name|gateway` pairs already appended, so a VS reached through two servers counts once. */
  added: Set<string>;
}

function domainRank(d: string): number {
  return d === '*' ? 2 : d.startsWith('*') ? 1 : 0;
}

/** Exact domains, then wildcards by suffix length (longest first), then `*`; ties by name. */
export function compareDomains(a: string, b: string): number {
  const ra = domainRank(a);
  const rb = domainRank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 1 && a.length !== b.length) return b.length - a.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Whether a server host's `ns/` prefix admits VirtualServices of `vsNamespace`. */
function namespaceAdmits(prefix: string, gatewayNamespace: string, vsNamespace: string): boolean {
  if (prefix === '*') return true;
  return (prefix === '.' ? gatewayNamespace : prefix) === vsNamespace;
}

/**
 * Fills the listener's virtual hosts. Order matters and follows Istio: servers in listener
 * order, and for each, its Gateway's VirtualServices in snapshot order, so routes of
 * several VirtualServices for one host are concatenated in creation order.
 */
export function buildVirtualHosts(ctx: RouteContext, plan: ListenerPlan): VirtualHost[] {
  const port = plan.listener.port;
  const vhosts = new Map<string, VhostBuilder>();
  const compiled = new Map<string, Route[]>();
  const vhostFor = (domain: string): VhostBuilder => {
    let v = vhosts.get(domain);
    if (!v) {
      v = { domain, httpsRedirect: false, routes: [], added: new Set() };
      vhosts.set(domain, v);
    }
    return v;
  };

  for (const ref of plan.servers) {
    const redirect = ref.server.tls?.httpsRedirect === true;
    const gwNamespace = ref.gateway.metadata.namespace;
    const serverHosts = ref.hosts.map(splitNamespacedHost);
    for (const vs of ctx.idx.vsByGateway.get(ref.gatewayKey) ?? []) {
      const vsNs = vs.metadata.namespace;
      const vsKey = `${vsNs}/${vs.metadata.name}|${ref.gatewayKey}`;
      const vsHosts = (vs.spec.hosts ?? []).map((h) => qualifyHost(h, vsNs));
      for (const sh of serverHosts) {
        if (!namespaceAdmits(sh.namespace, gwNamespace, vsNs)) continue;
        for (const vh of vsHosts) {
          const domain = intersectHosts(vh, sh.host);
          if (domain === null) continue;
          let routes = compiled.get(vsKey);
          if (routes === undefined) {
            routes = compileRoutes(ctx, vs, ref.gatewayKey, port);
            compiled.set(vsKey, routes);
          }
          // A VS with nothing left for this gateway and port adds no host (it would only 404).
          if (routes.length === 0) continue;
          const v = vhostFor(domain);
          if (redirect) v.httpsRedirect = true;
          if (v.added.has(vsKey)) continue;
          v.added.add(vsKey);
          for (const r of routes) v.routes.push(r);
        }
      }
    }
    // Istio answers every host of an httpsRedirect server with the redirect, routes or not.
    if (redirect) for (const sh of serverHosts) vhostFor(sh.host).httpsRedirect = true;
  }

  return [...vhosts.values()]
    .sort((a, b) => compareDomains(a.domain, b.domain))
    .map((v) => ({ name: `${v.domain}:${port}`, domains: [v.domain], httpsRedirect: v.httpsRedirect, routes: v.routes }));
}
