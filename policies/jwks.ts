// JWKS: parse a key set into verification keys, fetch it over HTTPS with the SSRF guard,
// keep the last good set, refresh on a timer, and refetch once (rate-limited) when a token
// names a kid the set lacks. Nothing here throws into the request path: failures become
// `status()` entries and the authenticator answers 401 'no keys available'. There is no
// built-in fallback key of any kind (CVE-2026-31837).
import { createPublicKey, type KeyObject } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { isIP, type LookupFunction, type Socket } from 'node:net';
import type { Logger } from '../api/logger.ts';
import { forbiddenHostReason, privateAddressReason, publicOnlyLookup, SsrfError } from './ssrf.ts';

/** The only algorithms we verify: asymmetric ones (no `none`, no HMAC, CVE-2019-12995). */
export const ACCEPTED_ALGS: ReadonlySet<string> = new Set([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
]);

const RSA_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const EC_ALG_BY_CURVE: Record<string, string> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' };
const MIN_RSA_BITS = 2048;
const MAX_KEYS = 100;

export interface VerificationKey {
  kid: string | null;
  /** Algorithms this key may verify (from its type/curve, narrowed by the JWK's own `alg`). */
  algs: ReadonlySet<string>;
  key: KeyObject;
}

export interface KeySet {
  keys: VerificationKey[];
  byKid: Map<string, VerificationKey[]>;
  /** The JWKS text it came from, to tell a real change from a refetch of the same set. */
  text: string;
}

export class JwksError extends Error {
  override name = 'JwksError';
}

function importKey(jwk: Record<string, unknown>): VerificationKey | string {
  if (jwk.use !== undefined && jwk.use !== 'sig') return `use "${String(jwk.use)}" is not "sig"`;
  if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) return 'key_ops lacks "verify"';
  const kid = typeof jwk.kid === 'string' ? jwk.kid : null;
  let algs: string[];
  switch (jwk.kty) {
    case 'RSA': algs = RSA_ALGS; break;
    case 'EC': {
      const alg = EC_ALG_BY_CURVE[String(jwk.crv)];
      if (!alg) return `curve ${String(jwk.crv)} is not supported`;
      algs = [alg];
      break;
    }
    case 'OKP':
      if (jwk.crv !== 'Ed25519' && jwk.crv !== 'Ed448') return `curve ${String(jwk.crv)} is not supported`;
      algs = jwk.crv === 'Ed25519' ? ['EdDSA', 'Ed25519'] : ['EdDSA'];
      break;
    default:
      // 'oct' (shared secrets) included: a symmetric key in a public JWKS is never used.
      return `key type ${String(jwk.kty)} is not accepted`;
  }
  if (typeof jwk.alg === 'string') {
    if (!algs.includes(jwk.alg)) return `alg ${jwk.alg} does not fit key type ${String(jwk.kty)}`;
    algs = [jwk.alg];
  }
  // Only the public members: a JWKS that leaks a private key must not make us hold one.
  const pub: Record<string, unknown> = { kty: jwk.kty };
  for (const m of jwk.kty === 'RSA' ? ['n', 'e'] : ['crv', 'x', 'y']) if (jwk[m] !== undefined) pub[m] = jwk[m];
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pub as never, format: 'jwk' });
  } catch (err) {
    return `not a valid ${String(jwk.kty)} key (${(err as Error).message})`;
  }
  if (jwk.kty === 'RSA' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) {
    return `RSA key shorter than ${MIN_RSA_BITS} bits`;
  }
  return { kid, algs: new Set(algs), key };
}

/**
 * Parses JWKS JSON into verification keys. Keys that cannot verify anything are skipped
 * (reasons in `skipped`); a set with no usable key at all is an error, so that a broken
 * response never replaces good keys.
 */
export function parseJwks(text: string): { keySet: KeySet; skipped: string[] } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new JwksError('JWKS is not valid JSON');
  }
  if (!doc || typeof doc !== 'object' || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new JwksError('JWKS has no "keys" array');
  }
  const raw = (doc as { keys: unknown[] }).keys;
  if (raw.length > MAX_KEYS) throw new JwksError(`JWKS has ${raw.length} keys (at most ${MAX_KEYS})`);
  const keys: VerificationKey[] = [];
  const skipped: string[] = [];
  raw.forEach((jwk, i) => {
    if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk)) { skipped.push(`keys[${i}]: not an object`); return; }
    const k = importKey(jwk as Record<string, unknown>);
    if (typeof k === 'string') skipped.push(`keys[${i}]: ${k}`);
    else keys.push(k);
  });
  if (keys.length === 0) {
    throw new JwksError(`JWKS has no usable signing key${skipped.length ? ` (${skipped.join('; ')})` : ''}`);
  }
  const byKid = new Map<string, VerificationKey[]>();
  for (const k of keys) {
    if (k.kid === null) continue;
    const list = byKid.get(k.kid);
    if (list) list.push(k);
    else byKid.set(k.kid, [k]);
  }
  return { keySet: { keys, byKid, text }, skipped };
}

// ---------------------------------------------------------------- fetching

export interface FetchOptions {
  timeoutMs: number;
  caPem: string | null;
  allowPrivate: boolean;
  maxBytes: number;
  /** Replaces the guarded DNS lookup (tests simulate rebinding with it); the connect-time check stays. */
  lookup?: LookupFunction;
}

/**
 * GET the JWKS. HTTPS verifies the server against `caPem` or the system CAs; plain http
 * is allowed only with the private-address opt-in (a local development issuer), since keys
 * fetched in clear text can be swapped by anyone on the path. Redirects are not followed.
 */
export function fetchJwksText(uri: string, o: FetchOptions): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      reject(new JwksError(`jwksUri ${JSON.stringify(uri)} is not a URL`));
      return;
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && o.allowPrivate)) {
      reject(new JwksError(`jwksUri must use https (got ${url.protocol})`));
      return;
    }
    if (!o.allowPrivate) {
      const why = forbiddenHostReason(url.hostname);
      if (why) {
        reject(new SsrfError(`jwksUri host ${url.hostname} is ${why}; private JWKS addresses need the explicit opt-in (allowPrivateJwksUri)`));
        return;
      }
    }
    let done = false;
    const finish = (err: Error | null, text?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) { req.destroy(); reject(err); } else resolve(text as string);
    };
    const onResponse = (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        res.resume();
        const redirect = res.statusCode && res.statusCode >= 300 && res.statusCode < 400 ? ' (redirects are not followed)' : '';
        finish(new JwksError(`JWKS server answered HTTP ${res.statusCode}${redirect}`));
        return;
      }
      const declared = Number(res.headers['content-length']);
      if (declared > o.maxBytes) { finish(new JwksError(`JWKS response of ${declared} bytes exceeds ${o.maxBytes}`)); return; }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > o.maxBytes) finish(new JwksError(`JWKS response exceeds ${o.maxBytes} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => finish(null, Buffer.concat(chunks).toString('utf8')));
      res.on('error', (e) => finish(e));
    };
    const opts = {
      method: 'GET',
      agent: false as const,
      headers: { accept: 'application/jwk-set+json, application/json', 'user-agent': 'meshgate-jwks' },
      ...(o.caPem ? { ca: o.caPem } : {}),
      ...(o.allowPrivate ? {} : { lookup: o.lookup ?? publicOnlyLookup }),
    };
    const req: ClientRequest = url.protocol === 'https:' ? httpsRequest(url, opts, onResponse) : httpRequest(url, opts, onResponse);
    if (!o.allowPrivate) {
      // The address actually connected to is checked too, whatever resolved it.
      req.on('socket', (socket: Socket) => {
        socket.once('connect', () => {
          const peer = socket.remoteAddress ?? '';
          const why = isIP(peer) ? privateAddressReason(peer) : 'unknown peer address';
          if (why) finish(new SsrfError(`jwksUri connected to ${peer} (${why}); private JWKS addresses need the explicit opt-in (allowPrivateJwksUri)`));
        });
      });
    }
    req.on('error', (e) => finish(e));
    const timer = setTimeout(() => finish(new JwksError(`JWKS fetch timed out after ${o.timeoutMs} ms`)), o.timeoutMs);
    req.end();
  });
}

// ---------------------------------------------------------------- sources

export interface JwksSourceOptions {
  /** Remote JWKS; null with `inline`. */
  uri: string | null;
  /** Inline JWKS text (RequestAuthentication `jwks`). */
  inline: string | null;
  timeoutMs: number;
  refreshMs: number;
  caPem: string | null;
  allowPrivate: boolean;
  /** Least time between two refetches caused by unknown kids (default 30 s). */
  minRefetchMs?: number;
  /** Response size cap (default 1 MiB). */
  maxBytes?: number;
  logger?: Logger;
  now?: () => number;
}

export interface JwksStatus {
  /** jwksUri, or 'inline'. */
  uri: string;
  /** ready: keys from the last fetch; stale: last fetch failed, older keys in use; unavailable: no keys ever. */
  state: 'ready' | 'stale' | 'unavailable' | 'pending';
  keys: number;
  kids: string[];
  lastSuccessAt: string | null;
  lastAttemptAt: string | null;
  lastError: string | null;
  fetches: number;
  /** A fetch is under way. */
  fetching: boolean;
}

/** One key set (one jwksUri, or one inline JWKS), shared by every rule that names it. */
export class JwksSource {
  /** The last good key set; null until one was fetched. Read on the request path. */
  keys: KeySet | null = null;
  readonly uri: string | null;
  private readonly opts: JwksSourceOptions;
  private readonly now: () => number;
  private readonly minRefetchMs: number;
  private readonly changeListeners = new Set<() => void>();
  private inflight: Promise<boolean> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastOnDemandAt = -Infinity;
  private lastSuccessAt: number | null = null;
  private lastAttemptAt: number | null = null;
  private lastError: string | null = null;
  private fetches = 0;
  private started = false;
  private stopped = false;

  constructor(opts: JwksSourceOptions) {
    this.opts = opts;
    this.uri = opts.uri;
    this.now = opts.now ?? Date.now;
    this.minRefetchMs = opts.minRefetchMs ?? 30_000;
    if (opts.inline !== null) {
      try {
        this.keys = parseJwks(opts.inline).keySet;
        this.lastSuccessAt = this.now();
      } catch (err) {
        this.lastError = `inline jwks: ${(err as Error).message}`;
      }
    }
  }

  /** Fetches once and starts the refresh timer; resolves (never rejects) when the first fetch ends. */
  start(): Promise<void> {
    if (this.started || this.uri === null) return this.inflight ? this.inflight.then(() => undefined) : Promise.resolve();
    this.started = true;
    if (this.opts.refreshMs > 0) {
      this.timer = setInterval(() => { void this.refresh(); }, this.opts.refreshMs);
      this.timer.unref();
    }
    return this.refresh().then(() => undefined);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  onChange(fn: () => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  /** Fetch now (concurrent callers share one fetch). Resolves true when keys changed. */
  refresh(): Promise<boolean> {
    if (this.uri === null || this.stopped) return Promise.resolve(false);
    this.inflight ??= this.fetchOnce().finally(() => { this.inflight = null; });
    return this.inflight;
  }

  /**
   * For a token whose kid the set lacks: a refetch, at most once per `minRefetchMs`, so a
   * stream of made-up kids cannot turn the gateway into a load generator against the
   * issuer. Returns null when the budget is spent (the token then fails 'unknown kid').
   */
  refetchForUnknownKid(): Promise<boolean> | null {
    if (this.uri === null || this.stopped) return null;
    if (this.inflight) return this.inflight;
    const t = this.now();
    if (t - this.lastOnDemandAt < this.minRefetchMs) return null;
    this.lastOnDemandAt = t;
    return this.refresh();
  }

  private async fetchOnce(): Promise<boolean> {
    const uri = this.uri as string;
    this.fetches++;
    this.lastAttemptAt = this.now();
    try {
      const text = await fetchJwksText(uri, {
        timeoutMs: this.opts.timeoutMs > 0 ? this.opts.timeoutMs : 5000,
        caPem: this.opts.caPem,
        allowPrivate: this.opts.allowPrivate,
        maxBytes: this.opts.maxBytes ?? 1024 * 1024,
      });
      if (this.stopped) return false;
      const hadError = this.lastError !== null;
      const same = this.keys !== null && this.keys.text === text;
      // Parsed before anything is recorded: a 200 with a broken body is a failed fetch.
      const parsed = same ? null : parseJwks(text);
      this.lastSuccessAt = this.now();
      this.lastError = null;
      if (!parsed) return false;
      const { keySet, skipped } = parsed;
      this.keys = keySet;
      if (skipped.length) this.opts.logger?.warn({ jwksUri: uri, skipped }, 'JWKS keys skipped');
      if (hadError) this.opts.logger?.info({ jwksUri: uri, keys: keySet.keys.length }, 'JWKS fetch recovered');
      for (const fn of this.changeListeners) fn();
      return true;
    } catch (err) {
      this.lastError = (err as Error).message;
      // A successful HTTP answer that did not parse still leaves the previous keys in place.
      this.opts.logger?.warn(
        { jwksUri: uri, error: this.lastError, keptLastGood: this.keys !== null },
        this.keys ? 'JWKS fetch failed; the last good keys stay in use' : 'JWKS fetch failed; tokens for this issuer get 401 until it succeeds',
      );
      return false;
    }
  }

  status(): JwksStatus {
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    const state = this.keys === null
      ? (this.fetches === 0 && this.uri !== null ? 'pending' : 'unavailable')
      : this.lastError ? 'stale' : 'ready';
    return {
      uri: this.uri ?? 'inline',
      state,
      keys: this.keys?.keys.length ?? 0,
      kids: this.keys ? [...this.keys.byKid.keys()] : [],
      lastSuccessAt: iso(this.lastSuccessAt),
      lastAttemptAt: iso(this.lastAttemptAt),
      lastError: this.lastError,
      fetches: this.fetches,
      fetching: this.inflight !== null,
    };
  }
}

/**
 * Sources shared across config versions: a new authenticator for a new push reuses the
 * keys already fetched instead of refetching every JWKS on every config change.
 */
export class JwksPool {
  private readonly entries = new Map<string, { source: JwksSource; refs: number }>();

  acquire(o: JwksSourceOptions): JwksSource {
    const key = JSON.stringify([o.uri, o.caPem, o.allowPrivate, o.timeoutMs, o.refreshMs]);
    let e = this.entries.get(key);
    if (!e) {
      e = { source: new JwksSource(o), refs: 0 };
      this.entries.set(key, e);
    }
    e.refs++;
    return e.source;
  }

  release(source: JwksSource): void {
    for (const [key, e] of this.entries) {
      if (e.source !== source) continue;
      if (--e.refs === 0) {
        source.stop();
        this.entries.delete(key);
      }
      return;
    }
  }

  get size(): number {
    return this.entries.size;
  }
}
