// JWT request authentication (RequestAuthentication), run first in the request pipeline.
//
// Build one JwtAuthenticator per proxy config version from its JwtRule[], `await start()`
// (fetches every JWKS once, never throws), then per request:
//
//   const r = authn.authenticate(facts);               // AuthnResult | Promise<AuthnResult>
//   const res = r instanceof Promise ? await r : r;    // a Promise when a signature is checked
//   if (res.outcome === 'fail') send unauthorizedResponse(res)
//   else apply res.edits (always: they also strip client-forged output headers)
//
// Why two speeds: a repeated valid token is a cache lookup and stays synchronous, since a
// Promise per request costs more than the lookup. A token seen for the first time is
// verified by jose (`jwtVerify` over a local JWK set made from the current JWKS), which is
// the one implementation of the JOSE rules here: signature, algorithm allow-list, key type
// against alg, `crit`, and exp/nbf/iat with the clock skew. jose v6 verifies through
// WebCrypto, which is async only, so that request gets a Promise. What must be refused
// before any crypto stays synchronous: token size and shape, `alg: none` and HMAC, an
// issuer no rule names, several tokens, a kid the key set lacks (which may start one
// rate-limited JWKS refetch, the other async case).
//
// Istio semantics: no token anywhere passes authentication ('none'; an AuthorizationPolicy
// may then demand a principal); a token that fails is 401 whatever the other rules say; a
// token is checked only by the rules naming its `iss` (ISTIO-SECURITY-2021-001) and
// accepting the place it was found.
import { LRUCache } from 'lru-cache';
import { createLocalJWKSet, jwtVerify, type CryptoKey, type JWK, type JWTPayload, type JWTVerifyOptions } from 'jose';
import type { JwtRule, RequestFacts } from '../api/policy.ts';
import type { Logger } from '../api/logger.ts';
import { ACCEPTED_ALGS, JwksPool, JwksSource, type JwksStatus, type KeySet } from './jwks.ts';

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
  /** jwtVerify's options for this rule, without the per-request clock. */
  joseOptions: JWTVerifyOptions;
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

// ---------------------------------------------------------------- verification through jose

type JoseKeys = ReturnType<typeof createLocalJWKSet>;

/** A token whose signature and claims jose accepted, before our own shape checks. */
interface Verified { outcome: 'verified'; payload: JWTPayload }

/** The only algorithms jose may accept; the same list the pre-check uses. */
const JOSE_ALGORITHMS: string[] = [...ACCEPTED_ALGS];

/**
 * jose checks a future `iat` only when maxTokenAge is set, and then demands `iat`. Istio
 * does not demand it, so tokens carrying one get this age limit, which never binds: what
 * it buys is jose's "iat in the future" check with the same skew as nbf.
 */
const ANY_TOKEN_AGE = Number.MAX_SAFE_INTEGER;

/**
 * jose's view of a key set, built once per set: a changed JWKS is a new KeySet object, and
 * the local set keeps its imported CryptoKeys for as long as the KeySet lives. Shared by
 * every authenticator (config versions reuse pooled sources).
 */
const joseKeySets = new WeakMap<KeySet, JoseKeys>();

function joseKeysOf(set: KeySet): JoseKeys {
  let keys = joseKeySets.get(set);
  if (keys === undefined) {
    // Built from the keys jwks.ts accepted, not from the JWKS text: public members only, and
    // only keys that passed its checks (use/key_ops, curves, RSA of at least 2048 bits).
    keys = createLocalJWKSet({
      keys: set.keys.map((k) => {
        const jwk = k.key.export({ format: 'jwk' }) as JWK;
        if (k.kid !== null) jwk.kid = k.kid;
        // One alg: the JWK named it (or its curve fixes it), and jose must hold it to that.
        if (k.algs.size === 1) jwk.alg = k.algs.values().next().value as string;
        return jwk;
      }),
    });
    joseKeySets.set(set, keys);
  }
  return keys;
}

/** What we read of jose's errors: matched by code, which holds across copies of the module. */
interface JoseFailure { code?: unknown; claim?: unknown; reason?: unknown; payload?: Record<string, unknown> }

function reasonForJoseError(err: unknown, hasKid: boolean): AuthnReason | null {
  const e = (err ?? {}) as JoseFailure;
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      // 'invalid': a time claim that is not a number.
      if (e.reason === 'invalid') return 'malformed';
      if (e.claim === 'nbf' || e.claim === 'iat') return 'not yet valid';
      if (e.claim === 'iss') return 'issuer not configured';
      if (e.claim === 'aud') return e.payload?.aud === undefined || audiencesOf(e.payload.aud) !== null ? 'audience not allowed' : 'malformed';
      return 'malformed';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'bad signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
      // The kid is in the set (checked before), so no key of that kid fits the alg; without
      // a kid, no key in the set fits it, as if the signing key were missing.
      return hasKid ? 'bad signature' : 'unknown kid';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
      // Broken encoding, an unknown `crit` extension, an unencoded (b64: false) payload.
      return 'malformed';
    default:
      return null;
  }
}

/**
 * One rule's verification of a token by jose. Several keys may fit a kid-less token (or a
 * kid published twice during a rotation): jose then hands them over and each is tried, the
 * first that verifies wins. Never rejects.
 */
async function verifyWithJose(
  stats: JwtAuthenticator['stats'], logger: Logger | null, rule: CompiledRule, keys: JoseKeys, token: string, options: JWTVerifyOptions, hasKid: boolean,
): Promise<Verified | AuthnFail> {
  try {
    stats.verifications++;
    return { outcome: 'verified', payload: (await jwtVerify(token, keys, options)).payload };
  } catch (err) {
    if ((err as JoseFailure).code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') return joseFail(logger, err, hasKid, rule);
    try {
      for await (const key of err as AsyncIterable<CryptoKey>) {
        stats.verifications++;
        try {
          return { outcome: 'verified', payload: (await jwtVerify(token, key, options)).payload };
        } catch (e) {
          // Another key's signature may still match; any other failure is the token's own.
          if ((e as JoseFailure).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return joseFail(logger, e, hasKid, rule);
        }
      }
    } catch (e) {
      return joseFail(logger, e, hasKid, rule);
    }
    return fail('bad signature', rule.source);
  }
}

function joseFail(logger: Logger | null, err: unknown, hasKid: boolean, rule: CompiledRule): AuthnFail {
  const reason = reasonForJoseError(err, hasKid);
  if (reason !== null) return fail(reason, rule.source);
  // Not one of jose's token errors (a key WebCrypto would not import, a bug): fail closed,
  // and say so, since the 401 alone would read like a forged token.
  logger?.warn({ rule: rule.source, err: (err as Error)?.message ?? String(err) }, 'JWT verification failed unexpectedly');
  return fail('bad signature', rule.source);
}

/** `aud` as a list, or null when it is neither a string nor a list of strings. */
function audiencesOf(aud: unknown): string[] | null {
  if (aud === undefined) return [];
  if (typeof aud === 'string') return [aud];
  if (Array.isArray(aud) && aud.every((a) => typeof a === 'string')) return aud as string[];
  return null;
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
  /**
   * Bumped whenever a key set changes (and on stop): a jose verification still running
   * across a change was made with keys that may be revoked, so its verdict is not cached.
   */
  private generation = 0;
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
        this.unsubscribe.push(keys.onChange(() => { this.generation++; this.cache.clear(); }));
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
        joseOptions: {
          algorithms: JOSE_ALGORITHMS,
          issuer: r.issuer,
          ...(r.audiences.length ? { audience: [...r.audiences] } : {}),
          clockTolerance: opts.clockSkewSec ?? 60,
          // No extension beyond what jose itself implements (b64) is understood here.
          crit: {},
        },
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
    this.generation++;
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
   * Synchronous for no token, a cached token, and whatever is refused before any crypto;
   * a Promise when jose verifies a token not yet cached, or when an unknown kid waits for
   * one JWKS refetch. Never throws, and the Promise never rejects.
   */
  authenticate(facts: RequestFacts): AuthnResult | Promise<AuthnResult> {
    if (!this.active) return this.noneResult;
    try {
      const r = this.authenticateUnguarded(facts);
      return r instanceof Promise ? r.catch((err: unknown) => this.unexpected(err)) : r;
    } catch (err) {
      return this.unexpected(err);
    }
  }

  private unexpected(err: unknown): AuthnFail {
    // A bug here must cost one request a 401, not the process (CVE-2019-12995 class).
    this.logger?.error({ err: (err as Error)?.message ?? String(err) }, 'JWT authentication failed unexpectedly');
    return fail('malformed', null);
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
    // Shape and routing only: enough to pick the rules and refuse what needs no crypto.
    // Everything a signature or a claim decides is jose's (verifyWithJose).
    if (token.length > this.maxTokenBytes) return fail('malformed', null);
    const d1 = token.indexOf('.');
    const d2 = d1 < 0 ? -1 : token.indexOf('.', d1 + 1);
    if (d2 < 0 || token.indexOf('.', d2 + 1) >= 0) return fail('malformed', null);
    const header = decodeJsonSegment(token.slice(0, d1));
    const claims = decodeJsonSegment(token.slice(d1 + 1, d2));
    if (!header || !claims || !B64URL.test(token.slice(d2 + 1))) return fail('malformed', null);
    const alg = header.alg;
    if (typeof alg !== 'string') return fail('malformed', null);
    const kid = header.kid;
    if (kid !== undefined && typeof kid !== 'string') return fail('malformed', null);
    const iss = claims.iss;
    if (typeof iss !== 'string') return fail('malformed', null);

    const candidates = this.rulesByIssuer.get(iss);
    if (!candidates) return fail('issuer not configured', null);
    const rules: CompiledRule[] = [];
    const outcomes: (AuthnFail | Promise<Verified | AuthnFail>)[] = [];
    let waiting = false;
    let options: JWTVerifyOptions | null = null;
    for (const rule of candidates) {
      if ((rule.locMask & locMask) === 0) continue;
      let outcome: AuthnFail | Promise<Verified | AuthnFail>;
      // alg none, HS* (incl. HMAC keyed with the public key) and anything else unknown.
      if (!ACCEPTED_ALGS.has(alg)) outcome = fail('bad signature', rule.source);
      else if (rule.keys.keys === null) {
        outcome = fail('no keys available', rule.source);
        void rule.keys.refetchForUnknownKid();
      } else if (kid !== undefined && !rule.keys.keys.byKid.has(kid)) outcome = fail('unknown kid', rule.source);
      else {
        options ??= this.joseClock(claims.iat !== undefined);
        outcome = verifyWithJose(this.stats, this.logger, rule, joseKeysOf(rule.keys.keys), token, { ...rule.joseOptions, ...options }, kid !== undefined);
        waiting = true;
      }
      rules.push(rule);
      outcomes.push(outcome);
    }
    if (rules.length === 0) return fail('issuer not configured', null); // issuer known, but not read from where this token was
    const generation = this.generation;
    if (!waiting) return this.settle(token, locMask, mayRefetch, rules, outcomes as AuthnFail[], generation);
    return Promise.all(outcomes).then((done) => this.settle(token, locMask, mayRefetch, rules, done, generation));
  }

  /** jwtVerify's per-request options: our clock (tests move it), and see ANY_TOKEN_AGE. */
  private joseClock(hasIat: boolean): JWTVerifyOptions {
    const currentDate = new Date(this.now());
    return hasIat ? { currentDate, maxTokenAge: ANY_TOKEN_AGE } : { currentDate };
  }

  /**
   * The verdict over every candidate rule, in rule order: the first that accepts wins,
   * otherwise the first failure. A kid the keys lack gets one (rate-limited) refetch and a
   * second look, without a further refetch.
   */
  private settle(
    token: string, locMask: number, mayRefetch: boolean, rules: CompiledRule[],
    outcomes: readonly (Verified | AuthnFail)[], generation: number,
  ): AuthnResult | Promise<AuthnResult> {
    let firstFail: AuthnFail | null = null;
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i];
      const r = o.outcome === 'verified' ? this.accept(rules[i], token, o.payload, locMask, generation) : o;
      if (r.outcome === 'ok') return r;
      firstFail ??= r;
    }
    const failed = firstFail as AuthnFail;
    if (failed.reason !== 'unknown kid' || !mayRefetch) return failed;
    let pending: Promise<boolean> | null = null;
    for (let i = 0; i < outcomes.length && !pending; i++) {
      const o = outcomes[i];
      if (o.outcome === 'fail' && o.reason === 'unknown kid') pending = rules[i].keys.refetchForUnknownKid();
    }
    if (!pending) return failed;
    this.stats.refetches++;
    return pending.then(() => this.verify(token, locMask, false)).catch(() => failed);
  }

  /** A token jose verified for this rule: our result, cached for its next requests. */
  private accept(rule: CompiledRule, token: string, payload: JWTPayload, locMask: number, generation: number): AuthnOk | AuthnFail {
    // Shapes the result needs and jose does not check when no option names the claim.
    const { exp, sub, azp } = payload;
    const audiences = audiencesOf(payload.aud);
    if (audiences === null || (sub !== undefined && typeof sub !== 'string')
      || (azp !== undefined && typeof azp !== 'string')) return fail('malformed', rule.source);

    const d2 = token.lastIndexOf('.');
    const setHeaders: (readonly [string, string])[] = [];
    if (rule.payloadHeader) setHeaders.push([rule.payloadHeader, token.slice(token.indexOf('.') + 1, d2)]);
    for (const c of rule.claimHeaders) {
      const v = claimHeaderValue(payload, c.claim);
      if (v !== null) setHeaders.push([c.header, v]);
    }
    const subject = sub ?? '';
    const issuer = payload.iss as string;
    const entry: CacheEntry = {
      token,
      ok: {
        outcome: 'ok',
        principal: `${issuer}/${subject}`,
        issuer,
        subject,
        claims: deepFreeze(payload as Record<string, unknown>),
        audiences: Object.freeze(audiences),
        presenter: (azp as string | undefined) ?? '',
        rule: rule.source,
      },
      setHeaders: Object.freeze(setHeaders),
      forward: rule.forward,
      ruleLocMask: rule.locMask,
      // jose checked exp as a number (or absent).
      notAfterMs: exp !== undefined ? exp * 1000 + this.skewMs : Infinity,
      lastLocMask: -1,
      lastResult: null,
      size: token.length * 2 + 512,
    };
    if (generation === this.generation) {
      const ttl = Math.max(1, Math.min(entry.notAfterMs - this.now(), this.maxTtlMs));
      this.cache.set(cacheKey(token), entry, { ttl });
    }
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
