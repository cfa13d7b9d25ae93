// A Listener compiled into its routing table, and the lookup that runs per request.
//
// Compile time does all the work that does not depend on the request: regexes compiled
// with RE2 (linear time, so a user's `(a+)+$` cannot stall the proxy [CVE-2019-14993]),
// virtual hosts indexed (exact Map, wildcard suffixes longest first, `*`), each route's
// action, rewrite, header edits, CORS and fault turned into plain objects, and per virtual
// host flags saying which request parts any of its routes reads (headers, query, a
// lower-cased path), so a request only computes what some route needs.
import { RE2JS } from 're2js';
import type {
  FaultPolicy, KeyMatcher, Listener, RetryPolicy, Route, RouteMatch, StringMatcher, VirtualHost,
} from '../api/proxyconfig.ts';
import { compileCors, type CompiledCors } from './cors.ts';
import { compileHeaderOps, isInternalHeader, type CompiledHeaderOps } from './headers.ts';
import { GRPC_STATUS } from './local-reply.ts';

// ---------------------------------------------------------------- string matchers

export const MATCH_EXACT = 0;
export const MATCH_PREFIX = 1;
export const MATCH_REGEX = 2;
export const MATCH_PRESENT = 3;

export interface CompiledString {
  kind: number;
  value: string;
  re: RE2JS | null;
}

/** Patterns longer than this are refused: a config string is not a place for a program [ISTIO-SECURITY-2026-006]. */
export const MAX_REGEX_LENGTH = 1024;

export function compileStringMatcher(m: StringMatcher, where: string, ignoreCase: boolean): CompiledString {
  switch (m.kind) {
    case 'exact': return { kind: MATCH_EXACT, value: ignoreCase ? m.value.toLowerCase() : m.value, re: null };
    case 'prefix': return { kind: MATCH_PREFIX, value: ignoreCase ? m.value.toLowerCase() : m.value, re: null };
    case 'present': return { kind: MATCH_PRESENT, value: '', re: null };
    case 'regex': {
      if (m.value.length > MAX_REGEX_LENGTH) throw new Error(`${where}: regex is ${m.value.length} characters, more than ${MAX_REGEX_LENGTH}`);
      let re: RE2JS;
      try {
        // ignoreUriCase does not apply to regexes (Istio's API; Envoy's safe_regex ignores case_sensitive).
        re = RE2JS.compile(m.value);
      } catch (e) {
        throw new Error(`${where}: invalid RE2 regex ${JSON.stringify(m.value)}: ${(e as Error).message}`);
      }
      return { kind: MATCH_REGEX, value: m.value, re };
    }
  }
}

/** Regexes match the whole value (Istio/Envoy semantics), hence `testExact`. */
export function matchString(m: CompiledString, v: string): boolean {
  switch (m.kind) {
    case MATCH_EXACT: return v === m.value;
    case MATCH_PREFIX: return v.startsWith(m.value);
    case MATCH_REGEX: return m.re!.testExact(v);
    default: return true;
  }
}

// ---------------------------------------------------------------- compiled shapes

export interface CompiledKey {
  name: string;
  m: CompiledString;
  /** Internal headers are stripped from clients first, so a match on one never sees a client value. */
  internal: boolean;
}

export interface CompiledMatch {
  /** Index in the route's `match` list; -1 for a route without match entries (matches all). */
  index: number;
  name: string;
  route: CompiledRoute;
  uri: CompiledString | null;
  ignoreUriCase: boolean;
  /** Length of a prefix uri match (what a prefix rewrite replaces); -1 otherwise. */
  prefixLen: number;
  scheme: CompiledString | null;
  method: CompiledString | null;
  authority: CompiledString | null;
  headers: CompiledKey[] | null;
  withoutHeaders: CompiledKey[] | null;
  queryParams: CompiledKey[] | null;
}

export interface CompiledWeighted {
  cluster: string;
  weight: number;
  requestOps: CompiledHeaderOps | null;
  responseOps: CompiledHeaderOps | null;
}

export const ACTION_ROUTE = 0;
export const ACTION_REDIRECT = 1;
export const ACTION_DIRECT = 2;

export interface CompiledAction {
  kind: number;
  /** route */
  clusters: CompiledWeighted[];
  /** Running sums of weights, for a weighted pick with one random number. */
  cumulative: number[];
  totalWeight: number;
  /** redirect */
  redirectUri: string | null;
  redirectAuthority: string | null;
  redirectPort: number | null;
  derivePort: 'FROM_PROTOCOL_DEFAULT' | 'FROM_REQUEST_PORT' | null;
  redirectScheme: string | null;
  /** redirect code or direct response status */
  status: number;
  /** direct response */
  body: Buffer | null;
}

export interface CompiledRegexRewrite {
  re: RE2JS;
  /** Substitution split into literal text and group numbers, so `\1` needs no parsing per request. */
  parts: (string | number)[];
  replacer: (...args: unknown[]) => string;
}

export interface CompiledFault {
  delayMs: number;
  delayPercent: number;
  abortStatus: number;
  /** gRPC status code for aborts of gRPC requests; -1 = derived from abortStatus. */
  abortGrpc: number;
  abortPercent: number;
}

export interface CompiledRoute {
  name: string;
  routeName: string | null;
  index: number;
  source: Route;
  matches: CompiledMatch[];
  action: CompiledAction;
  rewriteUri: string | null;
  rewriteRegex: CompiledRegexRewrite | null;
  rewriteAuthority: string | null;
  timeoutMs: number | null;
  retries: RetryPolicy | null;
  fault: CompiledFault | null;
  mirrors: { cluster: string; percent: number }[];
  cors: CompiledCors | null;
  requestOps: CompiledHeaderOps | null;
  responseOps: CompiledHeaderOps | null;
  /** The body must be held in memory (retries or mirrors may send it again). */
  bufferBody: boolean;
}

export interface CompiledVirtualHost {
  name: string;
  source: VirtualHost;
  httpsRedirect: boolean;
  routes: CompiledRoute[];
  needsHeaders: boolean;
  needsQuery: boolean;
  needsLowerPath: boolean;
}

export interface RouteTable {
  listener: Listener;
  virtualHosts: CompiledVirtualHost[];
  exact: Map<string, CompiledVirtualHost>;
  /** `*.suffix` domains as `.suffix`, longest first. */
  wildcards: { suffix: string; vhost: CompiledVirtualHost }[];
  star: CompiledVirtualHost | null;
}

// ---------------------------------------------------------------- compile

function compileKeys(list: KeyMatcher[], where: string): CompiledKey[] | null {
  if (list.length === 0) return null;
  return list.map((k, i) => {
    const name = k.name.toLowerCase();
    return { name, m: compileStringMatcher(k.match, `${where}[${i}] (${name})`, false), internal: isInternalHeader(name) };
  });
}

function compileMatch(m: RouteMatch | null, index: number, route: CompiledRoute, where: string): CompiledMatch {
  if (m === null) {
    return { index, name: '', route, uri: null, ignoreUriCase: false, prefixLen: -1, scheme: null, method: null, authority: null, headers: null, withoutHeaders: null, queryParams: null };
  }
  const w = `${where} match ${m.name}`;
  const uri = m.uri === null ? null : compileStringMatcher(m.uri, `${w} uri`, m.ignoreUriCase);
  return {
    index,
    name: m.name,
    route,
    uri,
    ignoreUriCase: m.ignoreUriCase,
    prefixLen: uri !== null && uri.kind === MATCH_PREFIX ? uri.value.length : -1,
    scheme: m.scheme === null ? null : compileStringMatcher(m.scheme, `${w} scheme`, false),
    method: m.method === null ? null : compileStringMatcher(m.method, `${w} method`, false),
    // Host names compare case-insensitively everywhere [CVE-2021-39155].
    authority: m.authority === null ? null : compileStringMatcher(m.authority, `${w} authority`, true),
    headers: compileKeys(m.headers, `${w} headers`),
    withoutHeaders: compileKeys(m.withoutHeaders, `${w} withoutHeaders`),
    queryParams: compileKeys(m.queryParams, `${w} queryParams`),
  };
}

/** Envoy's regex_rewrite substitution: `\N` inserts group N, `\\` a backslash. */
function compileSubstitution(s: string): (string | number)[] {
  const parts: (string | number)[] = [];
  let lit = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 48 && d <= 57) {
        if (lit) { parts.push(lit); lit = ''; }
        parts.push(d - 48);
        i++;
        continue;
      }
      if (s[i + 1] === '\\') { lit += '\\'; i++; continue; }
    }
    lit += c;
  }
  if (lit) parts.push(lit);
  return parts;
}

function compileRegexRewrite(match: string, rewrite: string, where: string): CompiledRegexRewrite {
  const m = compileStringMatcher({ kind: 'regex', value: match }, `${where} rewrite.uriRegex`, false);
  const parts = compileSubstitution(rewrite);
  const groups = m.re!.groupCount();
  for (const p of parts) {
    if (typeof p === 'number' && p > groups) throw new Error(`${where} rewrite.uriRegex: substitution uses \\${p} but the regex has ${groups} groups`);
  }
  // The replacer is built once here; per request RE2 calls it with (match, g1, g2, …).
  const replacer = (...args: unknown[]): string => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      out += typeof p === 'string' ? p : ((args[p] as string | undefined) ?? '');
    }
    return out;
  };
  return { re: m.re!, parts, replacer };
}

function compileAction(r: Route, where: string): CompiledAction {
  const a = r.action;
  const out: CompiledAction = {
    kind: ACTION_ROUTE, clusters: [], cumulative: [], totalWeight: 0,
    redirectUri: null, redirectAuthority: null, redirectPort: null, derivePort: null, redirectScheme: null,
    status: 0, body: null,
  };
  switch (a.kind) {
    case 'route': {
      if (a.clusters.length === 0) throw new Error(`${where}: route action has no destination`);
      let sum = 0;
      a.clusters.forEach((wc, i) => {
        if (!(wc.weight >= 0)) throw new Error(`${where} route[${i}]: weight ${wc.weight} is negative`);
        sum += wc.weight;
        out.clusters.push({
          cluster: wc.cluster,
          weight: wc.weight,
          requestOps: compileHeaderOps(wc.requestHeaders, `${where} route[${i}] headers.request`),
          responseOps: compileHeaderOps(wc.responseHeaders, `${where} route[${i}] headers.response`),
        });
        out.cumulative.push(sum);
      });
      out.totalWeight = sum;
      break;
    }
    case 'redirect':
      out.kind = ACTION_REDIRECT;
      out.redirectUri = a.uri;
      out.redirectAuthority = a.authority === null ? null : a.authority.toLowerCase();
      out.redirectPort = a.port;
      out.derivePort = a.derivePort;
      out.redirectScheme = a.scheme === null ? null : a.scheme.toLowerCase();
      out.status = a.code || 301;
      break;
    case 'directResponse':
      out.kind = ACTION_DIRECT;
      out.status = a.status;
      out.body = a.body === null ? null : Buffer.from(a.body, a.bodyBase64 ? 'base64' : 'utf8');
      break;
  }
  return out;
}

function compileFault(f: FaultPolicy | null): CompiledFault | null {
  if (f === null || (f.delay === null && f.abort === null)) return null;
  let abortGrpc = -1;
  if (f.abort?.grpcStatus != null) {
    const g = f.abort.grpcStatus;
    abortGrpc = /^\d+$/.test(g) ? Number(g) : (GRPC_STATUS[g.toUpperCase()] ?? 2);
  }
  return {
    delayMs: f.delay?.ms ?? 0,
    delayPercent: f.delay?.percent ?? 0,
    abortStatus: f.abort?.httpStatus ?? (abortGrpc >= 0 ? 200 : 503),
    abortGrpc,
    abortPercent: f.abort?.percent ?? 0,
  };
}

export function compileRoute(r: Route, index: number): CompiledRoute {
  const where = `route ${r.name}`;
  const route: CompiledRoute = {
    name: r.name,
    routeName: r.routeName,
    index,
    source: r,
    matches: [],
    action: compileAction(r, where),
    rewriteUri: r.rewrite?.uri ?? null,
    rewriteRegex: r.rewrite?.uriRegex ? compileRegexRewrite(r.rewrite.uriRegex.match, r.rewrite.uriRegex.rewrite, where) : null,
    rewriteAuthority: r.rewrite?.authority ?? null,
    timeoutMs: r.timeoutMs,
    retries: r.retries,
    fault: compileFault(r.fault),
    mirrors: r.mirrors.map((m) => ({ cluster: m.cluster, percent: m.percent })),
    cors: r.cors === null ? null : compileCors(r.cors, where),
    requestOps: compileHeaderOps(r.requestHeaders, `${where} headers.request`),
    responseOps: compileHeaderOps(r.responseHeaders, `${where} headers.response`),
    bufferBody: (r.retries !== null && r.retries.attempts > 0) || r.mirrors.length > 0,
  };
  if (r.match.length === 0) route.matches.push(compileMatch(null, -1, route, where));
  else r.match.forEach((m, j) => route.matches.push(compileMatch(m, j, route, where)));
  return route;
}

function compileVirtualHost(vh: VirtualHost): CompiledVirtualHost {
  const routes = vh.routes.map((r, i) => compileRoute(r, i));
  let needsHeaders = false;
  let needsQuery = false;
  let needsLowerPath = false;
  for (const r of routes) {
    for (const m of r.matches) {
      if (m.headers !== null || m.withoutHeaders !== null) needsHeaders = true;
      if (m.queryParams !== null) needsQuery = true;
      if (m.ignoreUriCase && m.uri !== null && m.uri.kind !== MATCH_REGEX) needsLowerPath = true;
    }
  }
  return { name: vh.name, source: vh, httpsRedirect: vh.httpsRedirect, routes, needsHeaders, needsQuery, needsLowerPath };
}

/** Throws an Error naming the listener and the route/field that cannot be compiled. */
export function compileRouteTable(l: Listener): RouteTable {
  const table: RouteTable = { listener: l, virtualHosts: [], exact: new Map(), wildcards: [], star: null };
  for (const vh of l.virtualHosts) {
    let cvh: CompiledVirtualHost;
    try {
      cvh = compileVirtualHost(vh);
    } catch (e) {
      throw new Error(`listener ${l.name} virtual host ${vh.name}: ${(e as Error).message}`);
    }
    table.virtualHosts.push(cvh);
    // Earlier virtual hosts win a domain both claim (the list is most specific first).
    for (const d of vh.domains) {
      const dom = d.toLowerCase();
      if (dom === '*') table.star ??= cvh;
      else if (dom.startsWith('*')) {
        const suffix = dom.slice(1);
        if (!table.wildcards.some((w) => w.suffix === suffix)) table.wildcards.push({ suffix, vhost: cvh });
      } else if (!table.exact.has(dom)) table.exact.set(dom, cvh);
    }
  }
  // Stable sort: equal lengths keep config order.
  table.wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  return table;
}

// ---------------------------------------------------------------- per request

/** Host part of an authority, lower-cased, port removed; `[::1]:8080` → `[::1]`. */
export function authorityHost(authority: string): string {
  let end = authority.length;
  if (authority.charCodeAt(0) === 91 /* [ */) {
    const close = authority.indexOf(']');
    if (close > 0) end = close + 1;
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon >= 0) end = colon;
  }
  const host = end === authority.length ? authority : authority.slice(0, end);
  return host.toLowerCase();
}

export function selectVirtualHost(t: RouteTable, authority: string): CompiledVirtualHost | null {
  const host = authorityHost(authority);
  const exact = t.exact.get(host);
  if (exact !== undefined) return exact;
  const w = t.wildcards;
  for (let i = 0; i < w.length; i++) {
    const s = w[i].suffix;
    if (host.length > s.length && host.endsWith(s)) return w[i].vhost;
  }
  return t.star;
}

/** Header values as they arrived: one string per occurrence of the header. */
export type HeaderValues = Record<string, string | string[] | undefined>;
/** Query parameters, percent-decoded, every occurrence kept. */
export type QueryValues = Record<string, string[]>;

/**
 * A header/param matcher succeeds when any one value matches: several values of one header
 * are checked one by one, never as the comma-joined string [CVE-2026-26308].
 */
function anyValueMatches(k: CompiledKey, v: string | string[] | undefined): boolean {
  if (v === undefined || k.internal) return false;
  if (typeof v === 'string') return matchString(k.m, v);
  for (let i = 0; i < v.length; i++) if (matchString(k.m, v[i])) return true;
  return false;
}

function matchEntry(m: CompiledMatch, path: string, lowerPath: string, method: string, scheme: string, authority: string, headers: HeaderValues, query: QueryValues): boolean {
  const uri = m.uri;
  if (uri !== null && !matchString(uri, m.ignoreUriCase && uri.kind !== MATCH_REGEX ? lowerPath : path)) return false;
  if (m.method !== null && !matchString(m.method, method)) return false;
  if (m.scheme !== null && !matchString(m.scheme, scheme)) return false;
  if (m.authority !== null && !matchString(m.authority, m.authority.kind === MATCH_REGEX ? authority : authority.toLowerCase())) return false;
  const hs = m.headers;
  if (hs !== null) {
    for (let i = 0; i < hs.length; i++) if (!anyValueMatches(hs[i], headers[hs[i].name])) return false;
  }
  const wh = m.withoutHeaders;
  if (wh !== null) {
    for (let i = 0; i < wh.length; i++) if (anyValueMatches(wh[i], headers[wh[i].name])) return false;
  }
  const qs = m.queryParams;
  if (qs !== null) {
    for (let i = 0; i < qs.length; i++) if (!anyValueMatches(qs[i], query[qs[i].name])) return false;
  }
  return true;
}

/** First route (in order) with a matching entry; the entry tells which one matched. */
export function findRoute(vh: CompiledVirtualHost, path: string, method: string, scheme: string, authority: string, headers: HeaderValues, query: QueryValues): CompiledMatch | null {
  const lowerPath = vh.needsLowerPath ? path.toLowerCase() : path;
  const routes = vh.routes;
  for (let r = 0; r < routes.length; r++) {
    const ms = routes[r].matches;
    for (let i = 0; i < ms.length; i++) {
      if (matchEntry(ms[i], path, lowerPath, method, scheme, authority, headers, query)) return ms[i];
    }
  }
  return null;
}

function decodeQueryPart(s: string): string {
  if (s.indexOf('%') < 0) return s;
  try { return decodeURIComponent(s); } catch { return s; }
}

/** Parses a raw query string (no `?`) once; only called when some route needs it. */
export function parseQuery(q: string): QueryValues {
  const out: QueryValues = Object.create(null);
  if (q.length === 0) return out;
  let start = 0;
  while (start <= q.length) {
    let amp = q.indexOf('&', start);
    if (amp < 0) amp = q.length;
    if (amp > start) {
      const eq = q.indexOf('=', start);
      const hasEq = eq >= 0 && eq < amp;
      const key = decodeQueryPart(q.slice(start, hasEq ? eq : amp));
      const val = hasEq ? decodeQueryPart(q.slice(eq + 1, amp)) : '';
      const cur = out[key];
      if (cur === undefined) out[key] = [val]; else cur.push(val);
    }
    start = amp + 1;
  }
  return out;
}

export const NO_HEADERS: HeaderValues = Object.freeze(Object.create(null));
export const NO_QUERY: QueryValues = Object.freeze(Object.create(null));

export interface MatchInput {
  authority: string;
  /** Normalised path, without the query. */
  path: string;
  method: string;
  scheme: string;
  headers: HeaderValues;
  /** Raw query string without `?`. */
  query: string;
  /** The Gateway port the request arrived on (informational; tables are per port). */
  port: number;
}

export interface MatchResult {
  virtualHost: CompiledVirtualHost;
  route: CompiledRoute;
  /** Index of the matching entry in the route's `match` list; -1 when the route has none. */
  matchIndex: number;
}

/**
 * The lookup the data plane runs, for `meshgate explain` and benchmarks: virtual host by
 * authority, then the first route whose match succeeds. Null: the request gets 404.
 */
export function matchRoute(table: RouteTable, input: MatchInput): MatchResult | null {
  const vh = selectVirtualHost(table, input.authority);
  if (vh === null) return null;
  const m = findRoute(vh, input.path, input.method, input.scheme, input.authority, input.headers, vh.needsQuery ? parseQuery(input.query) : NO_QUERY);
  if (m === null) return null;
  return { virtualHost: vh, route: m.route, matchIndex: m.index };
}
