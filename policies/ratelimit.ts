// Rate limits (meshgate.io RateLimitPolicy), compiled once per config version and checked per
// request after authorization. docs/ratelimit.md is the user-facing reference.
//
// Algorithm: each limit is one counter per key over a fixed window sized as a token bucket.
// A limit of `requests` per `unit` with `burst` extra becomes `requests + burst` points over
// a window of `(requests + burst) / requests` units, so
//   - a quiet client gets `requests + burst` at once (Envoy's full bucket, max_tokens), and
//   - over any long period no more than `requests` per unit pass (Envoy's fill rate).
// The difference from Envoy's local rate limit: tokens come back all at once when the window
// ends instead of `requests` per unit, so a client that spent its whole burst waits up to one
// window (Retry-After says how long). rate-limiter-flexible's counters are fixed windows, and
// one window keeps local, global and insurance counting identical.
//
// Global limits count in Redis (RateLimiterRedis) with an in-memory insurance limiter: when
// Redis is unreachable or slow, the library answers from memory, so no request waits on a
// dead Redis and no request fails because of it. The ioredis client is built to fail fast
// (no offline queue, short timeouts) and keeps reconnecting in the background.
import { hash } from 'node:crypto';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { Redis, type RedisOptions } from 'ioredis';
import type { RateLimitAmount, RateLimitKeyPart, RateLimitPolicy, RequestFacts } from '../api/policy.ts';
import type { Logger } from '../api/logger.ts';
import { hostMatches } from '../api/hosts.ts';

// ---------------------------------------------------------------- public surface

export interface RateLimitContext {
  /** Name of the matched route (`virtualservice/<ns>/<name>/http/<i>` or the route's `name`), or null. */
  routeName: string | null;
  /** The HTTPRoute's own `name`, when it has one: a policy may name the route either way. */
  routeAlias?: string | null;
  /** Verified JWT claims from authentication, or null when the request carried no token. */
  claims: Record<string, unknown> | null;
}

export interface RateLimitDecision {
  allowed: boolean;
  /** True when a shadow-mode rule would have rejected the request (it was let through). */
  shadowed: boolean;
  /** 429 when rejected, else null. */
  status: 429 | null;
  /** Response headers to add (RateLimit-Limit / -Remaining / -Reset, Retry-After on 429); null: none. */
  headers: Record<string, string> | null;
  /** Short text/plain body for the 429, else null. */
  body: string | null;
  /** `ratelimitpolicy/<ns>/<name>/rules/<i>` (or `…/overrides/<j>`) that decided, or null. */
  source: string | null;
  /** True when a global rule was answered by the in-memory insurance limiter (Redis down or slow). */
  insurance: boolean;
}

export type RedisState = 'not-configured' | 'connecting' | 'up' | 'down';

export interface RateLimitOptions {
  /**
   * Where global limits count: a redis:// URL, ioredis options, or a factory returning an
   * ioredis client (the factory's client should set enableOfflineQueue: false and timeouts
   * itself; close() quits it). Absent: global policies count per replica, with a warning.
   */
  redis?: string | RedisOptions | (() => Redis) | null;
  log: Logger;
  /** Called on every Redis state change (also logged). */
  onRedisState?: (state: RedisState, error: string | null) => void;
  /**
   * Gateway replicas sharing global limits. While Redis is down each replica allows
   * 1/replicas of each global limit from memory, so the total stays near the limit. Default 1.
   */
  replicas?: number;
  /** Prefix of every Redis key. Default `mg:rl`. */
  keyPrefix?: string;
}

export interface RateLimitStatus {
  policies: number;
  rules: number;
  redis: {
    state: RedisState;
    /** When the state last changed (ISO time). */
    since: string;
    lastError: string | null;
    /** Times Redis went from up to down since start. */
    outages: number;
    /** Commands waiting in the client (offline queue + in flight); stays small by design. */
    queued: number;
  };
  /** Counters since start (kept across config versions); names map onto metrics. */
  decisions: {
    /** Requests some policy covered. */
    checked: number;
    rejected: number;
    /** Would have been rejected, let through by shadow mode. */
    shadowed: number;
    /** Decisions in which the insurance limiter answered for Redis. */
    insurance: number;
    /** Limiter failures that let the request through (fail open). */
    errors: number;
  };
  limits: { source: string; mode: 'local' | 'global'; shadow: boolean; points: number; windowSeconds: number }[];
}

/** The decision for requests no policy covers, and for covered ones that need no headers. Shared, frozen. */
export const RATE_LIMIT_PASS: RateLimitDecision = Object.freeze({
  allowed: true, shadowed: false, status: null, headers: null, body: null, source: null, insurance: false,
}) as RateLimitDecision;

export const RATE_LIMIT_BODY = 'rate limit exceeded\n';

/** Key values longer than this are replaced by their SHA-256, so hostile input cannot make huge keys. */
export const MAX_RAW_KEY = 128;

// ---------------------------------------------------------------- compiled shapes

interface Slot {
  /** Identity used to carry counters over to the next config version. */
  id: string;
  source: string;
  mode: 'local' | 'global';
  points: number;
  windowSeconds: number;
  /** The Redis client a global limit counts in; null for local limits. */
  client: Redis | null;
  limiter: RateLimiterMemory | RateLimiterRedis;
}

interface CompiledOverride {
  match: { part: RateLimitKeyPart; value: string }[];
  slot: Slot;
}

interface CompiledRule {
  shadow: boolean;
  key: RateLimitKeyPart[];
  slot: Slot;
  overrides: CompiledOverride[];
}

interface CompiledPolicy {
  allHosts: boolean;
  exactHosts: Set<string>;
  wildcardHosts: string[];
  /** null: every route. */
  routes: Set<string> | null;
  rules: CompiledRule[];
}

interface Stats {
  checked: number;
  rejected: number;
  shadowed: number;
  insurance: number;
  errors: number;
  lastErrorLog: number;
}

interface Outcome {
  res: RateLimiterRes | null;
  rejected: boolean;
  insurance: boolean;
  /** Set when neither Redis nor insurance answered. */
  error: unknown;
}

// ---------------------------------------------------------------- Redis link

// Timeouts small enough that a request never waits noticeably on Redis; the insurance
// limiter answers instead. A Redis that hangs (accepts, never answers) costs at most
// commandTimeout to the requests in flight; socketTimeout then drops the connection, so
// later requests go straight to insurance while ioredis reconnects in the background,
// backing off to at most 2 s and never giving up.
const REDIS_DEFAULTS: RedisOptions = {
  connectTimeout: 1000,
  commandTimeout: 50,
  socketTimeout: 200,
  retryStrategy: redisRetryDelay,
  connectionName: 'meshgate-ratelimit',
};

function redisRetryDelay(times: number): number {
  return Math.min(50 * 2 ** Math.min(times, 6), 2000);
}

/** What cannot be overridden: nothing may queue while Redis is away. */
const REDIS_FAIL_FAST: RedisOptions = {
  enableOfflineQueue: false,
  // Counter increments sent just before a disconnect are failed, not replayed later: a late
  // increment would count a request twice (once in insurance, once in Redis).
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
};

class RedisLink {
  client: Redis;
  config: RateLimitOptions['redis'];
  state: RedisState = 'connecting';
  since = Date.now();
  lastError: string | null = null;
  outages = 0;
  everDown = false;
  log: Logger;
  onState: RateLimitOptions['onRedisState'];

  constructor(config: NonNullable<RateLimitOptions['redis']>, log: Logger, onState: RateLimitOptions['onRedisState']) {
    this.config = config;
    this.log = log;
    this.onState = onState;
    if (typeof config === 'function') {
      this.client = config();
      if (this.client.options.enableOfflineQueue !== false) {
        log.warn({ component: 'ratelimit' }, 'the Redis client factory enables the offline queue: requests may wait on an unreachable Redis; set enableOfflineQueue: false');
      }
    } else if (typeof config === 'string') {
      this.client = new Redis(config, { ...REDIS_DEFAULTS, ...REDIS_FAIL_FAST });
    } else {
      this.client = new Redis({ ...REDIS_DEFAULTS, ...config, ...REDIS_FAIL_FAST });
    }
    this.client.on('ready', () => this.setState('up', null));
    this.client.on('error', (err: Error) => {
      this.lastError = err.message;
      if (this.state !== 'up') this.setState('down', err.message);
    });
    this.client.on('close', () => this.setState('down', this.lastError));
    this.client.on('end', () => this.setState('down', this.lastError));
    if (this.client.status === 'ready') this.setState('up', null);
  }

  setState(state: RedisState, error: string | null): void {
    if (state === this.state) return;
    const wasUp = this.state === 'up';
    this.state = state;
    this.since = Date.now();
    if (state === 'up') {
      this.lastError = null;
      this.log.info({ component: 'ratelimit', redis: 'up' }, this.everDown
        ? 'Redis reachable again: global rate limits are shared across replicas, insurance no longer used'
        : 'Redis reachable: global rate limits are shared across replicas');
    } else if (state === 'down') {
      if (wasUp) this.outages++;
      this.everDown = true;
      this.log.warn({ component: 'ratelimit', redis: 'down', error }, 'Redis unreachable: global rate limits are counted per replica by the in-memory insurance limiter until it returns');
    }
    if (this.onState) {
      // A throwing callback must not break ioredis' event handling.
      try { this.onState(state, error); } catch { /* reported by the caller's own code */ }
    }
  }

  /** The client's own status wins when the state-change event has not been processed yet. */
  liveState(): RedisState {
    if (this.client.status === 'ready') return 'up';
    return this.state === 'connecting' ? 'connecting' : 'down';
  }

  queued(): number {
    const c = this.client as unknown as { offlineQueue?: { length: number }; commandQueue?: { length: number } };
    return (c.offlineQueue?.length ?? 0) + (c.commandQueue?.length ?? 0);
  }

  async close(): Promise<void> {
    const c = this.client;
    // A deliberate close is not an outage: no state change, no warning.
    c.removeAllListeners('ready');
    c.removeAllListeners('close');
    c.removeAllListeners('end');
    if (c.status === 'ready') await c.quit().catch(() => undefined);
    c.disconnect();
    // ioredis emits errors after disconnect in some states; keep one listener so none is unhandled.
    c.removeAllListeners('error');
    c.on('error', () => undefined);
  }
}

function sameRedisConfig(a: RateLimitOptions['redis'], b: RateLimitOptions['redis']): boolean {
  if (a === b) return true;
  if (!a || !b || typeof a === 'function' || typeof b === 'function') return false;
  return JSON.stringify(a) === JSON.stringify(b);
}

// ---------------------------------------------------------------- insurance

/** Results answered by an insurance limiter, so a decision can say it was served from memory. */
const insured = new WeakSet<object>();

function markInsured(res: RateLimiterRes): RateLimiterRes {
  insured.add(res);
  return res;
}

function markInsuredRejection(res: unknown): never {
  if (res instanceof RateLimiterRes) insured.add(res);
  throw res;
}

class InsuranceLimiter extends RateLimiterMemory {
  override consume(key: string | number, points?: number, options?: { [key: string]: unknown }): Promise<RateLimiterRes> {
    return super.consume(key, points, options).then(markInsured, markInsuredRejection);
  }
}

// ---------------------------------------------------------------- compile

const UNIT_SECONDS = { second: 1, minute: 60, hour: 3600 } as const;

/** Points and window of one limit (see the algorithm note at the top). */
export function limitWindow(a: RateLimitAmount, mode: 'local' | 'global'): { points: number; windowSeconds: number } {
  const requests = Math.max(0, Math.floor(a.requests));
  const points = requests + Math.max(0, Math.floor(a.burst));
  const unit = UNIT_SECONDS[a.unit];
  if (requests === 0) return { points: 0, windowSeconds: unit };
  const exact = (points * unit) / requests;
  // Redis expires keys in whole seconds: round the window up, the stricter side.
  const windowSeconds = mode === 'global' ? Math.ceil(exact) : Math.ceil(exact * 1000) / 1000;
  return { points, windowSeconds };
}

function shortHash(s: string): string {
  return hash('sha256', s, 'base64url').slice(0, 10);
}

/**
 * Builds the limiters for one config version. Pass the previous version's RateLimits as
 * `previous` to keep the counters of every limit that did not change and its Redis
 * connection (when the Redis settings are the same); the previous instance then owns
 * nothing shared and its close() only releases what was not carried over.
 */
export function compileRateLimits(policies: RateLimitPolicy[], opts: RateLimitOptions, previous?: RateLimits | null): RateLimits {
  return new RateLimits(policies, opts, previous ?? null);
}

export class RateLimits {
  policies: CompiledPolicy[] = [];
  slots = new Map<string, Slot>();
  link: RedisLink | null = null;
  stats: Stats;
  log: Logger;
  closed = false;

  constructor(policies: RateLimitPolicy[], opts: RateLimitOptions, previous: RateLimits | null) {
    this.log = opts.log;
    const replicas = Math.max(1, Math.floor(opts.replicas ?? 1));
    const prefix = opts.keyPrefix ?? 'mg:rl';
    this.stats = previous ? previous.stats : { checked: 0, rejected: 0, shadowed: 0, insurance: 0, errors: 0, lastErrorLog: 0 };

    const wantsRedis = policies.some((p) => p.mode === 'global');
    if (wantsRedis && opts.redis) {
      if (previous && previous.link && sameRedisConfig(previous.link.config, opts.redis)) {
        this.link = previous.link;
        this.link.log = opts.log;
        this.link.onState = opts.onRedisState;
        previous.link = null;
      } else {
        this.link = new RedisLink(opts.redis, opts.log, opts.onRedisState);
      }
    }
    const reuse = previous ? previous.slots : null;

    for (const p of policies) {
      let mode = p.mode;
      if (mode === 'global' && this.link === null) {
        mode = 'local';
        this.log.warn({ component: 'ratelimit', policy: p.source }, 'global rate limit but no Redis is configured: each replica counts alone');
      }
      const hosts = p.hosts.map((h) => h.toLowerCase());
      const compiled: CompiledPolicy = {
        allHosts: hosts.length === 0 || hosts.includes('*'),
        exactHosts: new Set(hosts.filter((h) => !h.startsWith('*'))),
        wildcardHosts: hosts.filter((h) => h.startsWith('*')),
        routes: p.routes.length === 0 ? null : new Set(p.routes),
        rules: [],
      };
      for (const r of p.rules) {
        const makeSlot = (variant: string, source: string, amount: RateLimitAmount): Slot => {
          const { points, windowSeconds } = limitWindow(amount, mode);
          const base = `${mode}|${p.source}|${r.name}|${variant}|${points}/${windowSeconds}|${replicas}`;
          let id = base;
          // Two rules with one name in one policy (validation should refuse it) must not share counters.
          for (let n = 2; this.slots.has(id); n++) id = `${base}#${n}`;
          const old = reuse?.get(id);
          const client = mode === 'global' && this.link !== null ? this.link.client : null;
          // Counters carry over only to a limit that is the same and counts in the same place.
          const slot: Slot = old && old.client === client
            ? { ...old, source }
            : { id, source, mode, points, windowSeconds, client, limiter: this.buildLimiter(client, `${prefix}:${p.source}:${r.name}:${variant}:${points}x${windowSeconds}s`, points, windowSeconds, replicas) };
          this.slots.set(id, slot);
          return slot;
        };
        const rule: CompiledRule = {
          shadow: p.shadow,
          key: r.key.map(normalisePart),
          slot: makeSlot('base', r.source, r.limit),
          overrides: r.overrides.map((o, i) => {
            const match = o.match.map((m) => ({ part: normalisePart(m.part), value: normaliseMatchValue(m.part, m.value) }));
            return { match, slot: makeSlot(`o-${shortHash(JSON.stringify(match))}`, `${r.source}/overrides/${i}`, o.limit) };
          }),
        };
        compiled.rules.push(rule);
      }
      if (compiled.rules.length > 0) this.policies.push(compiled);
    }
  }

  buildLimiter(client: Redis | null, keyPrefix: string, points: number, windowSeconds: number, replicas: number): RateLimiterMemory | RateLimiterRedis {
    if (client === null) return new RateLimiterMemory({ points, duration: windowSeconds, keyPrefix: '' });
    // Each replica's share of the limit while Redis is away; at least 1, or a small limit
    // over several replicas would refuse everything during an outage.
    const share = points === 0 ? 0 : Math.max(1, Math.floor(points / replicas));
    const insurance = new InsuranceLimiter({ points: share, duration: windowSeconds, keyPrefix: '' });
    return new RateLimiterRedis({
      storeClient: client,
      keyPrefix,
      points,
      duration: windowSeconds,
      insuranceLimiter: insurance,
      // While the connection is not ready, go straight to insurance without sending anything.
      rejectIfRedisNotReady: true,
      // A key already over its limit is refused from memory until its window ends, so a
      // flood from one client does not become a flood of Redis commands.
      inMemoryBlockOnConsumed: points + 1,
    });
  }

  /**
   * The rate-limit decision for one request. Synchronous (the shared RATE_LIMIT_PASS) when no
   * policy covers the request; otherwise a Promise that never rejects.
   */
  check(facts: RequestFacts, ctx: RateLimitContext): Promise<RateLimitDecision> | RateLimitDecision {
    const policies = this.policies;
    for (let i = 0; i < policies.length; i++) {
      if (covers(policies[i], facts.host, ctx.routeName, ctx.routeAlias ?? null)) return runChecks(this, i, facts, ctx);
    }
    return RATE_LIMIT_PASS;
  }

  status(): RateLimitStatus {
    const s = this.stats;
    const link = this.link;
    const limits: RateLimitStatus['limits'] = [];
    let rules = 0;
    for (const p of this.policies) {
      rules += p.rules.length;
      for (const r of p.rules) {
        for (const slot of [r.slot, ...r.overrides.map((o) => o.slot)]) {
          limits.push({ source: slot.source, mode: slot.mode, shadow: r.shadow, points: slot.points, windowSeconds: slot.windowSeconds });
        }
      }
    }
    return {
      policies: this.policies.length,
      rules,
      redis: link
        ? { state: link.liveState(), since: new Date(link.since).toISOString(), lastError: link.lastError, outages: link.outages, queued: link.queued() }
        : { state: 'not-configured', since: new Date(0).toISOString(), lastError: null, outages: 0, queued: 0 },
      decisions: { checked: s.checked, rejected: s.rejected, shadowed: s.shadowed, insurance: s.insurance, errors: s.errors },
      limits,
    };
  }

  /** Closes the Redis connection this instance still owns (not one handed to a newer version). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const link = this.link;
    this.link = null;
    if (link) await link.close();
  }
}

// ---------------------------------------------------------------- per request

function covers(p: CompiledPolicy, host: string, routeName: string | null, routeAlias: string | null): boolean {
  const routes = p.routes;
  if (routes !== null && !((routeName !== null && routes.has(routeName)) || (routeAlias !== null && routes.has(routeAlias)))) return false;
  if (p.allHosts || p.exactHosts.has(host)) return true;
  const w = p.wildcardHosts;
  for (let i = 0; i < w.length; i++) if (hostMatches(w[i], host)) return true;
  return false;
}

function runChecks(rl: RateLimits, first: number, facts: RequestFacts, ctx: RateLimitContext): Promise<RateLimitDecision> {
  const policies = rl.policies;
  const rules: CompiledRule[] = [];
  const slots: Slot[] = [];
  const pending: Promise<Outcome>[] = [];
  for (let i = first; i < policies.length; i++) {
    const p = policies[i];
    if (i !== first && !covers(p, facts.host, ctx.routeName, ctx.routeAlias ?? null)) continue;
    for (let j = 0; j < p.rules.length; j++) {
      const rule = p.rules[j];
      const slot = pickSlot(rule, facts, ctx.claims);
      rules.push(rule);
      slots.push(slot);
      pending.push(slot.limiter.consume(counterKey(rule.key, facts, ctx.claims)).then(onConsumed, onRefused));
    }
  }
  rl.stats.checked++;
  // One rule (the usual case): no Promise.all around its one answer.
  if (pending.length === 1) return pending[0].then((o) => decide(rl, rules, slots, [o]));
  // Every rule counts the request, even when another rejects it, as Envoy's descriptors do.
  return Promise.all(pending).then((outcomes) => decide(rl, rules, slots, outcomes));
}

function onConsumed(res: RateLimiterRes): Outcome {
  return { res, rejected: false, insurance: insured.has(res), error: null };
}

function onRefused(err: unknown): Outcome {
  if (err instanceof RateLimiterRes) return { res: err, rejected: true, insurance: insured.has(err), error: null };
  // Neither Redis nor insurance answered (should not happen): fail open, counted and logged.
  return { res: null, rejected: false, insurance: false, error: err };
}

function decide(rl: RateLimits, rules: CompiledRule[], slots: Slot[], outcomes: Outcome[]): RateLimitDecision {
  let reject = -1;
  let shadowReject = -1;
  let report = -1;
  let insurance = false;
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i];
    if (o.insurance) insurance = true;
    const res = o.res;
    if (res === null) {
      noteError(rl, o.error, slots[i].source);
      continue;
    }
    if (rules[i].shadow) {
      if (o.rejected && shadowReject < 0) shadowReject = i;
      continue;
    }
    if (o.rejected) {
      // The client must wait for every rule that refused: report the longest wait.
      if (reject < 0 || res.msBeforeNext > (outcomes[reject].res as RateLimiterRes).msBeforeNext) reject = i;
    } else if (reject < 0) {
      const best = report < 0 ? null : (outcomes[report].res as RateLimiterRes);
      if (best === null || res.remainingPoints < best.remainingPoints
        || (res.remainingPoints === best.remainingPoints && res.msBeforeNext > best.msBeforeNext)) report = i;
    }
  }
  const stats = rl.stats;
  if (insurance) stats.insurance++;
  if (reject >= 0) {
    stats.rejected++;
    const res = outcomes[reject].res as RateLimiterRes;
    const slot = slots[reject];
    const wait = secondsUntil(res.msBeforeNext, slot.windowSeconds);
    return {
      allowed: false,
      shadowed: false,
      status: 429,
      headers: {
        'ratelimit-limit': String(slot.points),
        'ratelimit-remaining': '0',
        'ratelimit-reset': String(wait),
        'retry-after': String(wait),
      },
      body: RATE_LIMIT_BODY,
      source: slot.source,
      insurance,
    };
  }
  if (shadowReject >= 0) stats.shadowed++;
  if (report < 0 && shadowReject < 0 && !insurance) return RATE_LIMIT_PASS;
  let headers: Record<string, string> | null = null;
  if (report >= 0) {
    const res = outcomes[report].res as RateLimiterRes;
    const slot = slots[report];
    headers = {
      'ratelimit-limit': String(slot.points),
      'ratelimit-remaining': String(res.remainingPoints),
      'ratelimit-reset': String(secondsUntil(res.msBeforeNext, slot.windowSeconds)),
    };
  }
  return {
    allowed: true,
    shadowed: shadowReject >= 0,
    status: null,
    headers,
    body: null,
    source: shadowReject >= 0 ? slots[shadowReject].source : report >= 0 ? slots[report].source : null,
    insurance,
  };
}

/** Whole seconds, at least 1 (a 0 would invite an immediate retry storm). */
function secondsUntil(ms: number, windowSeconds: number): number {
  if (!(ms > 0)) return Math.max(1, Math.ceil(windowSeconds));
  return Math.max(1, Math.ceil(ms / 1000));
}

function noteError(rl: RateLimits, err: unknown, source: string): void {
  rl.stats.errors++;
  const now = Date.now();
  // One line per 10 s at most: a broken limiter on a busy route must not flood the log.
  if (now - rl.stats.lastErrorLog < 10_000) return;
  rl.stats.lastErrorLog = now;
  rl.log.error({ component: 'ratelimit', rule: source, error: err instanceof Error ? err.message : String(err) }, 'rate limiter failed; request let through');
}

function pickSlot(rule: CompiledRule, facts: RequestFacts, claims: Record<string, unknown> | null): Slot {
  const overrides = rule.overrides;
  // First override whose every condition holds wins, in the order written.
  for (let i = 0; i < overrides.length; i++) {
    const match = overrides[i].match;
    let all = true;
    for (let j = 0; j < match.length && all; j++) all = partMatches(match[j].part, match[j].value, facts, claims);
    if (all) return overrides[i].slot;
  }
  return rule.slot;
}

/**
 * The counter key of one request: its key-part values, joined. Kept readable (as seen in
 * redis-cli) when short; hashed when long, so a hostile header or claim cannot make huge keys.
 * `=` and `#` prefixes keep the two forms from ever colliding.
 */
export function counterKey(parts: RateLimitKeyPart[], facts: RequestFacts, claims: Record<string, unknown> | null): string {
  if (parts.length === 0) return '=';
  if (parts.length === 1) {
    const v = partValue(parts[0], facts, claims);
    return v.length <= MAX_RAW_KEY ? `=${v}` : `#${hashKey(v)}`;
  }
  let raw = '=';
  let ambiguous = false;
  const values: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const v = partValue(parts[i], facts, claims);
    if (v.includes('|')) ambiguous = true;
    values.push(v);
    raw += i === 0 ? v : `|${v}`;
  }
  return !ambiguous && raw.length <= MAX_RAW_KEY ? raw : `#${hashKey(JSON.stringify(values))}`;
}

function hashKey(s: string): string {
  return hash('sha256', s, 'base64url');
}

function partValue(part: RateLimitKeyPart, facts: RequestFacts, claims: Record<string, unknown> | null): string {
  switch (part.kind) {
    case 'remoteAddress': return clientAddress(facts.remoteIp);
    case 'header': {
      const v = facts.headers[part.name];
      // First value only; trailing whitespace must not make a new counter (CVE-2019-18802).
      return v === undefined || v.length === 0 ? '' : v[0].trim();
    }
    case 'claim': return claimText(claims === null ? undefined : claims[part.name]);
    case 'path': return facts.path;
    // `get` and `GET` are one counter, else changing case would double a client's quota.
    case 'method': return facts.method.toUpperCase();
    case 'host': return facts.host;
  }
}

function partMatches(part: RateLimitKeyPart, value: string, facts: RequestFacts, claims: Record<string, unknown> | null): boolean {
  if (part.kind === 'claim') {
    const c = claims === null ? undefined : claims[part.name];
    // List-valued claims (groups, roles) match when any element is the value.
    if (Array.isArray(c)) {
      for (let i = 0; i < c.length; i++) if (claimText(c[i]) === value) return true;
      return false;
    }
    return claimText(c) === value;
  }
  return partValue(part, facts, claims) === value;
}

function claimText(c: unknown): string {
  if (typeof c === 'string') return c;
  if (typeof c === 'number' || typeof c === 'boolean') return String(c);
  if (Array.isArray(c)) return c.map(claimText).join(',');
  return '';
}

/** One client, one counter: an IPv4 peer seen through a dual-stack socket is the same client. */
function clientAddress(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

function normalisePart(p: RateLimitKeyPart): RateLimitKeyPart {
  return p.kind === 'header' ? { kind: 'header', name: p.name.toLowerCase() } : p;
}

function normaliseMatchValue(p: RateLimitKeyPart, v: string): string {
  if (p.kind === 'method') return v.toUpperCase();
  if (p.kind === 'host') return v.toLowerCase();
  if (p.kind === 'header') return v.trim();
  if (p.kind === 'remoteAddress') return clientAddress(v);
  return v;
}
