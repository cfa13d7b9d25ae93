// The policy stages of the request pipeline, in the order DESIGN.md fixes:
//
//   authentication (JWT)  a bad token is 401 here; a verified one becomes the identity
//                         every later stage sees; the token is stripped before proxying.
//   authorization         DENY, then ALLOW, on the identity and the normalised request: 403.
//   rate limit            last, so rejected requests (401/403) do not use up anyone's quota,
//                         and claims (plan: gold) can choose the limit: 429.
//
// Each stage is compiled once per config version (policies/*.ts). A proxy without policies
// has `policies === null` on its listener runtime and skips this file entirely; each stage
// is skipped when its part of the config is empty. Stages are synchronous in the common case
// (cached token, local limit); only an uncached token or a Redis-backed limit continue
// asynchronously.
import type { IncomingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { PolicyConfig, RequestFacts } from '../api/policy.ts';
import { JwtAuthenticator, stripCookies, stripQueryParams, unauthorizedResponse, type AuthnEdits, type AuthnOk, type AuthnResult } from '../policies/jwt.ts';
import type { JwksPool } from '../policies/jwks.ts';
import { compileAuthorization, RBAC_DENIED, type Authorizer } from '../policies/authz.ts';
import { compileRateLimits, type RateLimitDecision, type RateLimits, type RedisState } from '../policies/ratelimit.ts';
import type { DownstreamReq } from './upstream/types.ts';
import { distinctHeaderValues } from './headers.ts';

export interface PolicyRuntime {
  authn: JwtAuthenticator | null;
  authz: Authorizer | null;
  limits: RateLimits | null;
  /** X-Forwarded-For hops in front of the gateway that are trusted (Istio's numTrustedProxies). */
  trustedProxies: number;
}

export interface PolicyEnv {
  /** Shared across config versions: keys already fetched are not fetched again. */
  pool: JwksPool;
  log: Logger | null;
  /** redis:// URL for global rate limits; null: global limits count per replica. */
  redis: string | null;
  /** Gateway replicas sharing global limits (for the insurance limiter's share). */
  replicas: number;
  trustedProxies: number;
  onRedisState?: (state: RedisState, error: string | null) => void;
}

const silentLog = { info() {}, warn() {}, error() {}, debug() {}, child() { return silentLog; } } as unknown as Logger;

/**
 * Compiles one config version's policies. Throws (nothing applied) when a policy cannot be
 * compiled; the data plane NACKs with that message. JWKS are fetched here, before the
 * version serves, and a JWKS that cannot be fetched does not fail the version: its tokens
 * get 401 until keys arrive (the admin port says why).
 */
export async function buildPolicyRuntime(cfg: PolicyConfig | undefined, env: PolicyEnv, previous: PolicyRuntime | null): Promise<PolicyRuntime | null> {
  if (cfg === undefined || (cfg.jwtRules.length === 0 && cfg.authorization.length === 0 && cfg.rateLimits.length === 0)) return null;
  const authz = cfg.authorization.length > 0 ? compileAuthorization(cfg.authorization) : null;
  const authn = cfg.jwtRules.length > 0 ? new JwtAuthenticator(cfg.jwtRules, { pool: env.pool, logger: env.log ?? silentLog }) : null;
  const limits = cfg.rateLimits.length > 0
    ? compileRateLimits(cfg.rateLimits, { redis: env.redis, log: env.log ?? silentLog, replicas: env.replicas, ...(env.onRedisState ? { onRedisState: env.onRedisState } : {}) }, previous?.limits ?? null)
    : null;
  if (authn !== null) await authn.start();
  return { authn, authz, limits, trustedProxies: Math.max(env.trustedProxies, cfg.numTrustedProxies) };
}

/** Releases what a replaced (or never used) version held: JWKS timers, Redis connections it still owns. */
export function retirePolicyRuntime(p: PolicyRuntime | null): void {
  if (p === null) return;
  p.authn?.stop();
  void p.limits?.close().catch(() => {});
}

export function policyStatus(p: PolicyRuntime | null): unknown {
  if (p === null) return null;
  return { authn: p.authn?.status() ?? null, rateLimits: p.limits?.status() ?? null, authorization: p.authz !== null };
}

// ---------------------------------------------------------------- request facts


function stripPort(authority: string): string {
  if (authority.charCodeAt(0) === 91 /* [ */) {
    const close = authority.indexOf(']');
    return (close > 0 ? authority.slice(1, close) : authority).toLowerCase();
  }
  const colon = authority.lastIndexOf(':');
  return (colon < 0 ? authority : authority.slice(0, colon)).toLowerCase();
}

function plainIp(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

/**
 * The client address Envoy computes with xff_num_trusted_hops = N: the Nth address from the
 * right of X-Forwarded-For (all its headers joined), or the peer when N is 0 or the header is
 * shorter than that (a client cannot pick its own address by sending more entries).
 */
export function remoteAddress(headers: IncomingHttpHeaders, peer: string, trusted: number): string {
  if (trusted <= 0) return peer;
  const xff = headers['x-forwarded-for'];
  if (xff === undefined) return peer;
  const list = (Array.isArray(xff) ? xff.join(',') : xff).split(',');
  if (list.length < trusted) return peer;
  const v = list[list.length - trusted].trim();
  return v === '' ? peer : plainIp(v);
}

export function requestFacts(req: DownstreamReq, p: PolicyRuntime, port: number, path: string, query: string, authority: string): RequestFacts {
  const sock = req.socket as TLSSocket;
  const peer = plainIp(sock.remoteAddress);
  const sni = (sock as { servername?: string | false }).servername;
  return {
    method: req.method ?? 'GET',
    path,
    query,
    host: stripPort(authority),
    port,
    headers: distinctHeaderValues(req),
    sourceIp: peer,
    remoteIp: remoteAddress(req.headers, peer, p.trustedProxies),
    sni: typeof sni === 'string' ? sni : '',
    peerPrincipal: '',
    peerNamespace: '',
  };
}

// ---------------------------------------------------------------- the checks

/** What the policy stages decided: carry on (with headers for the response), or answer now. */
export type Verdict =
  | { pass: true; auth: AuthnOk | null; responseHeaders: Record<string, string> | null; query: string }
  | {
      pass: false; status: number; headers: Record<string, string>; body: string; grpcStatus: number;
      /** For a 403 or 429: whether authentication had verified a token (for the metrics). */
      authenticated: boolean;
    };

export type VerdictCallback = (v: Verdict) => void;

/** gRPC statuses for the local replies, as Envoy maps them. */
const GRPC_UNAUTHENTICATED = 16;
const GRPC_PERMISSION_DENIED = 7;
const GRPC_UNAVAILABLE = 14;

interface CheckState {
  p: PolicyRuntime;
  req: DownstreamReq;
  facts: RequestFacts;
  routeName: string | null;
  routeAlias: string | null;
  query: string;
  auth: AuthnOk | null;
  done: VerdictCallback;
}

/**
 * Runs authentication, authorization and rate limiting for one request and calls `done`
 * exactly once (synchronously when nothing needs to wait). On pass, the request's headers
 * have been edited as authentication requires (token removed, claim headers set).
 */
export function checkPolicies(p: PolicyRuntime, req: DownstreamReq, facts: RequestFacts, routeName: string | null, routeAlias: string | null, done: VerdictCallback): void {
  const s: CheckState = { p, req, facts, routeName, routeAlias, query: facts.query, auth: null, done };
  if (p.authn === null) return afterAuthn(s, null);
  let r: AuthnResult | Promise<AuthnResult>;
  try {
    r = p.authn.authenticate(facts);
  } catch (err) {
    // authenticate is built not to throw; if it does, fail closed.
    return failClosed(s, err);
  }
  if (r instanceof Promise) r.then((x) => afterAuthn(s, x), (err: unknown) => failClosed(s, err));
  else afterAuthn(s, r);
}

function failClosed(s: CheckState, err: unknown): void {
  s.done({ pass: false, status: 401, headers: { 'www-authenticate': 'Bearer realm="meshgate", error="invalid_token"' }, body: 'Jwt verification fails', grpcStatus: GRPC_UNAUTHENTICATED, authenticated: false });
  void err;
}

function applyEdits(s: CheckState, e: AuthnEdits): void {
  const h = s.req.headers as Record<string, string | string[] | undefined>;
  // Set to undefined rather than `delete`: deleting turns the headers object into a slow
  // dictionary for every later read, and every reader already skips undefined values.
  const rm = e.removeHeaders;
  for (let i = 0; i < rm.length; i++) if (h[rm[i]] !== undefined) h[rm[i]] = undefined;
  if (e.removeParams.length > 0 && s.query !== '') s.query = stripQueryParams(s.query, e.removeParams);
  if (e.removeCookies.length > 0) {
    const c = h.cookie;
    if (typeof c === 'string') {
      const left = stripCookies(c, e.removeCookies);
      h.cookie = left === '' ? undefined : left;
    }
  }
  for (let i = 0; i < e.setHeaders.length; i++) h[e.setHeaders[i][0]] = e.setHeaders[i][1];
}

function afterAuthn(s: CheckState, r: AuthnResult | null): void {
  if (r !== null) {
    if (r.outcome === 'fail') {
      const u = unauthorizedResponse(r);
      return s.done({ pass: false, status: u.status, headers: u.headers, body: u.body, grpcStatus: GRPC_UNAUTHENTICATED, authenticated: false });
    }
    applyEdits(s, r.edits);
    if (r.outcome === 'ok') s.auth = r;
  }
  const authz = s.p.authz;
  if (authz !== null) {
    const d = authz.authorize(s.facts, s.auth);
    if (!d.allowed) return s.done({ pass: false, status: 403, headers: {}, body: RBAC_DENIED, grpcStatus: GRPC_PERMISSION_DENIED, authenticated: s.auth !== null });
  }
  const limits = s.p.limits;
  if (limits === null) return pass(s, null);
  const d = limits.check(s.facts, { routeName: s.routeName, routeAlias: s.routeAlias, claims: s.auth !== null ? (s.auth.claims as Record<string, unknown>) : null });
  if (d instanceof Promise) d.then((x) => afterLimit(s, x), () => pass(s, null));
  else afterLimit(s, d);
}

function afterLimit(s: CheckState, d: RateLimitDecision): void {
  if (!d.allowed) {
    return s.done({ pass: false, status: d.status ?? 429, headers: d.headers ?? {}, body: d.body ?? 'rate limit exceeded\n', grpcStatus: GRPC_UNAVAILABLE, authenticated: s.auth !== null });
  }
  pass(s, d.headers);
}

function pass(s: CheckState, headers: Record<string, string> | null): void {
  s.done({ pass: true, auth: s.auth, responseHeaders: headers, query: s.query });
}
