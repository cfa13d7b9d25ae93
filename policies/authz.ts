// AuthorizationPolicy, run by the data plane after JWT authentication and before rate
// limiting. Pilot hands over the policies that bind to this proxy (CUSTOM should not get
// here: translation warns about it; if it does, 'throw' rejects it and 'fail-closed' denies
// what its rules select); `compileAuthorization` turns them into matchers once per
// config version and `authorize` runs per request, synchronously, without building regexes,
// parsing config or allocating on the common path.
//
// Evaluation, as Istio's: AUDIT policies only report; any matching DENY policy → 403; then,
// when at least one ALLOW policy exists, the request passes only if one of them matches,
// else 403; with no ALLOW policy it passes. A policy without rules matches nothing (so an
// ALLOW policy without rules, alone, denies everything); a rule `{}` matches everything.
//
// Where one request can be read more than one way, DENY and AUDIT match if any reading
// matches and ALLOW only if every reading does, so ambiguity never widens access:
//  - paths: besides the path as the gateway normalised it (Istio's BASE: dot segments
//    resolved, `%2F`/`%5C` kept, `//` kept), the forms an upstream may see after merging
//    `//` and decoding `%2F`/`%5C` (then resolving dot segments again) are compared too
//    [CVE-2021-31920]. `//admin`, `/admin%2Fsecret` and `/public/..%2Fadmin` hit a DENY on
//    `/admin*`; an ALLOW on `/public/*` does not let `/public/..%2Fadmin` through. Both can
//    be turned off (`mergeSlashes` / `decodeSlashes: false`) when the mesh already merges
//    and decodes before policy, as with Istio's DECODE_AND_MERGE_SLASHES.
//  - a header sent several times: each value is checked on its own, never the comma-joined
//    string [CVE-2026-26308]. DENY matches if one value matches (`values`) or one value is
//    outside `notValues`; ALLOW needs every value to.
// Paths are compared case-sensitively as in Istio. A route with `ignoreUriCase` sends
// `/ADMIN` where `/admin` goes while a DENY on `/admin` does not see it (istio/istio#40541);
// pilot sets `denyIgnoreCase` for such gateways so DENY/AUDIT path rules compare
// case-insensitively there (ALLOW stays exact, which only denies more).
//
// Every user value is compared literally or by prefix/suffix/template: no RegExp is built
// from config, so `a.b*` is the prefix `a.b`, never a pattern [CVE-2026-39350]. Header
// values are compared as given: the data plane trims optional whitespace when it parses
// headers, so `admin ` here would be a value that really ends in a space [CVE-2019-18802].

import type { AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource, RequestFacts } from '../api/policy.ts';
import type { Problem } from '../api/problems.ts';
import { CidrSet, IpAddr, parseCidr, parseIp, type Cidr } from './cidr.ts';

// ---------------------------------------------------------------- public types

/**
 * The verified JWT of a request; null when the request had no token. policies/jwt.ts's
 * AuthnOk result has this shape and can be passed as it is.
 */
export interface AuthInfo {
  /** `iss/sub`: Istio's requestPrincipal. */
  principal: string;
  /** The verified payload. */
  claims: Readonly<Record<string, unknown>>;
  /** `aud`, as a list. */
  audiences: readonly string[];
  /** `azp`, or '' when the token has none. */
  presenter: string;
}

/** Shared and frozen: callers read it, never change it. */
export interface AuthzDecision {
  readonly allowed: boolean;
  /** 403 when denied; 200 (nothing to send, carry on) when allowed. */
  readonly status: 200 | 403;
  /** The body Envoy sends, `RBAC: access denied`, when denied; '' when allowed. */
  readonly reason: string;
  /** Source of the policy that decided: the matching DENY or ALLOW policy; null when no policy matched. */
  readonly policy: string | null;
  /** `<policy source>/rules/<i>` of the deciding rule, for logs and `explain`. */
  readonly rule: string | null;
  /** Sources of the AUDIT policies that matched (the access log records them). */
  readonly audit: readonly string[];
}

export interface AuthzOptions {
  /** Also compare paths with `//` merged (default true). Off when the gateway merges slashes itself. */
  mergeSlashes?: boolean;
  /** Also compare paths with `%2F`/`%5C` decoded to `/` (default true). */
  decodeSlashes?: boolean;
  /** DENY/AUDIT path rules compare case-insensitively (default false; set when a route uses ignoreUriCase). */
  denyIgnoreCase?: boolean;
  /**
   * Claims whose string value is a space-separated list, each word matched on its own
   * (Istio: `scope` and `permission`, plus RequestAuthentication's spaceDelimitedClaims).
   * Nested claims are written with dots: `realm.roles`.
   */
  spaceDelimitedClaims?: string[];
  /**
   * 'throw' (default): a bad policy throws an AuthzConfigError and nothing is applied.
   * 'fail-closed': a bad ALLOW policy allows nothing, a bad DENY policy denies everything,
   * a bad AUDIT policy is dropped, and a CUSTOM policy denies what its rules select (the
   * requests an external authorizer would have had to clear); the problems are in
   * `authorizer.errors`.
   */
  onInvalid?: 'throw' | 'fail-closed';
}

export interface Authorizer {
  /** No policy at all: the pipeline can skip authorization. */
  readonly empty: boolean;
  /** Problems found at compile time ('fail-closed' mode only; 'throw' throws the first). */
  readonly errors: readonly AuthzConfigError[];
  authorize(facts: RequestFacts, auth: AuthInfo | null): AuthzDecision;
}

/** A policy that cannot be compiled. `field` is the path in the resource, e.g. `spec.rules[0].from[0].source.ipBlocks[1]`. */
export class AuthzConfigError extends Error {
  readonly source: string;
  readonly field: string;
  readonly reason: string;

  constructor(source: string, field: string, reason: string) {
    super(`${source} ${field}: ${reason}`);
    this.name = 'AuthzConfigError';
    this.source = source;
    this.field = field;
    this.reason = reason;
  }
}

/** The same problem in the form `analyze` and the admin port print. */
export function authzProblem(e: AuthzConfigError): Problem {
  const [, ns, name] = e.source.split('/');
  return {
    code: 'MG_CONFIG_INVALID',
    severity: 'error',
    resource: ns !== undefined && name !== undefined ? `AuthorizationPolicy/${ns}/${name}` : e.source,
    field: e.field,
    message: e.reason,
  };
}

export const RBAC_DENIED = 'RBAC: access denied';

/** Every problem in the policies, without compiling them for use. */
export function validateAuthorization(policies: readonly AuthzPolicy[], opts: AuthzOptions = {}): AuthzConfigError[] {
  const errors: AuthzConfigError[] = [];
  const o = resolveOptions(opts);
  for (let i = 0; i < policies.length; i++) compilePolicy(policies[i], i, o, errors);
  return errors;
}

export function compileAuthorization(policies: readonly AuthzPolicy[], opts: AuthzOptions = {}): Authorizer {
  const o = resolveOptions(opts);
  const errors: AuthzConfigError[] = [];
  const allow: CompiledPolicy[] = [];
  const deny: CompiledPolicy[] = [];
  const audit: CompiledPolicy[] = [];
  for (let i = 0; i < policies.length; i++) {
    const before = errors.length;
    const cp = compilePolicy(policies[i], i, o, errors);
    if (errors.length > before) {
      if (o.onInvalid === 'throw') continue;
      const failed = failClosed(policies[i], i, o);
      if (failed === null) continue;
      if (failed.action === 'ALLOW') allow.push(failed);
      else deny.push(failed);
      continue;
    }
    if (cp === null) continue;
    if (cp.action === 'ALLOW') allow.push(cp);
    else if (cp.action === 'DENY') deny.push(cp);
    else audit.push(cp);
  }
  if (errors.length > 0 && o.onInvalid === 'throw') {
    const first = errors[0];
    if (errors.length > 1) first.message += ` (and ${errors.length - 1} more problem${errors.length > 2 ? 's' : ''})`;
    throw first;
  }
  return new CompiledAuthorizer(allow, deny, audit, errors, o);
}

// ---------------------------------------------------------------- compiled form

interface ResolvedOptions {
  mergeSlashes: boolean;
  decodeSlashes: boolean;
  denyIgnoreCase: boolean;
  spaceDelimited: Set<string>;
  onInvalid: 'throw' | 'fail-closed';
}

function resolveOptions(o: AuthzOptions): ResolvedOptions {
  return {
    mergeSlashes: o.mergeSlashes ?? true,
    decodeSlashes: o.decodeSlashes ?? true,
    denyIgnoreCase: o.denyIgnoreCase ?? false,
    spaceDelimited: new Set(o.spaceDelimitedClaims ?? ['scope', 'permission']),
    onInvalid: o.onInvalid ?? 'throw',
  };
}

// What a check looks at. Plain numbers so checkMatches is one switch.
const A_PRINCIPAL = 1;
const A_NAMESPACE = 2;
const A_REQ_PRINCIPAL = 3;
const A_SOURCE_IP = 4;
const A_REMOTE_IP = 5;
const A_HOST = 6;
const A_PORT = 7;
const A_METHOD = 8;
const A_PATH = 9;
const A_HEADER = 10;
const A_CLAIM = 11;
const A_AUDIENCES = 12;
const A_PRESENTER = 13;
const A_SNI = 14;

/** `exact`, `prefix*`, `*suffix` and `*` (present, any value). */
class StringMatcher {
  any = false;
  readonly exact = new Set<string>();
  readonly prefixes: string[] = [];
  readonly suffixes: string[] = [];
  /** The only exact value, when there is exactly one. */
  one: string | null = null;

  add(pattern: string): void {
    if (pattern === '*') this.any = true;
    else if (pattern.startsWith('*')) this.suffixes.push(pattern.slice(1));
    else if (pattern.endsWith('*')) this.prefixes.push(pattern.slice(0, -1));
    else this.exact.add(pattern);
    this.one = this.exact.size === 1 ? (this.exact.values().next().value as string) : null;
  }

  matches(s: string): boolean {
    if (this.any) return true;
    // most lists hold one or two exact values: comparing beats hashing the request's string
    const one = this.one;
    if (one !== null) {
      if (s === one) return true;
    } else if (this.exact.size > 0 && this.exact.has(s)) {
      return true;
    }
    const p = this.prefixes;
    for (let i = 0; i < p.length; i++) if (s.startsWith(p[i])) return true;
    const x = this.suffixes;
    for (let i = 0; i < x.length; i++) if (s.endsWith(x[i])) return true;
    return false;
  }
}

/** `{*}`: one non-empty segment; `{**}`: anything, `/` included (zero or more segments). */
interface PathTemplate {
  /** Segments before `{**}` (all of them without it); null is `{*}`. */
  head: (string | null)[];
  hasAny: boolean;
  /** Literal text after `{**}` (`/a/b`), '' when `{**}` ends the template. */
  tail: string;
}

class PathMatcher {
  readonly strings = new StringMatcher();
  readonly templates: PathTemplate[] = [];

  matches(path: string): boolean {
    if (this.strings.matches(path)) return true;
    const t = this.templates;
    for (let i = 0; i < t.length; i++) if (matchTemplate(t[i], path)) return true;
    return false;
  }
}

function matchTemplate(t: PathTemplate, path: string): boolean {
  const len = path.length;
  let pos = 0;
  const head = t.head;
  for (let k = 0; k < head.length; k++) {
    if (pos >= len || path.charCodeAt(pos) !== 47) return false;
    pos++;
    let end = path.indexOf('/', pos);
    if (end < 0) end = len;
    const seg = head[k];
    if (seg === null) {
      if (end === pos) return false;
    } else if (end - pos !== seg.length || !path.startsWith(seg, pos)) {
      return false;
    }
    pos = end;
  }
  if (!t.hasAny) return pos === len;
  if (pos >= len || path.charCodeAt(pos) !== 47) return false;
  pos++;
  return len - pos >= t.tail.length && path.endsWith(t.tail);
}

/** One field of a source/operation, or one side (values / notValues) of a `when`. */
class Check {
  readonly kind: number;
  readonly negate: boolean;
  /** ALLOW: every reading of an ambiguous attribute must match; DENY/AUDIT: any one. */
  readonly all: boolean;
  strings: StringMatcher | null = null;
  paths: PathMatcher | null = null;
  cidrs: CidrSet | null = null;
  ports: Set<number> | null = null;
  /** Header name (lower-case) for A_HEADER. */
  name = '';
  claim: string[] | null = null;
  split = false;
  /** Paths: compare lower-cased (denyIgnoreCase). */
  fold = false;

  constructor(kind: number, negate: boolean, all: boolean) {
    this.kind = kind;
    this.negate = negate;
    this.all = all;
  }
}

interface CompiledRule {
  from: Check[][];
  to: Check[][];
  when: Check[];
}

interface CompiledPolicy {
  source: string;
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  rules: CompiledRule[];
  /** One per rule: the decision when that rule decides. */
  decisions: AuthzDecision[];
}

const EMPTY_AUDIT: readonly string[] = Object.freeze([]);

function decision(allowed: boolean, policy: string | null, rule: string | null): AuthzDecision {
  return Object.freeze({
    allowed,
    status: allowed ? 200 : 403,
    reason: allowed ? '' : RBAC_DENIED,
    policy,
    rule,
    audit: EMPTY_AUDIT,
  });
}

const ALLOWED_NO_POLICY = decision(true, null, null);
const DENIED_NO_MATCH = decision(false, null, null);

function withAudit(d: AuthzDecision, audit: readonly string[]): AuthzDecision {
  return audit === EMPTY_AUDIT ? d : { ...d, audit };
}

// ---------------------------------------------------------------- per request

const CH_SLASH = 47;

/** Per-request scratch, reused: authorize is synchronous, so one per authorizer is enough. */
class Ctx {
  facts: RequestFacts | null = null;
  auth: AuthInfo | null = null;
  /** Path readings: [0] as normalised by the gateway, then merged / decoded forms. */
  paths: string[] = ['', '', ''];
  pathCount = 0;
  lowerPaths: string[] = ['', '', ''];
  lowerReady = false;
  host = '';
  hostReady = false;
  peer = '';
  peerReady = false;
  sni = '';
  sniReady = false;
  readonly src = new IpAddr();
  srcReady = false;
  readonly remote = new IpAddr();
  remoteReady = false;
}

function resetCtx(ctx: Ctx, facts: RequestFacts, auth: AuthInfo | null): void {
  ctx.facts = facts;
  ctx.auth = auth;
  ctx.pathCount = 0;
  ctx.lowerReady = false;
  ctx.hostReady = false;
  ctx.peerReady = false;
  ctx.sniReady = false;
  ctx.srcReady = false;
  ctx.remoteReady = false;
}

class CompiledAuthorizer implements Authorizer {
  readonly empty: boolean;
  readonly errors: readonly AuthzConfigError[];
  private readonly allow: CompiledPolicy[];
  private readonly deny: CompiledPolicy[];
  private readonly audit: CompiledPolicy[];
  private readonly merge: boolean;
  private readonly decode: boolean;
  private readonly ctx = new Ctx();

  constructor(allow: CompiledPolicy[], deny: CompiledPolicy[], audit: CompiledPolicy[], errors: AuthzConfigError[], o: ResolvedOptions) {
    this.allow = allow;
    this.deny = deny;
    this.audit = audit;
    this.errors = Object.freeze(errors.slice());
    this.empty = allow.length === 0 && deny.length === 0 && audit.length === 0;
    this.merge = o.mergeSlashes;
    this.decode = o.decodeSlashes;
  }

  authorize(facts: RequestFacts, auth: AuthInfo | null): AuthzDecision {
    if (this.empty) return ALLOWED_NO_POLICY;
    const ctx = this.ctx;
    resetCtx(ctx, facts, auth);
    preparePaths(ctx, facts.path, this.merge, this.decode);
    const d = decide(this.allow, this.deny, this.audit, ctx);
    ctx.facts = null;
    ctx.auth = null;
    return d;
  }
}

function decide(allow: CompiledPolicy[], deny: CompiledPolicy[], audit: CompiledPolicy[], ctx: Ctx): AuthzDecision {
  // AUDIT first so that denied requests are audited too.
  let audited = EMPTY_AUDIT;
  for (let i = 0; i < audit.length; i++) {
    if (matchingRule(audit[i], ctx) >= 0) {
      if (audited === EMPTY_AUDIT) audited = [];
      (audited as string[]).push(audit[i].source);
    }
  }
  for (let i = 0; i < deny.length; i++) {
    const r = matchingRule(deny[i], ctx);
    if (r >= 0) return withAudit(deny[i].decisions[r], audited);
  }
  if (allow.length === 0) return withAudit(ALLOWED_NO_POLICY, audited);
  for (let i = 0; i < allow.length; i++) {
    const r = matchingRule(allow[i], ctx);
    if (r >= 0) return withAudit(allow[i].decisions[r], audited);
  }
  return withAudit(DENIED_NO_MATCH, audited);
}

function matchingRule(p: CompiledPolicy, ctx: Ctx): number {
  const rules = p.rules;
  for (let i = 0; i < rules.length; i++) if (ruleMatches(rules[i], ctx)) return i;
  return -1;
}

function ruleMatches(r: CompiledRule, ctx: Ctx): boolean {
  // `to` first: host/method/path checks are cheaper than parsing addresses for `from`.
  if (r.to.length > 0 && !anyGroup(r.to, ctx)) return false;
  if (r.from.length > 0 && !anyGroup(r.from, ctx)) return false;
  return allChecks(r.when, ctx);
}

function anyGroup(groups: Check[][], ctx: Ctx): boolean {
  for (let i = 0; i < groups.length; i++) if (allChecks(groups[i], ctx)) return true;
  return false;
}

function allChecks(checks: Check[], ctx: Ctx): boolean {
  for (let i = 0; i < checks.length; i++) if (!checkMatches(checks[i], ctx)) return false;
  return true;
}

function checkMatches(c: Check, ctx: Ctx): boolean {
  const facts = ctx.facts as RequestFacts;
  switch (c.kind) {
    case A_PATH: return pathCheck(c, ctx);
    case A_HEADER: return headerCheck(c, facts.headers);
    case A_CLAIM: return claimCheck(c, ctx.auth);
    case A_METHOD: return stringCheck(c, facts.method);
    case A_HOST: return stringCheck(c, hostOf(ctx));
    case A_PORT: return (c.ports as Set<number>).has(facts.port) !== c.negate;
    case A_SOURCE_IP: return ipCheck(c, sourceIp(ctx));
    case A_REMOTE_IP: return ipCheck(c, remoteIp(ctx));
    case A_PRINCIPAL: return stringCheck(c, peerOf(ctx));
    case A_NAMESPACE: return stringCheck(c, facts.peerNamespace);
    case A_REQ_PRINCIPAL: return stringCheck(c, ctx.auth === null ? '' : ctx.auth.principal);
    case A_PRESENTER: return stringCheck(c, ctx.auth === null ? '' : ctx.auth.presenter);
    case A_SNI: return stringCheck(c, sniOf(ctx));
    case A_AUDIENCES: return audiencesCheck(c, ctx.auth);
    default: return false;
  }
}

/** '' is "absent": it matches no value, not even `*`, and every not-value. */
function stringCheck(c: Check, v: string): boolean {
  if (v.length === 0) return c.negate;
  return (c.strings as StringMatcher).matches(v) !== c.negate;
}

function ipCheck(c: Check, ip: IpAddr): boolean {
  if (ip.family === 0) return c.negate;
  return (c.cidrs as CidrSet).contains(ip) !== c.negate;
}

function pathCheck(c: Check, ctx: Ctx): boolean {
  const m = c.paths as PathMatcher;
  const n = ctx.pathCount;
  const paths = c.fold ? lowerPaths(ctx) : ctx.paths;
  for (let i = 0; i < n; i++) {
    const r = m.matches(paths[i]) !== c.negate;
    if (c.all ? !r : r) return r;
  }
  return c.all;
}

function headerCheck(c: Check, headers: Record<string, string[]>): boolean {
  // hasOwn: a header named `constructor` or `__proto__` must not find Object.prototype
  const values = Object.hasOwn(headers, c.name) ? headers[c.name] : undefined;
  if (values === undefined || values.length === 0) return c.negate;
  const m = c.strings as StringMatcher;
  for (let i = 0; i < values.length; i++) {
    const r = m.matches(values[i]) !== c.negate;
    if (c.all ? !r : r) return r;
  }
  return c.all;
}

function audiencesCheck(c: Check, auth: AuthInfo | null): boolean {
  if (auth === null || auth.audiences.length === 0) return c.negate;
  const m = c.strings as StringMatcher;
  const aud = auth.audiences;
  for (let i = 0; i < aud.length; i++) if (m.matches(aud[i])) return !c.negate;
  return c.negate;
}

/**
 * A claim matches a value when it is that string, or a list holding it (a token's `groups`
 * gives its bearer every group). Numbers, booleans and objects match nothing, as in Istio,
 * where claim conditions compare strings only.
 */
function claimCheck(c: Check, auth: AuthInfo | null): boolean {
  if (auth === null) return c.negate;
  const path = c.claim as string[];
  let v: unknown = auth.claims;
  for (let i = 0; i < path.length; i++) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, path[i])) return c.negate;
    v = (v as Record<string, unknown>)[path[i]];
  }
  const m = c.strings as StringMatcher;
  if (typeof v === 'string') {
    const hit = c.split ? anyWordMatches(m, v) : m.matches(v);
    return hit !== c.negate;
  }
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const e: unknown = v[i];
      if (typeof e === 'string' && m.matches(e)) return !c.negate;
    }
    return c.negate;
  }
  return c.negate;
}

function anyWordMatches(m: StringMatcher, v: string): boolean {
  let start = 0;
  while (start < v.length) {
    let end = v.indexOf(' ', start);
    if (end < 0) end = v.length;
    if (end > start && m.matches(v.slice(start, end))) return true;
    start = end + 1;
  }
  return false;
}

function hostOf(ctx: Ctx): string {
  if (!ctx.hostReady) {
    ctx.host = hostKey((ctx.facts as RequestFacts).host);
    ctx.hostReady = true;
  }
  return ctx.host;
}

/** Lower-case, without `:port` (`[::1]:8080` → `[::1]`). Returns the input when already so. */
function hostKey(h: string): string {
  let colon = -1;
  let upper = false;
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (c === 58) colon = i;
    else if (c >= 65 && c <= 90) upper = true;
  }
  let out = h;
  if (colon >= 0) {
    const bracketed = h.charCodeAt(0) === 91;
    const close = h.lastIndexOf(']');
    if (bracketed ? close >= 0 && colon > close : h.indexOf(':') === colon) out = h.slice(0, colon);
  }
  return upper ? out.toLowerCase() : out;
}

function sniOf(ctx: Ctx): string {
  if (!ctx.sniReady) {
    ctx.sni = hostKey((ctx.facts as RequestFacts).sni);
    ctx.sniReady = true;
  }
  return ctx.sni;
}

/** Istio writes principals without the `spiffe://` scheme: `cluster.local/ns/default/sa/sleep`. */
function peerOf(ctx: Ctx): string {
  if (!ctx.peerReady) {
    const p = (ctx.facts as RequestFacts).peerPrincipal;
    ctx.peer = p.startsWith('spiffe://') ? p.slice(9) : p;
    ctx.peerReady = true;
  }
  return ctx.peer;
}

function sourceIp(ctx: Ctx): IpAddr {
  if (!ctx.srcReady) {
    parseIp((ctx.facts as RequestFacts).sourceIp, ctx.src);
    ctx.srcReady = true;
  }
  return ctx.src;
}

function remoteIp(ctx: Ctx): IpAddr {
  if (!ctx.remoteReady) {
    parseIp((ctx.facts as RequestFacts).remoteIp, ctx.remote);
    ctx.remoteReady = true;
  }
  return ctx.remote;
}

/** Fills ctx.paths with the distinct readings of the path. Only unusual paths get more than one. */
function preparePaths(ctx: Ctx, path: string, merge: boolean, decode: boolean): void {
  ctx.paths[0] = path;
  ctx.pathCount = 1;
  const hasDouble = merge && path.indexOf('//') >= 0;
  const hasEscape = decode && (path.indexOf('%') >= 0 || path.indexOf('\\') >= 0);
  if (!hasDouble && !hasEscape) return;
  let p = hasEscape ? decodeSlashes(path) : path;
  if (merge) p = mergeSlashes(p);
  if (p !== path) ctx.paths[ctx.pathCount++] = p;
  const resolved = removeDotSegments(p);
  if (resolved !== p && resolved !== path) ctx.paths[ctx.pathCount++] = resolved;
}

function lowerPaths(ctx: Ctx): string[] {
  if (!ctx.lowerReady) {
    for (let i = 0; i < ctx.pathCount; i++) ctx.lowerPaths[i] = ctx.paths[i].toLowerCase();
    ctx.lowerReady = true;
  }
  return ctx.lowerPaths;
}

function decodeSlashes(p: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === 92) {
      out += p.slice(from, i) + '/';
      from = i + 1;
    } else if (c === 37 && i + 2 < p.length) {
      const h = p.charCodeAt(i + 1);
      const l = p.charCodeAt(i + 2) | 0x20;
      if ((h === 50 && l === 102) || (h === 53 && l === 99)) { // %2F, %5C
        out += p.slice(from, i) + '/';
        from = i + 3;
        i += 2;
      }
    }
  }
  return from === 0 ? p : out + p.slice(from);
}

function mergeSlashes(p: string): string {
  if (p.indexOf('//') < 0) return p;
  let out = '';
  let prev = 0;
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === CH_SLASH && prev === CH_SLASH) continue;
    out += p[i];
    prev = c;
  }
  return out;
}

/** RFC 3986 5.2.4 for a path starting with `/`; `..` cannot climb above the root. */
function removeDotSegments(p: string): string {
  if (p.indexOf('/.') < 0) return p;
  const segs = p.split('/');
  const out: string[] = [];
  const last = segs.length - 1;
  for (let i = 1; i <= last; i++) {
    const s = segs[i];
    if (s === '.' || s === '..') {
      if (s === '..' && out.length > 0) out.pop();
      if (i === last) out.push('');
    } else {
      out.push(s);
    }
  }
  return '/' + out.join('/');
}

// ---------------------------------------------------------------- compiling

const MAX_VALUE_LENGTH = 4096;

/**
 * What a policy that failed to compile becomes in 'fail-closed' mode: ALLOW allows nothing
 * (it still counts as an ALLOW policy, so requests need another one to pass); DENY matches
 * every request; AUDIT is dropped.
 */
function failClosed(p: AuthzPolicy, index: number, o: ResolvedOptions): CompiledPolicy | null {
  const source = sourceOf(p, index);
  const action = p?.action as string;
  if (action === 'ALLOW') return { source, action, rules: [], decisions: [] };
  if (action === 'CUSTOM') {
    const problems: AuthzConfigError[] = [];
    const asDeny = compilePolicy({ ...p, action: 'DENY' }, index, o, problems);
    if (asDeny !== null && problems.length === 0) return asDeny;
  }
  if (action === 'DENY' || action === 'CUSTOM') {
    return { source, action: 'DENY', rules: [{ from: [], to: [], when: [] }], decisions: [decision(false, source, null)] };
  }
  return null;
}

function sourceOf(p: AuthzPolicy, index: number): string {
  return p !== null && typeof p === 'object' && typeof p.source === 'string' && p.source !== ''
    ? p.source : `authorization[${index}]`;
}

interface Compiling {
  source: string;
  errors: AuthzConfigError[];
  /** ALLOW: `all` checks; DENY/AUDIT: `any`. */
  all: boolean;
  fold: boolean;
  o: ResolvedOptions;
}

function fail(cx: Compiling, field: string, reason: string): void {
  cx.errors.push(new AuthzConfigError(cx.source, field, reason));
}

function compilePolicy(p: AuthzPolicy, index: number, o: ResolvedOptions, errors: AuthzConfigError[]): CompiledPolicy | null {
  const source = sourceOf(p, index);
  const cx: Compiling = { source, errors, all: true, fold: false, o };
  if (p === null || typeof p !== 'object') {
    fail(cx, 'spec', 'is not an object');
    return null;
  }
  const action = p.action as string;
  if (action === 'CUSTOM') {
    fail(cx, 'spec.action', 'CUSTOM (external authorization) is not supported by meshgate');
    return null;
  }
  if (action !== 'ALLOW' && action !== 'DENY' && action !== 'AUDIT') {
    fail(cx, 'spec.action', `${JSON.stringify(action)} is not one of ALLOW, DENY, AUDIT`);
    return null;
  }
  cx.all = action === 'ALLOW';
  cx.fold = action !== 'ALLOW' && o.denyIgnoreCase;
  const rules: CompiledRule[] = [];
  const decisions: AuthzDecision[] = [];
  const inRules: unknown = p.rules ?? [];
  if (!Array.isArray(inRules)) {
    fail(cx, 'spec.rules', 'must be a list');
    return null;
  }
  for (let i = 0; i < inRules.length; i++) {
    const field = `spec.rules[${i}]`;
    const r = compileRule(inRules[i] as AuthzRule, field, cx);
    if (r === null) continue;
    rules.push(r);
    decisions.push(decision(action !== 'DENY', source, `${source}/rules/${i}`));
  }
  return { source, action, rules, decisions };
}

function compileRule(r: AuthzRule, field: string, cx: Compiling): CompiledRule | null {
  if (r === null || typeof r !== 'object') {
    fail(cx, field, 'is not an object');
    return null;
  }
  const from: Check[][] = [];
  const to: Check[][] = [];
  const when: Check[] = [];
  const froms = asList(r.from, `${field}.from`, cx);
  for (let j = 0; j < froms.length; j++) {
    const g = compileSource(froms[j] as AuthzSource, `${field}.from[${j}].source`, cx);
    if (g !== null) from.push(g);
  }
  const tos = asList(r.to, `${field}.to`, cx);
  for (let j = 0; j < tos.length; j++) {
    const g = compileOperation(tos[j] as AuthzOperation, `${field}.to[${j}].operation`, cx);
    if (g !== null) to.push(g);
  }
  const whens = asList(r.when, `${field}.when`, cx);
  for (let j = 0; j < whens.length; j++) compileCondition(whens[j] as AuthzCondition, `${field}.when[${j}]`, cx, when);
  return { from, to, when };
}

function asList(v: unknown, field: string, cx: Compiling): unknown[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) {
    fail(cx, field, 'must be a list');
    return [];
  }
  return v;
}

/** A string list from config: null when absent or empty; problems reported per item. */
function values(v: unknown, field: string, cx: Compiling): string[] | null {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v)) {
    fail(cx, field, 'must be a list of strings');
    return null;
  }
  if (v.length === 0) return null;
  const out: string[] = [];
  for (let k = 0; k < v.length; k++) {
    const s: unknown = v[k];
    if (typeof s !== 'string') fail(cx, `${field}[${k}]`, 'must be a string');
    else if (s.length === 0) fail(cx, `${field}[${k}]`, 'empty value not allowed');
    else if (s.length > MAX_VALUE_LENGTH) fail(cx, `${field}[${k}]`, `is longer than ${MAX_VALUE_LENGTH} characters`);
    else out.push(s);
  }
  return out;
}

type FieldKind = 'string' | 'host' | 'path' | 'port' | 'ip' | 'sni';

function compileField(kind: number, negate: boolean, fk: FieldKind, list: string[], field: string, cx: Compiling): Check {
  const c = new Check(kind, negate, cx.all);
  switch (fk) {
    case 'string':
      c.strings = new StringMatcher();
      for (const v of list) c.strings.add(v);
      break;
    case 'host':
    case 'sni':
      c.strings = new StringMatcher();
      for (let k = 0; k < list.length; k++) {
        const h = hostKey(list[k]);
        if (h.length === 0) fail(cx, `${field}[${k}]`, `${JSON.stringify(list[k])} has no host name`);
        else c.strings.add(h);
      }
      break;
    case 'path':
      c.paths = new PathMatcher();
      c.fold = cx.fold;
      for (let k = 0; k < list.length; k++) addPath(c.paths, cx.fold ? list[k].toLowerCase() : list[k], `${field}[${k}]`, cx);
      break;
    case 'port':
      c.ports = new Set();
      for (let k = 0; k < list.length; k++) {
        const n = parsePort(list[k]);
        if (n < 0) fail(cx, `${field}[${k}]`, `${JSON.stringify(list[k])} is not a port number (0-65535)`);
        else c.ports.add(n);
      }
      break;
    case 'ip': {
      const cidrs: Cidr[] = [];
      for (let k = 0; k < list.length; k++) {
        const b = parseCidr(list[k]);
        if (b === null) fail(cx, `${field}[${k}]`, `${JSON.stringify(list[k])} is not an IP address or CIDR block`);
        else cidrs.push(b);
      }
      c.cidrs = new CidrSet(cidrs);
      break;
    }
  }
  return c;
}

function parsePort(s: string): number {
  if (s.length === 0 || s.length > 5) return -1;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n > 65535 ? -1 : n;
}

const SOURCE_FIELDS: readonly [keyof AuthzSource, number, boolean, FieldKind][] = [
  ['principals', A_PRINCIPAL, false, 'string'],
  ['notPrincipals', A_PRINCIPAL, true, 'string'],
  ['requestPrincipals', A_REQ_PRINCIPAL, false, 'string'],
  ['notRequestPrincipals', A_REQ_PRINCIPAL, true, 'string'],
  ['namespaces', A_NAMESPACE, false, 'string'],
  ['notNamespaces', A_NAMESPACE, true, 'string'],
  ['ipBlocks', A_SOURCE_IP, false, 'ip'],
  ['notIpBlocks', A_SOURCE_IP, true, 'ip'],
  ['remoteIpBlocks', A_REMOTE_IP, false, 'ip'],
  ['notRemoteIpBlocks', A_REMOTE_IP, true, 'ip'],
];

const OPERATION_FIELDS: readonly [keyof AuthzOperation, number, boolean, FieldKind][] = [
  ['hosts', A_HOST, false, 'host'],
  ['notHosts', A_HOST, true, 'host'],
  ['ports', A_PORT, false, 'port'],
  ['notPorts', A_PORT, true, 'port'],
  ['methods', A_METHOD, false, 'string'],
  ['notMethods', A_METHOD, true, 'string'],
  ['paths', A_PATH, false, 'path'],
  ['notPaths', A_PATH, true, 'path'],
];

function compileSource(s: AuthzSource, field: string, cx: Compiling): Check[] | null {
  return compileGroup(s as unknown as Record<string, unknown>, SOURCE_FIELDS, field, cx);
}

function compileOperation(op: AuthzOperation, field: string, cx: Compiling): Check[] | null {
  return compileGroup(op as unknown as Record<string, unknown>, OPERATION_FIELDS, field, cx);
}

function compileGroup(obj: Record<string, unknown>, fields: readonly [string, number, boolean, FieldKind][], field: string, cx: Compiling): Check[] | null {
  if (obj === null || typeof obj !== 'object') {
    fail(cx, field, 'is not an object');
    return null;
  }
  const checks: Check[] = [];
  for (const [name, kind, negate, fk] of fields) {
    const list = values(obj[name], `${field}.${name}`, cx);
    if (list !== null) checks.push(compileField(kind, negate, fk, list, `${field}.${name}`, cx));
  }
  // Istio rejects an empty source/operation: it would silently match every request.
  if (checks.length === 0) {
    fail(cx, field, 'must not be empty (set at least one field, or leave the entry out)');
    return null;
  }
  return checks;
}

/** The pchar set of RFC 3986, which path-template literals must stay within (as Istio checks). */
function isPcharLiteral(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
      || '-._~%!$&\'()+,;:@='.indexOf(s[i]) >= 0;
    if (!ok) return false;
  }
  return true;
}

function addPath(m: PathMatcher, path: string, field: string, cx: Compiling): void {
  if (path.indexOf('{') < 0 && path.indexOf('}') < 0) {
    m.strings.add(path);
    return;
  }
  const bad = (why: string): void => fail(cx, field, `${JSON.stringify(path)} is not a valid path template: ${why}`);
  if (path.charCodeAt(0) !== CH_SLASH) return bad('it must start with /');
  const segs = path.slice(1).split('/');
  const head: (string | null)[] = [];
  const after: string[] = [];
  let hasAny = false;
  for (let k = 0; k < segs.length; k++) {
    const s = segs[k];
    if (s === '{**}') {
      if (hasAny) return bad('only one {**} is allowed');
      hasAny = true;
      continue;
    }
    if (s === '{*}') {
      if (hasAny) return bad('{**} must be the last operator');
      head.push(null);
      continue;
    }
    if (s.indexOf('{') >= 0 || s.indexOf('}') >= 0) return bad(`segment "${s}" has { or } beyond a whole {*} or {**} segment`);
    if (s === '' && k === segs.length - 1 && k > 0) {
      // a trailing slash is a literal empty last segment
    } else if (!isPcharLiteral(s)) {
      return bad(s === '' ? 'empty segment (//)' : `segment "${s}" has characters outside RFC 3986 pchar`);
    }
    if (hasAny) after.push(s);
    else head.push(s);
  }
  m.templates.push({ head, hasAny, tail: after.length > 0 ? '/' + after.join('/') : '' });
}

const WHEN_SIMPLE: Record<string, [number, FieldKind]> = {
  'source.ip': [A_SOURCE_IP, 'ip'],
  'remote.ip': [A_REMOTE_IP, 'ip'],
  'source.namespace': [A_NAMESPACE, 'string'],
  'source.principal': [A_PRINCIPAL, 'string'],
  'request.auth.principal': [A_REQ_PRINCIPAL, 'string'],
  'request.auth.audiences': [A_AUDIENCES, 'string'],
  'request.auth.presenter': [A_PRESENTER, 'string'],
  'destination.port': [A_PORT, 'port'],
  'connection.sni': [A_SNI, 'sni'],
};

const WHEN_UNSUPPORTED: Record<string, string> = {
  'destination.ip': 'is not supported by meshgate yet',
  'source.serviceAccount': 'is not supported by meshgate yet; use source.principal',
  'destination.namespace': 'is replaced by the policy\'s metadata.namespace',
  'destination.name': 'is deprecated (v1alpha1 only)',
  'destination.user': 'is deprecated (v1alpha1 only)',
};

const KNOWN_KEYS = 'request.headers[<name>], request.auth.claims[<name>]…, request.auth.principal, '
  + 'request.auth.audiences, request.auth.presenter, source.ip, remote.ip, source.namespace, '
  + 'source.principal, destination.port, connection.sni';

function isTokenChar(c: number): boolean {
  // RFC 9110 tchar
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
    || (c > 32 && c < 127 && '!#$%&\'*+-.^_`|~'.indexOf(String.fromCharCode(c)) >= 0);
}

/** `[a][b]…` → ['a', 'b'], or an error message. */
function parseBrackets(s: string): string[] | string {
  const out: string[] = [];
  let pos = 0;
  if (s.length === 0) return 'needs a name in brackets';
  while (pos < s.length) {
    if (s.charCodeAt(pos) !== 91) return `expected "[" at ${JSON.stringify(s.slice(pos))}`;
    const close = s.indexOf(']', pos + 1);
    if (close < 0) return 'has an unclosed "["';
    const name = s.slice(pos + 1, close);
    if (name.length === 0) return 'has an empty name "[]"';
    if (name.indexOf('[') >= 0) return 'has a "[" inside a name';
    out.push(name);
    pos = close + 1;
  }
  return out;
}

function compileCondition(w: AuthzCondition, field: string, cx: Compiling, into: Check[]): void {
  if (w === null || typeof w !== 'object') {
    fail(cx, field, 'is not an object');
    return;
  }
  const key: unknown = w.key;
  if (typeof key !== 'string' || key.length === 0) {
    fail(cx, `${field}.key`, 'is required');
    return;
  }
  const vals = values(w.values, `${field}.values`, cx);
  const notVals = values(w.notValues, `${field}.notValues`, cx);
  if (vals === null && notVals === null) {
    fail(cx, field, `${key}: values or notValues must be set`);
    return;
  }
  const keyField = `${field}.key`;
  let kind = 0;
  let fk: FieldKind = 'string';
  let name = '';
  let claim: string[] | null = null;
  const simple = Object.hasOwn(WHEN_SIMPLE, key) ? WHEN_SIMPLE[key] : undefined;
  if (simple !== undefined) {
    [kind, fk] = simple;
  } else if (key.startsWith('request.headers')) {
    const parsed = parseBrackets(key.slice('request.headers'.length));
    if (typeof parsed === 'string') return fail(cx, keyField, `${JSON.stringify(key)} ${parsed}; write request.headers[<header name>]`);
    if (parsed.length !== 1) return fail(cx, keyField, `${JSON.stringify(key)}: a header key takes one name: request.headers[<header name>]`);
    name = parsed[0].toLowerCase();
    for (let i = 0; i < name.length; i++) {
      if (!isTokenChar(name.charCodeAt(i))) return fail(cx, keyField, `${JSON.stringify(key)}: ${JSON.stringify(parsed[0])} is not a valid header name`);
    }
    kind = A_HEADER;
  } else if (key.startsWith('request.auth.claims')) {
    const parsed = parseBrackets(key.slice('request.auth.claims'.length));
    if (typeof parsed === 'string') return fail(cx, keyField, `${JSON.stringify(key)} ${parsed}; write request.auth.claims[<claim>] or request.auth.claims[<claim>][<nested>]`);
    claim = parsed;
    kind = A_CLAIM;
  } else if (Object.hasOwn(WHEN_UNSUPPORTED, key)) {
    return fail(cx, keyField, `${key} ${WHEN_UNSUPPORTED[key]}`);
  } else if (key.startsWith('destination.labels') || key.startsWith('experimental.') || key.startsWith('request.experimental.')) {
    return fail(cx, keyField, `${key} is not supported by meshgate`);
  } else {
    return fail(cx, keyField, `unknown attribute ${JSON.stringify(key)}; known: ${KNOWN_KEYS}`);
  }
  const split = claim !== null && cx.o.spaceDelimited.has(claim.join('.'));
  for (const [list, negate, sub] of [[vals, false, 'values'], [notVals, true, 'notValues']] as const) {
    if (list === null) continue;
    const c = compileField(kind, negate, fk, list, `${field}.${sub}`, cx);
    c.name = name;
    c.claim = claim;
    c.split = split;
    into.push(c);
  }
}
