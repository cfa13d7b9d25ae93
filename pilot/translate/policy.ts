// Which RequestAuthentications and AuthorizationPolicies apply to a proxy, compiled into the
// plain form of api/policy.ts. Binding follows Istio:
//   - a policy in the root namespace (istio-system) without a selector applies to every proxy;
//   - a policy without a selector applies to every proxy in its own namespace;
//   - a policy with a selector applies to proxies in its own namespace whose labels match
//     (in the root namespace: proxies in any namespace whose labels match);
//   - targetRef(s) of kind Gateway name an Istio Gateway resource: the policy applies to the
//     proxies that Gateway selects.
import type {
  AuthorizationPolicyResource, AuthorizationPolicySpec, ConfigSnapshot, PolicyTargetReference,
  RequestAuthenticationResource, WorkloadSelector,
} from '../../api/istio.ts';
import type { AuthzCondition, AuthzOperation, AuthzPolicy, AuthzSource, JwtRule, PolicyConfig } from '../../api/policy.ts';
import type { ProxyIdentity } from '../../api/proxyconfig.ts';
import { parseDuration } from '../../api/duration.ts';
import type { Indexes } from './indexes.ts';

export const ROOT_NAMESPACE = 'istio-system';
/** Annotation that lets a RequestAuthentication fetch keys from loopback/private addresses (SSRF opt-in). */
export const ALLOW_PRIVATE_JWKS = 'meshgate.io/allow-private-jwks-uri';

const DEFAULT_JWKS_TIMEOUT_MS = 5000;
/** Istio refreshes JWKS every 20 minutes (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL). */
const DEFAULT_JWKS_REFRESH_MS = 20 * 60 * 1000;

function labelsMatch(selector: WorkloadSelector | undefined, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector?.matchLabels ?? {})) if (labels[k] !== v) return false;
  return true;
}

function targetRefs(spec: { targetRef?: PolicyTargetReference; targetRefs?: PolicyTargetReference[] }): PolicyTargetReference[] {
  return [...(spec.targetRef ? [spec.targetRef] : []), ...(spec.targetRefs ?? [])];
}

function applies(
  idx: Indexes,
  r: { metadata: { namespace: string }; spec: { selector?: WorkloadSelector; targetRef?: PolicyTargetReference; targetRefs?: PolicyTargetReference[] } },
  proxy: ProxyIdentity,
): boolean {
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
  return labelsMatch(r.spec.selector, proxy.labels);
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

export function buildPolicies(idx: Indexes, snapshot: ConfigSnapshot, proxy: ProxyIdentity): PolicyConfig {
  const jwt: JwtRule[] = [];
  for (const ra of snapshot.requestAuthentications) if (applies(idx, ra, proxy)) jwt.push(...jwtRules(ra));
  const authorization: AuthzPolicy[] = [];
  for (const ap of snapshot.authorizationPolicies) {
    if (!applies(idx, ap, proxy)) continue;
    const p = authzPolicy(ap);
    if (p) authorization.push(p);
  }
  return { jwtRules: jwt, authorization, rateLimits: [], numTrustedProxies: 0 };
}
