// Which RequestAuthentications, AuthorizationPolicies and RateLimitPolicies apply to a proxy,
// compiled into the plain form of api/policy.ts. Binding follows Istio (RateLimitPolicy too,
// though its selector is a plain label map, as a Gateway's, rather than `matchLabels`):
//   - a policy in the root namespace (istio-system) without a selector applies to every proxy;
//   - a policy without a selector applies to every proxy in its own namespace;
//   - a policy with a selector applies to proxies in its own namespace whose labels match
//     (in the root namespace: proxies in any namespace whose labels match);
//   - targetRef(s) of kind Gateway name an Istio Gateway resource: the policy applies to the
//     proxies that Gateway selects.
import type {
  AuthorizationPolicyResource, AuthorizationPolicySpec, ConfigSnapshot, PolicyTargetReference, RateLimitAmountSpec,
  RateLimitKeyPartSpec, RateLimitPolicyResource, RateLimitWhenSpec, RequestAuthenticationResource, WorkloadSelector,
} from '../../api/istio.ts';
import type {
  AuthzCondition, AuthzOperation, AuthzPolicy, AuthzSource, JwtRule, PolicyConfig, RateLimitAmount, RateLimitKeyPart,
  RateLimitPolicy,
} from '../../api/policy.ts';
import type { ProxyIdentity } from '../../api/proxyconfig.ts';
import { parseDuration } from '../../api/duration.ts';
import type { Indexes } from './indexes.ts';

export const ROOT_NAMESPACE = 'istio-system';
/** Annotation that lets a RequestAuthentication fetch keys from loopback/private addresses (SSRF opt-in). */
export const ALLOW_PRIVATE_JWKS = 'meshgate.io/allow-private-jwks-uri';

const DEFAULT_JWKS_TIMEOUT_MS = 5000;
/** Istio refreshes JWKS every 20 minutes (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL). */
const DEFAULT_JWKS_REFRESH_MS = 20 * 60 * 1000;

function labelsMatch(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) if (labels[k] !== v) return false;
  return true;
}

function targetRefs(spec: { targetRef?: PolicyTargetReference; targetRefs?: PolicyTargetReference[] }): PolicyTargetReference[] {
  return [...(spec.targetRef ? [spec.targetRef] : []), ...(spec.targetRefs ?? [])];
}

interface Bindable {
  metadata: { namespace: string };
  spec: { targetRef?: PolicyTargetReference; targetRefs?: PolicyTargetReference[] };
}

/** security.istio.io policies select by `selector.matchLabels`. */
function applies(idx: Indexes, r: Bindable & { spec: { selector?: WorkloadSelector } }, proxy: ProxyIdentity): boolean {
  return binds(idx, r, r.spec.selector?.matchLabels, proxy);
}

function binds(idx: Indexes, r: Bindable, selector: Record<string, string> | undefined, proxy: ProxyIdentity): boolean {
  const ns = r.metadata.namespace;
  const refs = targetRefs(r.spec);
  if (refs.length > 0) {
    return refs.some((ref) => {
      if (ref.kind !== 'Gateway') return false;
      const g = idx.gateways.get(`${ref.namespace ?? ns}/${ref.name}`);
      if (!g) return false;
      for (const [k, v] of Object.entries(g.spec.selector ?? {})) if (proxy.labels[k] !== v) return false;
      return true;
    });
  }
  if (ns !== ROOT_NAMESPACE && ns !== proxy.namespace) return false;
  return labelsMatch(selector, proxy.labels);
}

function jwtRules(ra: RequestAuthenticationResource): JwtRule[] {
  const allowPrivate = ra.metadata.annotations?.[ALLOW_PRIVATE_JWKS] === 'true';
  return (ra.spec.jwtRules ?? []).map((r, i) => {
    const noLocation = !r.fromHeaders && !r.fromParams && !r.fromCookies;
    return {
      source: `requestauthentication/${ra.metadata.namespace}/${ra.metadata.name}/jwtRules/${i}`,
      issuer: r.issuer,
      audiences: r.audiences ?? [],
      jwksUri: r.jwksUri ?? null,
      jwks: r.jwks ?? null,
      // Istio's default locations when none is given: Authorization: Bearer, then ?access_token.
      fromHeaders: noLocation ? [{ name: 'authorization', prefix: 'Bearer ' }] : (r.fromHeaders ?? []).map((h) => ({ name: h.name.toLowerCase(), prefix: h.prefix ?? '' })),
      fromParams: noLocation ? ['access_token'] : (r.fromParams ?? []),
      fromCookies: r.fromCookies ?? [],
      forwardOriginalToken: r.forwardOriginalToken === true,
      outputPayloadToHeader: r.outputPayloadToHeader ? r.outputPayloadToHeader.toLowerCase() : null,
      outputClaimToHeaders: (r.outputClaimToHeaders ?? []).map((h) => ({ header: h.header.toLowerCase(), claim: h.claim })),
      timeoutMs: (r.timeout ? parseDuration(r.timeout) : null) ?? DEFAULT_JWKS_TIMEOUT_MS,
      refreshMs: DEFAULT_JWKS_REFRESH_MS,
      allowPrivateJwksUri: allowPrivate,
      jwksCaPem: null,
    };
  });
}

function list(v: string[] | undefined): string[] | null {
  return v === undefined ? null : [...v];
}

function source(s: Record<string, string[] | undefined> | undefined): AuthzSource {
  const o = s ?? {};
  return {
    principals: list(o.principals), notPrincipals: list(o.notPrincipals),
    requestPrincipals: list(o.requestPrincipals), notRequestPrincipals: list(o.notRequestPrincipals),
    namespaces: list(o.namespaces), notNamespaces: list(o.notNamespaces),
    ipBlocks: list(o.ipBlocks), notIpBlocks: list(o.notIpBlocks),
    remoteIpBlocks: list(o.remoteIpBlocks), notRemoteIpBlocks: list(o.notRemoteIpBlocks),
  };
}

function operation(op: Record<string, string[] | undefined> | undefined): AuthzOperation {
  const o = op ?? {};
  return {
    hosts: list(o.hosts), notHosts: list(o.notHosts),
    ports: list(o.ports), notPorts: list(o.notPorts),
    methods: list(o.methods), notMethods: list(o.notMethods),
    paths: list(o.paths), notPaths: list(o.notPaths),
  };
}

function authzPolicy(ap: AuthorizationPolicyResource): AuthzPolicy | null {
  const spec: AuthorizationPolicySpec = ap.spec;
  const action = spec.action ?? 'ALLOW';
  // CUSTOM (external authorization) is not supported; validation warned about it by name.
  if (action === 'CUSTOM') return null;
  return {
    source: `authorizationpolicy/${ap.metadata.namespace}/${ap.metadata.name}`,
    action,
    rules: (spec.rules ?? []).map((rule) => ({
      from: (rule.from ?? []).map((f) => source(f.source)),
      to: (rule.to ?? []).map((t) => operation(t.operation)),
      when: (rule.when ?? []).map((w): AuthzCondition => ({ key: w.key, values: list(w.values), notValues: list(w.notValues) })),
    })),
  };
}

// ---------------------------------------------------------------- RateLimitPolicy

function amount(a: RateLimitAmountSpec): RateLimitAmount {
  return { requests: a.requests, unit: a.per, burst: a.burst ?? 0 };
}

/** Header names lower-cased here as well as in the data plane, so a config dump shows what is compared. */
function keyPart(p: RateLimitKeyPartSpec): RateLimitKeyPart {
  if (typeof p === 'string') return { kind: p };
  if ('header' in p) return { kind: 'header', name: p.header.toLowerCase() };
  return { kind: 'claim', name: p.claim };
}

/**
 * One `{part, value}` per condition, in a fixed order (claims, headers by name, then path,
 * method, host, address) so the compiled form does not depend on how the YAML was written.
 * Values are normalised as the data plane compares them.
 */
function whenMatch(w: RateLimitWhenSpec): { part: RateLimitKeyPart; value: string }[] {
  const out: { part: RateLimitKeyPart; value: string }[] = [];
  for (const name of Object.keys(w.claim ?? {}).sort()) out.push({ part: { kind: 'claim', name }, value: w.claim![name] });
  const headers = Object.entries(w.header ?? {}).map(([name, value]) => ({ name: name.toLowerCase(), value: value.trim() }));
  headers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const h of headers) out.push({ part: { kind: 'header', name: h.name }, value: h.value });
  if (w.path !== undefined) out.push({ part: { kind: 'path' }, value: w.path });
  if (w.method !== undefined) out.push({ part: { kind: 'method' }, value: w.method.toUpperCase() });
  if (w.host !== undefined) out.push({ part: { kind: 'host' }, value: w.host.toLowerCase() });
  if (w.remoteAddress !== undefined) out.push({ part: { kind: 'remoteAddress' }, value: w.remoteAddress });
  return out;
}

/** http route name (as written in a VirtualService) → the full names of every route that has it. */
type RoutesByName = Map<string, string[]>;

function routesByName(snapshot: ConfigSnapshot): RoutesByName {
  const out: RoutesByName = new Map();
  for (const vs of snapshot.virtualServices) {
    (vs.spec.http ?? []).forEach((r, i) => {
      if (typeof r.name !== 'string' || r.name === '') return;
      const full = `virtualservice/${vs.metadata.namespace}/${vs.metadata.name}/http/${i}`;
      const list = out.get(r.name);
      if (list) list.push(full);
      else out.set(r.name, [full]);
    });
  }
  return out;
}

/**
 * Full names are lower-cased (namespaces and names are); a route's own name is kept as
 * written, since VirtualService route names are case-sensitive free text. Each own name is
 * followed by the full names of the routes that carry it, so the data plane can match a
 * request by its route's full name alone, whichever form the user wrote.
 */
function routeNames(written: string[], byName: () => RoutesByName): string[] {
  const out: string[] = [];
  const add = (n: string): void => { if (!out.includes(n)) out.push(n); };
  for (const r of written) {
    if (/^virtualservice\//i.test(r)) add(r.toLowerCase());
    else {
      add(r);
      for (const full of byName().get(r) ?? []) add(full);
    }
  }
  return out;
}

function rateLimitPolicy(rp: RateLimitPolicyResource, byName: () => RoutesByName): RateLimitPolicy {
  const src = `ratelimitpolicy/${rp.metadata.namespace}/${rp.metadata.name}`;
  const spec = rp.spec;
  return {
    source: src,
    mode: spec.mode ?? 'local',
    shadow: spec.shadow === true,
    hosts: (spec.hosts ?? []).map((h) => h.toLowerCase()),
    routes: routeNames(spec.routes ?? [], byName),
    rules: spec.rules.map((r, i) => ({
      source: `${src}/rules/${i}`,
      name: r.name,
      limit: amount(r.limit),
      key: (r.key ?? []).map(keyPart),
      overrides: (r.overrides ?? []).map((o) => ({ match: whenMatch(o.when), limit: amount(o.limit) })),
    })),
  };
}

export function buildPolicies(idx: Indexes, snapshot: ConfigSnapshot, proxy: ProxyIdentity): PolicyConfig {
  const jwt: JwtRule[] = [];
  for (const ra of snapshot.requestAuthentications) if (applies(idx, ra, proxy)) jwt.push(...jwtRules(ra));
  const authorization: AuthzPolicy[] = [];
  for (const ap of snapshot.authorizationPolicies) {
    if (!applies(idx, ap, proxy)) continue;
    const p = authzPolicy(ap);
    if (p) authorization.push(p);
  }
  // Route names are indexed only when some policy for this proxy names a route by its own name.
  let byName: RoutesByName | null = null;
  const lazyByName = (): RoutesByName => (byName ??= routesByName(snapshot));
  const rateLimits: RateLimitPolicy[] = [];
  for (const rp of snapshot.rateLimitPolicies) {
    if (binds(idx, rp, rp.spec.selector, proxy)) rateLimits.push(rateLimitPolicy(rp, lazyByName));
  }
  return { jwtRules: jwt, authorization, rateLimits, numTrustedProxies: 0 };
}
