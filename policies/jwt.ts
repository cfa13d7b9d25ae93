// JWT request authentication (RequestAuthentication), run first in the request pipeline.
//
// Build one JwtAuthenticator per proxy config version from its JwtRule[], `await start()`
// (fetches every JWKS once, never throws), then per request:
//
//   const r = authn.authenticate(facts);               // AuthnResult | Promise<AuthnResult>
//   const res = r instanceof Promise ? await r : r;    // a Promise only on an unknown kid
//   if (res.outcome === 'fail') send unauthorizedResponse(res)
//   else apply res.edits (always: they also strip client-forged output headers)
//
// Why synchronous: a repeated valid token is a cache lookup, and a first sight of a token
// with keys at hand is one native signature check; neither needs the event loop, and a
// Promise per request costs more than the lookup. jose v6 verifies through WebCrypto,
// which is async only, so signatures are checked with node:crypto.verify (the same OpenSSL
// call underneath) over keys node imported from the JWKS; the rules jose applies
// (asymmetric algorithms only, key type must fit the algorithm, `crit` refused, claims
// checked after the signature) are applied here. The only async case is a kid missing from
// the key set, which triggers one rate-limited JWKS refetch.
//
// Istio semantics: no token anywhere passes authentication ('none'; an AuthorizationPolicy
// may then demand a principal); a token that fails is 401 whatever the other rules say; a
// token is checked only by the rules naming its `iss` (ISTIO-SECURITY-2021-001) and
// accepting the place it was found.
import { constants, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { JwtRule, RequestFacts } from '../api/policy.ts';
import type { Logger } from '../api/logger.ts';
import { ACCEPTED_ALGS, JwksPool, JwksSource, type JwksStatus, type VerificationKey } from './jwks.ts';

export type AuthnReason =
  | 'expired'
  | 'not yet valid'
  | 'bad signature'
  | 'issuer not configured'
  | 'audience not allowed'
  | 'malformed'
  | 'no keys available'
  | 'unknown kid'
  | 'multiple tokens';

/** What the data plane changes on the request before it goes upstream. */
export interface AuthnEdits {
  /** Headers to delete: the token's header (unless forwarded) and every output header a client could forge. */
  removeHeaders: readonly string[];
  /** Query parameters to delete (see stripQueryParams). */
  removeParams: readonly string[];
  /** Cookies to delete from the Cookie header (see stripCookies). */
  removeCookies: readonly string[];
  /** Headers to set (after the removals): outputPayloadToHeader, outputClaimToHeaders. */
  setHeaders: readonly (readonly [string, string])[];
}

export interface AuthnNone { outcome: 'none'; edits: AuthnEdits }

export interface AuthnOk {
  outcome: 'ok';
  /** `iss/sub`, as AuthorizationPolicy requestPrincipals see it. */
  principal: string;
  issuer: string;
  subject: string;
  /** The verified payload; read-only (shared by every request carrying this token). */
  claims: Readonly<Record<string, unknown>>;
  audiences: readonly string[];
  /** `azp`, or ''. */
  presenter: string;
  /** The rule that accepted the token (`requestauthentication/<ns>/<name>/jwtRules/<i>`). */
  rule: string;
  edits: AuthnEdits;
}

export interface AuthnFail {
  outcome: 'fail';
  status: 401;
  reason: AuthnReason;
  /** A fixed sentence for the client (never echoes token content). */
  description: string;
  /** The rule that rejected it, when one was chosen. */
  rule: string | null;
}

export type AuthnResult = AuthnNone | AuthnOk | AuthnFail;

export interface JwtAuthenticatorOptions {
  /** Default 60 s, Istio's. */
  clockSkewSec?: number;
  /** Verified tokens kept (default 10,000). */
  cacheMax?: number;
  /** Longest a verified token stays cached, even with a later exp (default 10 min). */
  cacheMaxTtlMs?: number;
  /** Tokens longer than this are malformed (default 32 KiB). */
  maxTokenBytes?: number;
  /** Share JWKS sources across config versions (see JwksPool). */
  pool?: JwksPool;
  /** Least time between unknown-kid refetches per JWKS (default 30 s). */
  minRefetchMs?: number;
  logger?: Logger;
  /** Clock in ms; tests move it. */
  now?: () => number;
}

// Fixed texts: what the 401 says. Envoy's wording where it has one, so that existing
// client-side handling of Istio's answers keeps working.
const DESCRIPTIONS: Record<AuthnReason, string> = {
  'expired': 'Jwt is expired',
  'not yet valid': 'Jwt not yet valid',
  'bad signature': 'Jwt verification fails',
  'issuer not configured': 'Jwt issuer is not configured',
  'audience not allowed': 'Audiences in Jwt are not allowed',
  'malformed': 'Jwt is not in the form of Header.Payload.Signature with valid JSON',
  'no keys available': 'No keys are available to verify Jwt from this issuer',
  'unknown kid': 'Jwks does not have a key to match kid or alg from Jwt',
  'multiple tokens': 'Request carries more than one Jwt',
};

/** The 401 for a failed authentication (RFC 6750 challenge, body says why). */
export function unauthorizedResponse(result: AuthnFail, realm = 'meshgate'): { status: 401; headers: Record<string, string>; body: string } {
  const safeRealm = realm.replace(/[^\x20-\x7e]|["\\]/g, '');
  return {
    status: 401,
    headers: {
      'www-authenticate': `Bearer realm="${safeRealm}", error="invalid_token", error_description="${result.description}"`,
      'content-type': 'text/plain; charset=utf-8',
    },
    body: result.description,
  };
}

// ---------------------------------------------------------------- compiled form

interface HeaderPrefix { prefix: string; prefixLower: string; loc: number }
interface HeaderLoc { name: string; prefixes: HeaderPrefix[] }
interface NamedLoc { name: string; loc: number }
type LocKind = 'header' | 'param' | 'cookie';

interface CompiledRule {
  source: string;
  issuer: string;
  keys: JwksSource;
  audiences: ReadonlySet<string> | null;
  /** Bit per location index this rule reads tokens from. */
  locMask: number;
  forward: boolean;
  payloadHeader: string | null;
  claimHeaders: { header: string; claim: string }[];
}

interface CacheEntry {
  /** The whole token: the cache key is only its tail. */
  token: string;
  ok: Omit<AuthnOk, 'edits'>;
  setHeaders: readonly (readonly [string, string])[];
  forward: boolean;
  /** The accepting rule's locations: a cached token found elsewhere is judged afresh. */
  ruleLocMask: number;
  notAfterMs: number;
  /** The result last built for one set of token locations (usually the only one seen). */
  lastLocMask: number;
  lastResult: AuthnOk | null;
  size: number;
}

const MAX_LOCATIONS = 30; // locations are a bit mask in one small integer

const NO_EDITS: AuthnEdits = Object.freeze({ removeHeaders: [], removeParams: [], removeCookies: [], setHeaders: [] });

function fail(reason: AuthnReason, rule: string | null): AuthnFail {
  return { outcome: 'fail', status: 401, reason, description: DESCRIPTIONS[reason], rule };
}

const ALG_PARAMS: Record<string, { hash: string | null; pss?: number; ec?: boolean }> = {
  RS256: { hash: 'sha256' }, RS384: { hash: 'sha384' }, RS512: { hash: 'sha512' },
  PS256: { hash: 'sha256', pss: 32 }, PS384: { hash: 'sha384', pss: 48 }, PS512: { hash: 'sha512', pss: 64 },
  ES256: { hash: 'sha256', ec: true }, ES384: { hash: 'sha384', ec: true }, ES512: { hash: 'sha512', ec: true },
  EdDSA: { hash: null }, Ed25519: { hash: null },
};

function verifySignature(alg: string, key: KeyObject, signingInput: Buffer, signature: Buffer): boolean {
  const p = ALG_PARAMS[alg];
  try {
    if (p.pss) return cryptoVerify(p.hash, signingInput, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: p.pss }, signature);
    if (p.ec) return cryptoVerify(p.hash, signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
    return cryptoVerify(p.hash, signingInput, key, signature);
  } catch {
    // OpenSSL rejects some malformed signatures by throwing rather than returning false.
    return false;
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;

function decodeJsonSegment(seg: string): Record<string, unknown> | null {
  if (seg.length === 0 || !B64URL.test(seg)) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

/** A claim value as a header value, or null when it has no safe single-line form. */
function claimHeaderValue(claims: Record<string, unknown>, name: string): string | null {
  let v: unknown = claims[name];
  if (v === undefined && name.includes('.')) {
    // Nested claims as `a.b.c`, for claims a flat name does not reach.
    v = claims;
    for (const part of name.split('.')) {
      v = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[part] : undefined;
    }
  }
  let s: string;
  if (typeof v === 'string') s = v;
  else if (typeof v === 'number' || typeof v === 'boolean') s = String(v);
  else if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean')) s = v.join(',');
  else return null;
  // Visible ASCII only: a claim must not inject a header line (CVE-2023-27487 class) or
  // carry characters node refuses in a header value.
  return /^[\x20-\x7e]*$/.test(s) ? s : null;
}

// ---------------------------------------------------------------- the authenticator

export class JwtAuthenticator {
  /** False when there are no rules: the pipeline may skip this stage. */
  readonly active: boolean;
  /** Counters for tests, the admin port and benchmarks. */
  readonly stats = { verifications: 0, cacheHits: 0, refetches: 0 };

  private readonly rulesByIssuer = new Map<string, CompiledRule[]>();
  private readonly rules: CompiledRule[] = [];
  private readonly headerLocs: HeaderLoc[] = [];
  private readonly paramLocs: NamedLoc[] = [];
  private readonly cookieLocs: NamedLoc[] = [];
  /** @internal read by extractToken */
  readonly locations = { headers: this.headerLocs, params: this.paramLocs, cookies: this.cookieLocs };
  private readonly locKinds: { kind: LocKind; name: string }[] = [];
  private readonly outputHeaders: string[];
  private readonly noneResult: AuthnNone;
  private readonly sources: JwksSource[] = [];
  private readonly unsubscribe: (() => void)[] = [];
  private readonly cache: LRUCache<string, CacheEntry>;
  private readonly skewMs: number;
  private readonly maxTtlMs: number;
  private readonly maxTokenBytes: number;
  private readonly pool: JwksPool | null;
  private readonly now: () => number;
  private readonly logger: Logger | null;

  constructor(rules: readonly JwtRule[], opts: JwtAuthenticatorOptions = {}) {
    this.active = rules.length > 0;
    this.skewMs = (opts.clockSkewSec ?? 60) * 1000;
    this.maxTtlMs = opts.cacheMaxTtlMs ?? 10 * 60_000;
    this.maxTokenBytes = opts.maxTokenBytes ?? 32 * 1024;
    this.pool = opts.pool ?? null;
    this.now = opts.now ?? Date.now;
    this.logger = opts.logger ?? null;
    this.cache = new LRUCache<string, CacheEntry>({
      max: opts.cacheMax ?? 10_000,
      // Bounded by bytes as well as count: tokens may be up to maxTokenBytes each.
      maxSize: 64 * 1024 * 1024,
      sizeCalculation: (e) => e.size,
    });

    const sourceByKey = new Map<string, JwksSource>();
    const locIndex = new Map<string, number>();
    const location = (kind: LocKind, name: string, prefix: string): number => {
      const key = `${kind}\u0000${name}\u0000${prefix}`;
      let i = locIndex.get(key);
      if (i !== undefined) return i;
      i = this.locKinds.length;
      if (i >= MAX_LOCATIONS) throw new Error(`more than ${MAX_LOCATIONS} distinct JWT locations`);
      locIndex.set(key, i);
      this.locKinds.push({ kind, name });
      if (kind === 'header') {
        let h = this.headerLocs.find((x) => x.name === name);
        if (!h) this.headerLocs.push((h = { name, prefixes: [] }));
        h.prefixes.push({ prefix, prefixLower: prefix.toLowerCase(), loc: i });
        // Longest prefix first, so `Bearer ` wins over '' for the same header.
        h.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
      } else (kind === 'param' ? this.paramLocs : this.cookieLocs).push({ name, loc: i });
      return i;
    };

    const outputs = new Set<string>();
    for (const r of rules) {
      const noneNamed = r.fromHeaders.length === 0 && r.fromParams.length === 0 && r.fromCookies.length === 0;
      const headers = noneNamed ? [{ name: 'authorization', prefix: 'Bearer ' }] : r.fromHeaders;
      const params = noneNamed ? ['access_token'] : r.fromParams;
      let locMask = 0;
      for (const h of headers) locMask |= 1 << location('header', h.name.toLowerCase(), h.prefix);
      for (const p of params) locMask |= 1 << location('param', p, '');
      for (const c of r.fromCookies) locMask |= 1 << location('cookie', c, '');

      const sourceOpts = {
        uri: r.jwksUri, inline: r.jwks, timeoutMs: r.timeoutMs, refreshMs: r.refreshMs,
        caPem: r.jwksCaPem, allowPrivate: r.allowPrivateJwksUri,
        minRefetchMs: opts.minRefetchMs, logger: opts.logger, now: opts.now,
      };
      let keys: JwksSource;
      if (r.jwksUri !== null && this.pool) keys = this.pool.acquire(sourceOpts);
      else {
        const k = JSON.stringify([r.jwksUri, r.jwks, r.jwksCaPem, r.allowPrivateJwksUri, r.timeoutMs, r.refreshMs]);
        keys = sourceByKey.get(k) ?? new JwksSource(sourceOpts);
        sourceByKey.set(k, keys);
      }
      if (!this.sources.includes(keys)) {
        this.sources.push(keys);
        // New keys may mean revoked keys: no cached verdict outlives the set it was made with.
        this.unsubscribe.push(keys.onChange(() => this.cache.clear()));
      }

      const payloadHeader = r.outputPayloadToHeader ? r.outputPayloadToHeader.toLowerCase() : null;
      const claimHeaders = r.outputClaimToHeaders.map((c) => ({ header: c.header.toLowerCase(), claim: c.claim }));
      if (payloadHeader) outputs.add(payloadHeader);
      for (const c of claimHeaders) outputs.add(c.header);
      const compiled: CompiledRule = {
        source: r.source,
        issuer: r.issuer,
        keys,
        audiences: r.audiences.length ? new Set(r.audiences) : null,
        locMask,
        forward: r.forwardOriginalToken,
        payloadHeader,
        claimHeaders,
      };
      this.rules.push(compiled);
      const list = this.rulesByIssuer.get(r.issuer);
      if (list) list.push(compiled);
      else this.rulesByIssuer.set(r.issuer, [compiled]);
    }
    this.outputHeaders = [...outputs];
    this.noneResult = Object.freeze({
      outcome: 'none' as const,
      edits: this.outputHeaders.length ? Object.freeze({ ...NO_EDITS, removeHeaders: Object.freeze([...this.outputHeaders]) }) : NO_EDITS,
    });
  }

  /** Fetches every JWKS once. Never rejects: failures show in status() and as 401s. */
  async start(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.start()));
  }

  /** Stops refresh timers (or releases pooled sources). */
  stop(): void {
    for (const u of this.unsubscribe) u();
    for (const s of this.sources) {
      if (this.pool && s.uri !== null) this.pool.release(s);
      else s.stop();
    }
    this.cache.clear();
  }

  /** Per rule: its issuer and the state of its keys (for the admin port). */
  status(): { rule: string; issuer: string; jwks: JwksStatus }[] {
    return this.rules.map((r) => ({ rule: r.source, issuer: r.issuer, jwks: r.keys.status() }));
  }

  /**
   * Synchronous unless the token's kid is missing from its key set and a refetch is
   * allowed; then a Promise that settles after that one fetch. Never throws.
   */
  authenticate(facts: RequestFacts): AuthnResult | Promise<AuthnResult> {
    if (!this.active) return this.noneResult;
    try {
      return this.authenticateUnguarded(facts);
    } catch (err) {
      // A bug here must cost one request a 401, not the process (CVE-2019-12995 class).
      this.logger?.error({ err: (err as Error).message }, 'JWT authentication failed unexpectedly');
      return fail('malformed', null);
    }
  }

  private authenticateUnguarded(facts: RequestFacts): AuthnResult | Promise<AuthnResult> {
    const found = extractToken(this, facts);
    if (found === null) return this.noneResult;
    if (found === MULTIPLE) return fail('multiple tokens', null);
    const { token, locMask } = found;

    const hit = this.cache.get(cacheKey(token));
    if (hit !== undefined && hit.token === token) {
      if (this.now() <= hit.notAfterMs && (hit.ruleLocMask & locMask) !== 0) {
        this.stats.cacheHits++;
        if (hit.lastLocMask === locMask && hit.lastResult !== null) return hit.lastResult;
        return resultFor(this, hit, locMask);
      }
      if (this.now() > hit.notAfterMs) this.cache.delete(cacheKey(token));
    }
    return this.verify(token, locMask, true);
  }

  /** authenticate() as a Promise always, for callers that do not care about the fast path. */
  authenticateAsync(facts: RequestFacts): Promise<AuthnResult> {
    return Promise.resolve(this.authenticate(facts));
  }

  private verify(token: string, locMask: number, mayRefetch: boolean): AuthnResult | Promise<AuthnResult> {
    if (token.length > this.maxTokenBytes) return fail('malformed', null);
    const d1 = token.indexOf('.');
    const d2 = d1 < 0 ? -1 : token.indexOf('.', d1 + 1);
    if (d2 < 0 || token.indexOf('.', d2 + 1) >= 0) return fail('malformed', null);
    const header = decodeJsonSegment(token.slice(0, d1));
    const claims = decodeJsonSegment(token.slice(d1 + 1, d2));
    const sigSeg = token.slice(d2 + 1);
    if (!header || !claims || !B64URL.test(sigSeg)) return fail('malformed', null);
    const alg = header.alg;
    // Extensions we do not implement must be refused, not ignored (RFC 7515 §4.1.11).
    if (typeof alg !== 'string' || header.crit !== undefined) return fail('malformed', null);
    if (header.kid !== undefined && typeof header.kid !== 'string') return fail('malformed', null);
    const iss = claims.iss;
    if (typeof iss !== 'string') return fail('malformed', null);

    const candidates = this.rulesByIssuer.get(iss);
    if (!candidates) return fail('issuer not configured', null);
    let firstFail: AuthnFail | null = null;
    let pending: Promise<boolean> | null = null;
    for (const rule of candidates) {
      if ((rule.locMask & locMask) === 0) continue;
      const r = this.verifyWithRule(rule, token, d2, header, claims, sigSeg, alg, locMask);
      if (r.outcome === 'ok') return r;
      if (r.reason === 'unknown kid' && mayRefetch && !pending) pending = rule.keys.refetchForUnknownKid();
      if (r.reason === 'no keys available') void rule.keys.refetchForUnknownKid();
      firstFail ??= r;
    }
    if (!firstFail) return fail('issuer not configured', null); // issuer known, but not read from where this token was
    if (firstFail.reason === 'unknown kid' && pending) {
      this.stats.refetches++;
      return pending.then(() => this.verify(token, locMask, false) as AuthnResult).catch(() => firstFail as AuthnFail);
    }
    return firstFail;
  }

  private verifyWithRule(
    rule: CompiledRule, token: string, d2: number, header: Record<string, unknown>,
    claims: Record<string, unknown>, sigSeg: string, alg: string, locMask: number,
  ): AuthnOk | AuthnFail {
    // alg none, HS* (incl. HMAC keyed with the public key) and anything else unknown.
    if (!ACCEPTED_ALGS.has(alg)) return fail('bad signature', rule.source);
    const set = rule.keys.keys;
    if (set === null) return fail('no keys available', rule.source);
    const kid = header.kid as string | undefined;
    let keys: VerificationKey[];
    if (kid !== undefined) {
      const byKid = set.byKid.get(kid);
      if (!byKid) return fail('unknown kid', rule.source);
      keys = byKid;
    } else keys = set.keys;

    const signingInput = Buffer.from(token.slice(0, d2), 'latin1');
    const signature = Buffer.from(sigSeg, 'base64url');
    let verified = false;
    let fitting = 0;
    for (const k of keys) {
      if (!k.algs.has(alg)) continue;
      fitting++;
      this.stats.verifications++;
      if (verifySignature(alg, k.key, signingInput, signature)) { verified = true; break; }
    }
    if (fitting === 0) return fail(kid !== undefined ? 'bad signature' : 'unknown kid', rule.source);
    if (!verified) return fail('bad signature', rule.source);

    // Claims only after the signature: unsigned content decides nothing.
    const { exp, nbf, iat, aud, sub, azp } = claims;
    if ((exp !== undefined && typeof exp !== 'number') || (nbf !== undefined && typeof nbf !== 'number')
      || (iat !== undefined && typeof iat !== 'number') || (sub !== undefined && typeof sub !== 'string')
      || (azp !== undefined && typeof azp !== 'string')) return fail('malformed', rule.source);
    let audiences: string[];
    if (aud === undefined) audiences = [];
    else if (typeof aud === 'string') audiences = [aud];
    else if (Array.isArray(aud) && aud.every((a) => typeof a === 'string')) audiences = aud as string[];
    else return fail('malformed', rule.source);

    const now = this.now();
    if (exp !== undefined && now > exp * 1000 + this.skewMs) return fail('expired', rule.source);
    if (nbf !== undefined && now < nbf * 1000 - this.skewMs) return fail('not yet valid', rule.source);
    if (iat !== undefined && now < iat * 1000 - this.skewMs) return fail('not yet valid', rule.source);
    if (rule.audiences && !audiences.some((a) => (rule.audiences as ReadonlySet<string>).has(a))) {
      return fail('audience not allowed', rule.source);
    }

    const setHeaders: (readonly [string, string])[] = [];
    if (rule.payloadHeader) setHeaders.push([rule.payloadHeader, token.slice(token.indexOf('.') + 1, d2)]);
    for (const c of rule.claimHeaders) {
      const v = claimHeaderValue(claims, c.claim);
      if (v !== null) setHeaders.push([c.header, v]);
    }
    const subject = (sub as string | undefined) ?? '';
    const issuer = claims.iss as string;
    const entry: CacheEntry = {
      token,
      ok: {
        outcome: 'ok',
        principal: `${issuer}/${subject}`,
        issuer,
        subject,
        claims: deepFreeze(claims),
        audiences: Object.freeze(audiences),
        presenter: (azp as string | undefined) ?? '',
        rule: rule.source,
      },
      setHeaders: Object.freeze(setHeaders),
      forward: rule.forward,
      ruleLocMask: rule.locMask,
      notAfterMs: exp !== undefined ? exp * 1000 + this.skewMs : Infinity,
      lastLocMask: -1,
      lastResult: null,
      size: token.length * 2 + 512,
    };
    const ttl = Math.max(1, Math.min(entry.notAfterMs - now, this.maxTtlMs));
    this.cache.set(cacheKey(token), entry, { ttl });
    return resultFor(this, entry, locMask);
  }

  /** @internal for resultFor */
  editsFor(entry: CacheEntry, locMask: number): AuthnEdits {
    const removeHeaders: string[] = [...this.outputHeaders];
    const removeParams: string[] = [];
    const removeCookies: string[] = [];
    if (!entry.forward) {
      for (let i = 0; i < this.locKinds.length; i++) {
        if ((locMask & (1 << i)) === 0) continue;
        const { kind, name } = this.locKinds[i];
        const list = kind === 'header' ? removeHeaders : kind === 'param' ? removeParams : removeCookies;
        if (!list.includes(name)) list.push(name);
      }
    }
    return Object.freeze({
      removeHeaders: Object.freeze(removeHeaders),
      removeParams: Object.freeze(removeParams),
      removeCookies: Object.freeze(removeCookies),
      setHeaders: entry.setHeaders,
    });
  }

}

/**
 * The cache key: the token's last 32 characters (signature bytes). Hashing a whole token,
 * a fresh string on every request, costs ~1 µs; its tail, ~50 ns. A hit is confirmed by
 * comparing the whole token, so two tokens sharing a tail can only miss, never pass.
 */
function cacheKey(token: string): string {
  return token.length > 32 ? token.slice(token.length - 32) : token;
}

function resultFor(authn: JwtAuthenticator, entry: CacheEntry, locMask: number): AuthnOk {
  const result: AuthnOk = Object.freeze({ ...entry.ok, edits: authn.editsFor(entry, locMask) });
  entry.lastLocMask = locMask;
  entry.lastResult = result;
  return result;
}

// ---------------------------------------------------------------- token extraction

const MULTIPLE = Symbol('multiple tokens');

/**
 * The one token the request carries, with a bit per location it was found in; null when
 * none; MULTIPLE when two different tokens are present (which one would a policy trust?).
 */
function extractToken(authn: JwtAuthenticator, facts: RequestFacts): { token: string; locMask: number } | null | typeof MULTIPLE {
  const { headers, params, cookies } = authn.locations;
  let token: string | null = null;
  let locMask = 0;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i];
    const values = facts.headers[h.name];
    if (values === undefined) continue;
    for (let j = 0; j < values.length; j++) {
      const value = values[j];
      for (let k = 0; k < h.prefixes.length; k++) {
        const p = h.prefixes[k];
        // The auth scheme is case-insensitive (RFC 7235), so `bearer x` is a token too.
        if (!value.startsWith(p.prefix) && value.slice(0, p.prefix.length).toLowerCase() !== p.prefixLower) continue;
        const t = value.slice(p.prefix.length).trim();
        if (t.length === 0) break;
        if (token !== null && token !== t) return MULTIPLE;
        token = t;
        locMask |= 1 << p.loc;
        break;
      }
    }
  }
  if (params.length > 0 && facts.query.length > 0) {
    for (const part of facts.query.split('&')) {
      const eq = part.indexOf('=');
      const name = eq < 0 ? part : part.slice(0, eq);
      for (let i = 0; i < params.length; i++) {
        if (params[i].name !== name) continue;
        const raw = eq < 0 ? '' : part.slice(eq + 1);
        // An undecodable value is kept raw: it then fails as malformed instead of vanishing.
        const t = decodeComponent(raw) ?? raw;
        if (t.length === 0) continue;
        if (token !== null && token !== t) return MULTIPLE;
        token = t;
        locMask |= 1 << params[i].loc;
      }
    }
  }
  if (cookies.length > 0) {
    const values = facts.headers.cookie;
    if (values !== undefined) {
      for (const v of values) {
        for (const pair of v.split(';')) {
          const eq = pair.indexOf('=');
          if (eq < 0) continue;
          const name = pair.slice(0, eq).trim();
          for (let i = 0; i < cookies.length; i++) {
            if (cookies[i].name !== name) continue;
            let t = pair.slice(eq + 1).trim();
            if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) t = t.slice(1, -1);
            if (t.length === 0) continue;
            if (token !== null && token !== t) return MULTIPLE;
            token = t;
            locMask |= 1 << cookies[i].loc;
          }
        }
      }
    }
  }
  return token === null ? null : { token, locMask };
}

function decodeComponent(s: string): string | null {
  if (!s.includes('%') && !s.includes('+')) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- edits helpers

/** The query string without the named parameters (raw, without `?`). */
export function stripQueryParams(query: string, names: readonly string[]): string {
  if (names.length === 0 || query.length === 0) return query;
  return query.split('&').filter((part) => {
    const eq = part.indexOf('=');
    return !names.includes(eq < 0 ? part : part.slice(0, eq));
  }).join('&');
}

/** A Cookie header value without the named cookies; '' when nothing is left. */
export function stripCookies(cookieHeader: string, names: readonly string[]): string {
  if (names.length === 0) return cookieHeader;
  return cookieHeader.split(';').filter((pair) => {
    const eq = pair.indexOf('=');
    return !names.includes((eq < 0 ? pair : pair.slice(0, eq)).trim());
  }).map((p) => p.trim()).filter((p) => p.length > 0).join('; ');
}
