// The request pipeline of one listener. Stages run in this order, and the order matters:
//
//  1. request checks      Host/:authority present, path normalised or refused (400).
//                         Everything after this sees only a path it can trust, so no later
//                         stage can be bypassed with `..`, `%2e` or `#` [CVE-2021-39156].
//  2. internal headers    client-set x-envoy-*/x-meshgate-*/x-forwarded-client-cert are
//                         dropped before anything reads headers (routing included), so a
//                         client cannot steer a decision the proxy owns [CVE-2023-27487].
//  3. x-request-id        kept when valid, else generated: every later log line and local
//                         reply can carry it.
//  4. route match         virtual host by authority, then the first matching route; 404
//                         with an empty body and no upstream call when nothing matches.
//  5. httpsRedirect       a virtual host that requires TLS answers 301 before any route
//                         action (Envoy's require_tls runs before the route's action).
//  6. CORS                preflights are answered here: they carry no credentials by spec, so
//                         they must not reach authentication, faults or the upstream.
//  7. policies            authentication (JWT, 401), authorization (403), rate limit (429);
//                         see policy.ts. They run even when no route matched (as Envoy's
//                         filters run before its router), so a 404 does not reveal to an
//                         unauthorised client which paths exist.
//  8. no route            404, empty body.
//  9. fault               delay, then abort: injected after the policies and before the
//                         action, so it exercises the client's handling of a failing route.
// 10. action              redirect, direct response, or route: weighted cluster pick,
//                         rewrite, upstream headers, body decision, mirrors, forward.
// 11. metrics             each request is counted once, where its answer is complete: a
//                         local reply right after it is written, a forwarded request when
//                         the upstream half resolves (it alone knows the response flags).
//
// Per request only named functions run over the compiled table; the table is read once
// into locals at the start (`rt`), so a config swap mid-request cannot mix versions.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { addCorsHeaders, answerPreflight, answerUnmatchedPreflight, corsOriginAllowed, isPreflight } from './cors.ts';
import { applyHeaderOps, buildUpstreamHeaders, clientAddress, distinctHeaderValues, pickRequestId, stripInternalHeaders } from './headers.ts';
import { BODY_FAULT_ABORT, grpcStatusForHttp, sendLocalReply, writeSocketReply } from './local-reply.ts';
import { normalizeTarget, type NormalizeOptions, type NormalizedTarget } from './normalize.ts';
import {
  ACTION_DIRECT, ACTION_REDIRECT, ACTION_ROUTE, NO_HEADERS, NO_QUERY, findRoute, parseQuery, selectVirtualHost,
  type CompiledMatch, type CompiledRoute, type CompiledWeighted, type HeaderValues, type RouteTable,
} from './router.ts';
import type { DownstreamReq, DownstreamRes, ForwardResult, HeaderMap, ResponseHooks, UpstreamRequest, Upstreams } from './upstream/types.ts';
import { checkPolicies, requestFacts, type PolicyRuntime, type Verdict } from './policy.ts';
import { declaredRequestBytes, flagString, NO_FLAGS, type GatewayMetrics } from './metrics.ts';

/** What one listener serves at one config version; swapped whole on apply. */
export interface ListenerRuntime {
  table: RouteTable;
  /** The Gateway port (what routes and redirects see), not the local bound port. */
  port: number;
  scheme: 'http' | 'https';
  upstreams: Upstreams;
  normalize: NormalizeOptions;
  log: Logger | null;
  /** Null when no authentication, authorization or rate-limit policy applies to this proxy. */
  policies: PolicyRuntime | null;
  /** Where requests are counted; null: not counted. */
  metrics: GatewayMetrics | null;
}

/** Bodies up to this size are held in memory when the route may send them twice. */
export const MAX_BUFFERED_BODY = 64 * 1024;
const EMPTY_BODY = Buffer.alloc(0);

/** Per-request state carried across the async stages (fault delay, body read). */
class RequestContext {
  rt: ListenerRuntime;
  req: DownstreamReq;
  res: DownstreamRes;
  route: CompiledRoute;
  match: CompiledMatch;
  path: string;
  query: string;
  authority: string;
  requestId: string;
  corsOrigin: string | null;
  grpc: boolean;
  /** Response headers the policy stages add (RateLimit-*); null: none. */
  extraHeaders: Record<string, string> | null;
  /** performance.now() when the request arrived (0 when metrics are off). */
  t0: number;
  /** A fault delay held it (Envoy's DI flag). */
  delayed: boolean;
  /** The destination forwarded to; '' before the action. */
  cluster: string;
  /** The upstream half reported its result. */
  forwardEnded: boolean;
  constructor(rt: ListenerRuntime, req: DownstreamReq, res: DownstreamRes, match: CompiledMatch, target: NormalizedTarget, authority: string, requestId: string, grpc: boolean, t0: number) {
    this.rt = rt;
    this.req = req;
    this.res = res;
    this.route = match.route;
    this.match = match;
    this.path = target.path;
    this.query = target.query;
    this.authority = authority;
    this.requestId = requestId;
    this.corsOrigin = null;
    this.grpc = grpc;
    this.extraHeaders = null;
    this.t0 = t0;
    this.delayed = false;
    this.cluster = '';
    this.forwardEnded = false;
  }
}

/**
 * Response header edits for one routed request: route ops, then the chosen destination's,
 * then CORS. Routes with none of these share NO_HOOKS.
 */
class RouteHooks implements ResponseHooks {
  route: CompiledRoute;
  wc: CompiledWeighted | null;
  origin: string | null;
  extra: Record<string, string> | null;
  constructor(route: CompiledRoute, wc: CompiledWeighted | null, origin: string | null, extra: Record<string, string> | null) {
    this.route = route;
    this.wc = wc;
    this.origin = origin;
    this.extra = extra;
  }
  onHeaders(_status: number, headers: HeaderMap): void {
    const r = this.route;
    if (r.responseOps !== null) applyHeaderOps(headers, r.responseOps);
    if (this.wc !== null && this.wc.responseOps !== null) applyHeaderOps(headers, this.wc.responseOps);
    if (this.origin !== null && r.cors !== null) addCorsHeaders(r.cors, this.origin, headers);
    if (this.extra !== null) Object.assign(headers, this.extra);
  }
}

const NO_HOOKS: ResponseHooks = { onHeaders() {}, noop: true };

function hooksFor(route: CompiledRoute, wc: CompiledWeighted | null, origin: string | null, extra: Record<string, string> | null = null): ResponseHooks {
  if (route.responseOps === null && (wc === null || wc.responseOps === null) && origin === null) {
    // Policy headers only (RateLimit-* of an allowed request): still a head that can pass as bytes.
    return extra === null ? NO_HOOKS : new FixedHeaders(extra);
  }
  return new RouteHooks(route, wc, origin, extra);
}

/** Hooks that only set fixed headers (policy answers: WWW-Authenticate, Retry-After; RateLimit-*). */
class FixedHeaders implements ResponseHooks {
  headers: Record<string, string>;
  constructor(headers: Record<string, string>) { this.headers = headers; }
  get setOnly(): Record<string, string> { return this.headers; }
  onHeaders(_status: number, headers: HeaderMap): void { Object.assign(headers, this.headers); }
}

function isGrpc(ct: string | undefined): boolean {
  return ct !== undefined && ct.startsWith('application/grpc');
}

/** Host (HTTP/1) or :authority (HTTP/2); undefined when the client sent neither. */
function requestAuthority(req: DownstreamReq): string | undefined {
  const h = req.headers;
  const a = h[':authority'];
  if (typeof a === 'string' && a.length > 0) return a;
  const host = h.host;
  return host === undefined || host.length === 0 ? undefined : host;
}

/**
 * Absolute-form targets (`GET http://host/p HTTP/1.1`): the authority in the target wins
 * over Host (RFC 9112 3.2.2), as Envoy does.
 */
function splitAbsoluteForm(url: string): { authority: string; target: string } | null {
  const lower = url.slice(0, 8).toLowerCase();
  const start = lower.startsWith('http://') ? 7 : lower.startsWith('https://') ? 8 : -1;
  if (start < 0) return null;
  const slash = url.indexOf('/', start);
  const qmark = url.indexOf('?', start);
  const end = slash < 0 ? (qmark < 0 ? url.length : qmark) : (qmark >= 0 && qmark < slash ? qmark : slash);
  const authority = url.slice(start, end);
  if (authority.length === 0 || authority.includes('@')) return null;
  const rest = url.slice(end);
  return { authority, target: rest.startsWith('/') ? rest : '/' + rest };
}


function sendEmpty(res: DownstreamRes, status: number, grpc: boolean): void {
  sendLocalReply(res, status, '', grpc, -1, null);
}

// ---------------------------------------------------------------- 11. metrics

/** The cluster a local reply on this route is counted against: the route's first destination. */
function routeCluster(route: CompiledRoute | null): string | null {
  if (route === null || route.action.kind !== ACTION_ROUTE) return null;
  const cs = route.action.clusters;
  return cs.length > 0 ? cs[0].cluster : null;
}

/** Counts a reply written as is (redirects, direct responses, preflights, socket replies). */
function countPlain(rt: ListenerRuntime, req: DownstreamReq, route: CompiledRoute | null, status: number, grpc: boolean, bytes: number, flags: string, t0: number): void {
  const m = rt.metrics;
  if (m === null) return;
  m.record(m.destination(routeCluster(route)), grpc, status, '', flags, declaredRequestBytes(req), bytes, performance.now() - t0);
}

/** Counts a sendLocalReply answer: gRPC clients got 200 and a grpc-status instead. */
function countLocal(rt: ListenerRuntime, req: DownstreamReq, route: CompiledRoute | null, status: number, body: string, grpc: boolean, grpcStatus: number, flags: string, t0: number): void {
  const m = rt.metrics;
  if (m === null) return;
  const code = grpc ? 200 : status;
  const gs = grpc ? String(grpcStatus >= 0 ? grpcStatus : grpcStatusForHttp(status)) : '';
  m.record(m.destination(routeCluster(route)), grpc, code, gs, flags, declaredRequestBytes(req), grpc || body.length === 0 ? 0 : Buffer.byteLength(body), performance.now() - t0);
}

function replyEmpty(rt: ListenerRuntime, req: DownstreamReq, res: DownstreamRes, route: CompiledRoute | null, status: number, grpc: boolean, flags: string, t0: number): void {
  sendEmpty(res, status, grpc);
  countLocal(rt, req, route, status, '', grpc, -1, flags, t0);
}

/** Authentication and authorization outcomes; rate-limit ones are read from the limiter. */
function notePolicies(rt: ListenerRuntime, p: PolicyRuntime, v: Verdict): void {
  const m = rt.metrics;
  if (m === null) return;
  if (v.pass) m.policiesPassed(p, v.auth !== null);
  else m.policyDenied(p, v.status, v.body, v.authenticated);
}

function forwarded(ctx: RequestContext, cluster: string, r: ForwardResult): void {
  const m = ctx.rt.metrics;
  if (m === null) return;
  const flags = r.flags.length === 0 && !ctx.delayed ? NO_FLAGS : flagString(r.flags, ctx.delayed ? 'DI' : null);
  if (ctx.grpc) return forwardedGrpc(m, ctx, cluster, r, flags);
  m.record(m.destination(cluster), false, r.status, '', flags, declaredRequestBytes(ctx.req), r.bytesSent, performance.now() - ctx.t0);
}

/**
 * gRPC's outcome is the grpc-status the client got: in the trailers, or in the headers of a
 * trailers-only answer. Trailers go out after the body, so a stream still open is counted
 * when it closes.
 */
function forwardedGrpc(m: GatewayMetrics, ctx: RequestContext, cluster: string, r: ForwardResult, flags: string): void {
  const stream = (ctx.res as Http2ServerResponse).stream as Http2ServerResponse['stream'] | undefined;
  const t1 = performance.now();
  const done = () => m.record(m.destination(cluster), true, r.status, sentGrpcStatus(ctx.res), flags, declaredRequestBytes(ctx.req), r.bytesSent, t1 - ctx.t0);
  if (stream !== undefined && !stream.closed && !stream.destroyed) stream.once('close', done);
  else done();
}

function sentGrpcStatus(res: DownstreamRes): string {
  const stream = (res as Http2ServerResponse).stream as Http2ServerResponse['stream'] | undefined;
  if (stream !== undefined) {
    const v = stream.sentTrailers?.['grpc-status'] ?? stream.sentHeaders?.['grpc-status'];
    if (v !== undefined) return String(v);
  }
  const h = res.getHeader('grpc-status');
  return h === undefined ? '' : String(h);
}

// ---------------------------------------------------------------- entry point

/** `request` handler of every listener (HTTP/1.1, h2c and TLS alike). */
export function handleRequest(rt: ListenerRuntime, req: DownstreamReq, res: DownstreamRes): void {
  const headers = req.headers;
  const grpc = isGrpc(headers['content-type']);
  const t0 = rt.metrics === null ? 0 : performance.now();

  // 1. request checks
  let authority = requestAuthority(req);
  let url = req.url ?? '';
  if (url.charCodeAt(0) !== 47 /* / */) {
    const abs = splitAbsoluteForm(url);
    if (abs !== null) { authority = abs.authority; url = abs.target; }
  }
  if (authority === undefined) return replyEmpty(rt, req, res, null, 400, grpc, NO_FLAGS, t0);
  const target = normalizeTarget(url, rt.normalize);
  if (target === null) return replyEmpty(rt, req, res, null, 400, grpc, NO_FLAGS, t0);

  // 2. internal headers
  stripInternalHeaders(headers);

  // 3. x-request-id
  const requestId = pickRequestId(headers['x-request-id']);

  // 4. route match (5. httpsRedirect sits between virtual host and route)
  const table = rt.table;
  const vh = selectVirtualHost(table, authority);
  if (vh !== null && vh.httpsRedirect && rt.scheme === 'http') {
    sendHttpsRedirect(res, authority, target);
    return countPlain(rt, req, null, 301, grpc, 0, NO_FLAGS, t0);
  }
  const match = vh === null ? null : findRoute(
    vh, target.path, req.method ?? 'GET', rt.scheme, authority,
    vh.needsHeaders ? distinctHeaderValues(req) : NO_HEADERS,
    vh.needsQuery ? parseQuery(target.query) : NO_QUERY,
  );
  const policies = rt.policies;
  if (match === null) {
    if (policies === null) return replyEmpty(rt, req, res, null, 404, grpc, 'NR', t0);
    // 7 before 8: an unauthorised client learns nothing from 404 vs 403.
    const facts = requestFacts(req, policies, rt.port, target.path, target.query, authority);
    checkPolicies(policies, req, facts, null, null, (v) => unmatchedVerdict(rt, req, res, policies, v, grpc, t0));
    return;
  }

  const ctx = new RequestContext(rt, req, res, match, target, authority, requestId, grpc, t0);

  // 6. CORS
  const cors = match.route.cors;
  if (cors !== null) {
    const origin = headers.origin;
    const preflight = isPreflight(req.method, headers['access-control-request-method']);
    if (origin !== undefined && corsOriginAllowed(cors, origin)) {
      if (preflight) {
        answerPreflight(cors, origin, res);
        return countPlain(rt, req, match.route, res.statusCode, grpc, 0, NO_FLAGS, t0);
      }
      ctx.corsOrigin = origin;
    } else if (preflight && !cors.forwardUnmatched) {
      answerUnmatchedPreflight(res);
      return countPlain(rt, req, match.route, res.statusCode, grpc, 0, NO_FLAGS, t0);
    }
  }

  // 7. policies
  if (policies !== null) {
    const facts = requestFacts(req, policies, rt.port, target.path, target.query, authority);
    checkPolicies(policies, req, facts, match.route.name, match.route.routeName, (v) => afterPolicies(ctx, v));
    return;
  }
  faultThenAct(ctx);
}

/** A policy stage answered: 401 / 403 / 429 with its headers (gRPC: the mapped status). */
function sendVerdict(rt: ListenerRuntime, req: DownstreamReq, res: DownstreamRes, route: CompiledRoute | null, v: Verdict, grpc: boolean, t0: number): void {
  if (v.pass) return;
  sendLocalReply(res, v.status, v.body, grpc, v.grpcStatus, new FixedHeaders(v.headers));
  // Envoy marks its own rate-limit answers RL; authentication and RBAC denials carry no flag.
  countLocal(rt, req, route, v.status, v.body, grpc, v.grpcStatus, v.status === 429 ? 'RL' : NO_FLAGS, t0);
}

function unmatchedVerdict(rt: ListenerRuntime, req: DownstreamReq, res: DownstreamRes, p: PolicyRuntime, v: Verdict, grpc: boolean, t0: number): void {
  notePolicies(rt, p, v);
  if (v.pass) replyEmpty(rt, req, res, null, 404, grpc, 'NR', t0);
  else sendVerdict(rt, req, res, null, v, grpc, t0);
}

function afterPolicies(ctx: RequestContext, v: Verdict): void {
  if (ctx.rt.policies !== null) notePolicies(ctx.rt, ctx.rt.policies, v);
  if (!v.pass) return sendVerdict(ctx.rt, ctx.req, ctx.res, ctx.route, v, ctx.grpc, ctx.t0);
  if (ctx.res.destroyed || ctx.res.writableEnded) return; // the client left while we waited
  ctx.query = v.query;
  ctx.extraHeaders = v.responseHeaders;
  faultThenAct(ctx);
}

// 9. fault
function faultThenAct(ctx: RequestContext): void {
  const fault = ctx.route.fault;
  if (fault !== null && fault.delayMs > 0 && fault.delayPercent > 0 && Math.random() * 100 < fault.delayPercent) {
    ctx.delayed = true;
    setTimeout(afterFaultDelay, fault.delayMs, ctx);
    return;
  }
  abortOrAct(ctx);
}

function afterFaultDelay(ctx: RequestContext): void {
  // The client may have given up while we waited; nothing to send then.
  if (ctx.res.destroyed || ctx.res.writableEnded) return;
  abortOrAct(ctx);
}

function abortOrAct(ctx: RequestContext): void {
  const fault = ctx.route.fault;
  if (fault !== null && fault.abortPercent > 0 && Math.random() * 100 < fault.abortPercent) {
    sendLocalReply(ctx.res, fault.abortStatus, BODY_FAULT_ABORT, ctx.grpc, fault.abortGrpc, hooksFor(ctx.route, null, ctx.corsOrigin, ctx.extraHeaders));
    countLocal(ctx.rt, ctx.req, ctx.route, fault.abortStatus, BODY_FAULT_ABORT, ctx.grpc, fault.abortGrpc, flagString(['FI'], ctx.delayed ? 'DI' : null), ctx.t0);
    return;
  }
  runAction(ctx);
}

// ---------------------------------------------------------------- 8. actions

function runAction(ctx: RequestContext): void {
  const a = ctx.route.action;
  if (a.kind === ACTION_REDIRECT) return sendRedirect(ctx);
  if (a.kind === ACTION_DIRECT) return sendDirectResponse(ctx);
  forwardRoute(ctx);
}

function defaultPort(scheme: string): string {
  return scheme === 'https' ? '443' : scheme === 'http' ? '80' : '';
}

/** Splits `host:port` / `[v6]:port`; port '' when absent. */
function splitHostPort(authority: string): { host: string; port: string } {
  if (authority.charCodeAt(0) === 91 /* [ */) {
    const close = authority.indexOf(']');
    if (close > 0) {
      return { host: authority.slice(0, close + 1), port: authority.charCodeAt(close + 1) === 58 ? authority.slice(close + 2) : '' };
    }
  }
  const colon = authority.lastIndexOf(':');
  return colon < 0 ? { host: authority, port: '' } : { host: authority.slice(0, colon), port: authority.slice(colon + 1) };
}

/** Istio's tls.httpsRedirect: same host and path on https; `:80` dropped as Envoy does. */
function sendHttpsRedirect(res: DownstreamRes, authority: string, target: NormalizedTarget): void {
  const hp = splitHostPort(authority);
  const host = hp.port === '' || hp.port === '80' ? hp.host : authority;
  const location = `https://${host}${target.path}${target.query ? '?' + target.query : ''}`;
  (res as ServerResponse).writeHead(301, { location, 'content-length': '0' });
  res.end();
}

/** Location of a redirect route, following Envoy's rules for host, port and scheme. */
function redirectLocation(route: CompiledRoute, rt: ListenerRuntime, authority: string, path: string, query: string): string {
  const a = route.action;
  const reqScheme = rt.scheme;
  const scheme = a.redirectScheme ?? reqScheme;
  const hp = splitHostPort(authority);
  let host = hp.host;
  let port = hp.port;
  if (a.redirectAuthority !== null) {
    // The new authority replaces host and port together.
    const np = splitHostPort(a.redirectAuthority);
    host = np.host;
    port = np.port;
  } else if (scheme !== reqScheme && port === defaultPort(reqScheme)) {
    port = '';
  }
  if (a.redirectPort !== null) port = String(a.redirectPort);
  else if (a.derivePort === 'FROM_PROTOCOL_DEFAULT') port = '';
  else if (a.derivePort === 'FROM_REQUEST_PORT') port = String(rt.port);
  if (port === defaultPort(scheme)) port = '';
  let pathAndQuery: string;
  const uri = a.redirectUri;
  if (uri === null) pathAndQuery = query ? `${path}?${query}` : path;
  else if (uri.includes('?') || !query) pathAndQuery = uri;
  else pathAndQuery = `${uri}?${query}`;
  return `${scheme}://${host}${port ? ':' + port : ''}${pathAndQuery}`;
}

function sendRedirect(ctx: RequestContext): void {
  const headers: HeaderMap = { location: redirectLocation(ctx.route, ctx.rt, ctx.authority, ctx.path, ctx.query), 'content-length': '0' };
  hooksFor(ctx.route, null, ctx.corsOrigin, ctx.extraHeaders).onHeaders(ctx.route.action.status, headers);
  (ctx.res as ServerResponse).writeHead(ctx.route.action.status, headers);
  ctx.res.end();
  countPlain(ctx.rt, ctx.req, ctx.route, ctx.route.action.status, ctx.grpc, 0, ctx.delayed ? 'DI' : NO_FLAGS, ctx.t0);
}

function sendDirectResponse(ctx: RequestContext): void {
  const a = ctx.route.action;
  const headers: HeaderMap = a.body !== null && a.body.length > 0
    ? { 'content-type': 'text/plain', 'content-length': String(a.body.length) }
    : { 'content-length': '0' };
  hooksFor(ctx.route, null, ctx.corsOrigin, ctx.extraHeaders).onHeaders(a.status, headers);
  (ctx.res as ServerResponse).writeHead(a.status, headers);
  if (a.body !== null) ctx.res.end(a.body); else ctx.res.end();
  countPlain(ctx.rt, ctx.req, ctx.route, a.status, ctx.grpc, a.body === null ? 0 : a.body.length, ctx.delayed ? 'DI' : NO_FLAGS, ctx.t0);
}

/** Weighted pick with one random number over the precomputed running sums. */
function pickCluster(route: CompiledRoute): CompiledWeighted {
  const a = route.action;
  const cs = a.clusters;
  if (cs.length === 1 || a.totalWeight <= 0) return cs[0];
  const r = Math.random() * a.totalWeight;
  const cum = a.cumulative;
  for (let i = 0; i < cs.length; i++) if (r < cum[i]) return cs[i];
  return cs[cs.length - 1];
}

/**
 * The path sent upstream: a uri rewrite replaces the matched prefix of a prefix match, or
 * the whole path otherwise; a regex rewrite substitutes every match (`\1` groups).
 */
export function rewritePath(route: CompiledRoute, match: CompiledMatch, path: string): string {
  let p = path;
  const uri = route.rewriteUri;
  if (uri !== null) p = match.prefixLen >= 0 ? uri + p.slice(match.prefixLen) : uri;
  const rr = route.rewriteRegex;
  if (rr !== null) p = rr.re.matcher(p).replaceAll(rr.replacer);
  return p;
}

function hasNoBody(req: DownstreamReq): boolean {
  const h = req.headers;
  const cl = h['content-length'];
  if (cl === '0') return true;
  if ((req as Http2ServerRequest).stream !== undefined) return (req as Http2ServerRequest).stream.endAfterHeaders;
  return cl === undefined && h['transfer-encoding'] === undefined;
}

function buildUpstreamRequest(ctx: RequestContext, wc: CompiledWeighted, upgrade: boolean): UpstreamRequest {
  const route = ctx.route;
  const req = ctx.req;
  const sourceIp = clientAddress(req.socket.remoteAddress);
  const headers = buildUpstreamHeaders(req.headers, upgrade, sourceIp, ctx.rt.scheme, ctx.requestId);
  let authority = route.rewriteAuthority ?? ctx.authority;
  // Route edits first, then the destination's, so a destination can override its route.
  if (route.requestOps !== null) {
    applyHeaderOps(headers, route.requestOps);
    if (route.requestOps.authority !== null) authority = route.requestOps.authority;
  }
  if (wc.requestOps !== null) {
    applyHeaderOps(headers, wc.requestOps);
    if (wc.requestOps.authority !== null) authority = wc.requestOps.authority;
  }
  const path = rewritePath(route, ctx.match, ctx.path);
  return {
    method: req.method ?? 'GET',
    path: ctx.query ? `${path}?${ctx.query}` : path,
    authority,
    headers,
    body: null,
    timeoutMs: route.timeoutMs,
    retries: route.retries,
    hashHeaders: req.headers,
    sourceIp,
    query: ctx.query,
    grpc: ctx.grpc,
  };
}

function forwardRoute(ctx: RequestContext): void {
  const route = ctx.route;
  const wc = pickCluster(route);
  const up = buildUpstreamRequest(ctx, wc, false);
  const req = ctx.req;
  // Body: none → empty Buffer; small and maybe sent twice (retries, mirrors) → read it
  // whole; anything else (large, unknown length, gRPC streams) → stream it through.
  if (hasNoBody(req)) {
    up.body = EMPTY_BODY;
  } else if (route.bufferBody && !ctx.grpc) {
    const cl = Number(req.headers['content-length']);
    if (cl >= 0 && cl <= MAX_BUFFERED_BODY) {
      readBody(req, cl).then((body) => {
        if (body === null) return;
        up.body = body;
        send(ctx, wc, up);
      }, () => { /* client went away while sending its body */ });
      return;
    }
  }
  send(ctx, wc, up);
}

async function readBody(req: DownstreamReq, expected: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    // HTTP/1's parser enforces content-length; HTTP/2 does not, so cap here.
    if (size > expected) { req.destroy(); return null; }
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
}

function send(ctx: RequestContext, wc: CompiledWeighted, up: UpstreamRequest): void {
  const rt = ctx.rt;
  const mirrors = ctx.route.mirrors;
  // Mirrors need the whole body; a streamed body cannot be copied, so those are skipped.
  if (mirrors.length > 0 && up.body !== null) {
    for (let i = 0; i < mirrors.length; i++) {
      const m = mirrors[i];
      if (m.percent >= 100 || Math.random() * 100 < m.percent) {
        // Own header map: the main forward may still edit `up.headers`. The upstream half
        // adds Envoy's `-shadow` to the authority.
        rt.upstreams.mirror(m.cluster, { ...up, headers: { ...up.headers } });
      }
    }
  }
  ctx.cluster = wc.cluster;
  // A callback, not a Promise: no Promise, closures or microtask per request. A throw while
  // starting the forward is answered as before (500, or a reset once headers are out).
  try {
    rt.upstreams.forwardThen(wc.cluster, ctx.req, ctx.res, up, hooksFor(ctx.route, wc, ctx.corsOrigin, ctx.extraHeaders), forwardDone, ctx);
  } catch (err) {
    if (!ctx.forwardEnded) forwardFailed(ctx, err);
    else ctx.rt.log?.error({ err, route: ctx.route.name, requestId: ctx.requestId }, 'forward failed after its result');
  }
}

function forwardDone(ctx: RequestContext, r: ForwardResult): void {
  ctx.forwardEnded = true;
  forwarded(ctx, ctx.cluster, r);
}

function forwardFailed(ctx: RequestContext, err: unknown): void {
  ctx.rt.log?.error({ err, route: ctx.route.name, requestId: ctx.requestId }, 'forward failed');
  if (!ctx.res.headersSent) replyEmpty(ctx.rt, ctx.req, ctx.res, ctx.route, 500, ctx.grpc, NO_FLAGS, ctx.t0);
  else ctx.res.destroy();
}

// ---------------------------------------------------------------- WebSocket

export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const u = req.headers.upgrade;
  return u !== undefined && u.toLowerCase() === 'websocket';
}

/**
 * `upgrade` handler (HTTP/1.1 WebSocket): the same checks and route match as a request,
 * then the upstream half tunnels the socket. Faults and CORS do not apply to tunnels.
 */
export function handleUpgrade(rt: ListenerRuntime, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const t0 = rt.metrics === null ? 0 : performance.now();
  const authority = requestAuthority(req);
  const target = authority === undefined ? null : normalizeTarget(req.url ?? '', rt.normalize);
  if (authority === undefined || target === null) return socketReply(rt, req, socket, null, 400, '', '', NO_FLAGS, t0);
  stripInternalHeaders(req.headers);
  const requestId = pickRequestId(req.headers['x-request-id']);
  const vh = selectVirtualHost(rt.table, authority);
  if (vh === null) return socketReply(rt, req, socket, null, 404, '', '', 'NR', t0);
  if (vh.httpsRedirect && rt.scheme === 'http') {
    const hp = splitHostPort(authority);
    const host = hp.port === '' || hp.port === '80' ? hp.host : authority;
    return socketReply(rt, req, socket, null, 301, '', `location: https://${host}${target.path}${target.query ? '?' + target.query : ''}\r\n`, NO_FLAGS, t0);
  }
  const match = findRoute(vh, target.path, req.method ?? 'GET', rt.scheme, authority,
    vh.needsHeaders ? distinctHeaderValues(req) : NO_HEADERS, vh.needsQuery ? parseQuery(target.query) : NO_QUERY);
  // A tunnel is a request like any other to the policies: no token, no WebSocket.
  const policies = rt.policies;
  if (policies !== null) {
    const facts = requestFacts(req, policies, rt.port, target.path, target.query, authority);
    checkPolicies(policies, req, facts, match?.route.name ?? null, match?.route.routeName ?? null, (v) => {
      notePolicies(rt, policies, v);
      if (!v.pass) return socketReply(rt, req, socket, match?.route ?? null, v.status, v.body, headerLines(v.headers), v.status === 429 ? 'RL' : NO_FLAGS, t0);
      if (match === null) return socketReply(rt, req, socket, null, 404, '', '', 'NR', t0);
      upgradeRoute(rt, req, socket, head, match, { ...target, query: v.query }, authority, requestId, t0);
    });
    return;
  }
  if (match === null) return socketReply(rt, req, socket, null, 404, '', '', 'NR', t0);
  upgradeRoute(rt, req, socket, head, match, target, authority, requestId, t0);
}

function socketReply(rt: ListenerRuntime, req: IncomingMessage, socket: Duplex, route: CompiledRoute | null, status: number, body: string, extra: string, flags: string, t0: number): void {
  writeSocketReply(socket, status, body, extra);
  countPlain(rt, req, route, status, false, Buffer.byteLength(body), flags, t0);
}

function headerLines(h: Record<string, string>): string {
  let out = '';
  for (const k in h) out += `${k}: ${h[k]}\r\n`;
  return out;
}

function upgradeRoute(rt: ListenerRuntime, req: IncomingMessage, socket: Duplex, head: Buffer, match: CompiledMatch, target: NormalizedTarget, authority: string, requestId: string, t0: number): void {
  const a = match.route.action;
  if (a.kind === ACTION_REDIRECT) return socketReply(rt, req, socket, match.route, a.status, '', `location: ${redirectLocation(match.route, rt, authority, target.path, target.query)}\r\n`, NO_FLAGS, t0);
  if (a.kind === ACTION_DIRECT) return socketReply(rt, req, socket, match.route, a.status, a.body === null ? '' : a.body.toString('utf8'), '', NO_FLAGS, t0);
  // No response object on a tunnel: the context only carries what the request builder reads.
  const ctx = new RequestContext(rt, req, null as unknown as DownstreamRes, match, target, authority, requestId, false, t0);
  const wc = pickCluster(match.route);
  const up = buildUpstreamRequest(ctx, wc, true);
  up.body = EMPTY_BODY;
  // A tunnel counts as one request, with the status of its handshake (101), as Envoy counts it.
  rt.upstreams.upgrade(wc.cluster, req, socket, head, up).then((r: ForwardResult) => {
    const m = rt.metrics;
    if (m !== null) m.record(m.destination(wc.cluster), false, r.status, '', flagString(r.flags, null), 0, r.bytesSent, performance.now() - t0);
  }, (err: unknown) => {
    rt.log?.error({ err, route: match.route.name }, 'upgrade failed');
    socketReply(rt, req, socket, match.route, 500, '', '', NO_FLAGS, t0);
  });
}
