// Load balancing over a cluster's endpoints, with Envoy's semantics:
//   ROUND_ROBIN     weighted and smooth (a precomputed interleaved schedule, O(1) per pick)
//   LEAST_REQUEST   power of two choices over active requests (weighted: active / weight)
//   RANDOM          weighted random
//   CONSISTENT_HASH a hash ring (ketama style): a key keeps its endpoint, and adding an
//                   endpoint moves only the keys that land on its new points
// Everything that depends on the endpoint list is built when the cluster is applied; a
// pick only reads arrays. Ejected endpoints are skipped unless the cluster is in panic
// (healthy share below minHealthPercent: Envoy then balances over every endpoint).
// `avoid` carries the endpoints of earlier tries: Istio's previous_hosts retry predicate,
// honoured while another endpoint is available.
import type { LoadBalancer } from '../../api/proxyconfig.ts';
import type { EndpointState } from './endpoint.ts';

/** The endpoints a pick may choose from, refreshed when ejections change (rarely). */
export class Candidates {
  readonly all: EndpointState[];
  /** Endpoints to pick from: the non-ejected ones, or all of them in panic. */
  list: EndpointState[];
  /** Cumulative weights of `list`, or null when every weight is equal (uniform pick). */
  cumulative: Float64Array | null = null;
  panic = false;

  constructor(all: EndpointState[]) {
    this.all = all;
    this.list = all;
    this.refresh(0);
  }

  refresh(minHealthPercent: number): void {
    const healthy = this.all.filter(isHealthy);
    this.panic = minHealthPercent > 0 && this.all.length > 0 && healthy.length * 100 < minHealthPercent * this.all.length;
    this.list = this.panic ? this.all : healthy;
    this.cumulative = buildCumulative(this.list);
  }

  usable(ep: EndpointState): boolean {
    return this.panic || !ep.ejected;
  }
}

function isHealthy(ep: EndpointState): boolean { return !ep.ejected; }

function buildCumulative(list: EndpointState[]): Float64Array | null {
  if (list.length === 0) return null;
  const w0 = list[0].weight;
  if (list.every((e) => e.weight === w0)) return null;
  const out = new Float64Array(list.length);
  let sum = 0;
  for (let i = 0; i < list.length; i++) { sum += list[i].weight; out[i] = sum; }
  return out;
}

function randomFrom(c: Candidates): EndpointState | null {
  const list = c.list;
  const n = list.length;
  if (n === 0) return null;
  const cum = c.cumulative;
  if (cum === null) return list[(Math.random() * n) | 0];
  const target = Math.random() * cum[n - 1];
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cum[mid] > target) hi = mid; else lo = mid + 1;
  }
  return list[lo];
}

function avoided(ep: EndpointState, avoid: EndpointState[] | null): boolean {
  return avoid !== null && avoid.includes(ep);
}

/**
 * After the random reselections failed to leave the tried endpoints: any other candidate,
 * from a random start (a retry is rare enough for a scan).
 */
function notAvoided(c: Candidates, avoid: EndpointState[] | null): EndpointState | null {
  const list = c.list;
  const n = list.length;
  const start = (Math.random() * n) | 0;
  for (let i = 0; i < n; i++) {
    const ep = list[(start + i) % n];
    if (!avoided(ep, avoid)) return ep;
  }
  return null;
}

/** Envoy's host_selection_retry_max_attempts as Istio sets it. */
const RESELECT_ATTEMPTS = 5;

export interface Picker {
  /** `hash` is the request's consistent-hash key, or -1 when it has none. */
  pick(hash: number, avoid: EndpointState[] | null): EndpointState | null;
}

// ---------------------------------------------------------------- round robin

class RoundRobin implements Picker {
  readonly c: Candidates;
  readonly schedule: Uint32Array;
  cursor: number;

  constructor(c: Candidates) {
    this.c = c;
    this.schedule = smoothSchedule(c.all);
    // A random start, so gateways restarted together do not all hit the first endpoint.
    this.cursor = this.schedule.length > 0 ? (Math.random() * this.schedule.length) | 0 : 0;
  }

  pick(_hash: number, avoid: EndpointState[] | null): EndpointState | null {
    const found = this.scan(avoid);
    return found === null && avoid !== null ? this.scan(null) : found;
  }

  scan(avoid: EndpointState[] | null): EndpointState | null {
    const s = this.schedule;
    const n = s.length;
    const all = this.c.all;
    for (let i = 0; i < n; i++) {
      const ep = all[s[this.cursor]];
      this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1;
      if (this.c.usable(ep) && !avoided(ep, avoid)) return ep;
    }
    return null;
  }
}

/** Longest schedule we build; larger weight sums are scaled down proportionally. */
const MAX_SCHEDULE = 1 << 16;

/**
 * An interleaved order in which each endpoint appears `weight` times: endpoint i's k-th
 * turn sits at (k + 0.5) / w_i, so heavy endpoints are spread out rather than bunched
 * (the same order earliest-deadline-first scheduling gives, as in Envoy).
 */
export function smoothSchedule(eps: EndpointState[]): Uint32Array {
  const n = eps.length;
  if (n === 0) return new Uint32Array(0);
  let weights = eps.map((e) => e.weight);
  if (weights.every((w) => w === weights[0])) return Uint32Array.from(eps.keys());
  weights = weights.map((w) => Math.max(1, Math.round(w)));
  const g = weights.reduce(gcd);
  weights = weights.map((w) => w / g);
  let sum = weights.reduce((a, b) => a + b, 0);
  if (sum > MAX_SCHEDULE) {
    const scale = MAX_SCHEDULE / sum;
    weights = weights.map((w) => Math.max(1, Math.floor(w * scale)));
    sum = weights.reduce((a, b) => a + b, 0);
  }
  const slots: { at: number; i: number }[] = [];
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < weights[i]; k++) slots.push({ at: (k + 0.5) / weights[i], i });
  }
  slots.sort((a, b) => a.at - b.at || a.i - b.i);
  return Uint32Array.from(slots, (s) => s.i);
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

// ---------------------------------------------------------------- least request, random

class LeastRequest implements Picker {
  readonly c: Candidates;
  constructor(c: Candidates) { this.c = c; }

  pick(_hash: number, avoid: EndpointState[] | null): EndpointState | null {
    let best: EndpointState | null = null;
    for (let i = 0; i < RESELECT_ATTEMPTS; i++) {
      best = this.choose();
      if (best === null || !avoided(best, avoid)) return best;
    }
    return notAvoided(this.c, avoid) ?? best;
  }

  /** Two distinct random candidates, the one with fewer active requests per unit of weight. */
  choose(): EndpointState | null {
    const c = this.c;
    const list = c.list;
    const n = list.length;
    if (n < 2) return n === 1 ? list[0] : null;
    let a: EndpointState;
    let b: EndpointState;
    if (c.cumulative === null) {
      const i = (Math.random() * n) | 0;
      let j = (Math.random() * (n - 1)) | 0;
      if (j >= i) j++;
      a = list[i];
      b = list[j];
    } else {
      a = randomFrom(c)!;
      b = randomFrom(c)!;
      // Weighted draws may repeat; a couple more draws is enough to find a second one.
      for (let k = 0; k < 2 && b === a; k++) b = randomFrom(c)!;
    }
    return b.active / b.weight < a.active / a.weight ? b : a;
  }
}

class RandomPick implements Picker {
  readonly c: Candidates;
  constructor(c: Candidates) { this.c = c; }

  pick(_hash: number, avoid: EndpointState[] | null): EndpointState | null {
    let ep: EndpointState | null = null;
    for (let i = 0; i < RESELECT_ATTEMPTS; i++) {
      ep = randomFrom(this.c);
      if (ep === null || !avoided(ep, avoid)) return ep;
    }
    return notAvoided(this.c, avoid) ?? ep;
  }
}

// ---------------------------------------------------------------- consistent hash

class HashRing implements Picker {
  readonly c: Candidates;
  readonly hashes: Uint32Array;
  readonly owners: Uint32Array;
  readonly random: RandomPick;

  constructor(c: Candidates) {
    this.c = c;
    this.random = new RandomPick(c);
    const ring = buildRing(c.all);
    this.hashes = ring.hashes;
    this.owners = ring.owners;
  }

  pick(hash: number, avoid: EndpointState[] | null): EndpointState | null {
    // No key (header, cookie or parameter absent): Envoy picks at random.
    if (hash < 0) return this.random.pick(hash, avoid);
    const found = this.walk(hash, avoid);
    return found === null && avoid !== null ? this.walk(hash, null) : found;
  }

  /** The first usable endpoint clockwise from `hash`. */
  walk(hash: number, avoid: EndpointState[] | null): EndpointState | null {
    const hs = this.hashes;
    const n = hs.length;
    if (n === 0) return null;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hs[mid] < hash) lo = mid + 1; else hi = mid;
    }
    const all = this.c.all;
    for (let i = 0, at = lo === n ? 0 : lo; i < n; i++, at = at + 1 === n ? 0 : at + 1) {
      const ep = all[this.owners[at]];
      if (this.c.usable(ep) && !avoided(ep, avoid)) return ep;
    }
    return null;
  }
}

/** Envoy's default minimum ring size; larger clusters get ~100 points per endpoint. */
const MIN_RING = 1024;
const MAX_RING = 1 << 20;

export function buildRing(eps: EndpointState[]): { hashes: Uint32Array; owners: Uint32Array } {
  if (eps.length === 0) return { hashes: new Uint32Array(0), owners: new Uint32Array(0) };
  const size = Math.min(MAX_RING, Math.max(MIN_RING, eps.length * 100));
  const totalWeight = eps.reduce((a, e) => a + e.weight, 0);
  const points: { h: number; i: number }[] = [];
  for (let i = 0; i < eps.length; i++) {
    const count = Math.max(1, Math.round((size * eps[i].weight) / totalWeight));
    // Points are named by address, not index, so an endpoint keeps its points when others come and go.
    const base = `${eps[i].hostPort}_`;
    for (let k = 0; k < count; k++) points.push({ h: hashString(base + k), i });
  }
  points.sort((a, b) => a.h - b.h || a.i - b.i);
  return { hashes: Uint32Array.from(points, (p) => p.h), owners: Uint32Array.from(points, (p) => p.i) };
}

/** 32-bit FNV-1a with murmur3's finaliser, so nearby strings spread over the whole ring. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function createPicker(lb: LoadBalancer, c: Candidates): Picker {
  switch (lb.kind) {
    case 'ROUND_ROBIN': return new RoundRobin(c);
    case 'LEAST_REQUEST': return new LeastRequest(c);
    case 'RANDOM': return new RandomPick(c);
    case 'CONSISTENT_HASH': return new HashRing(c);
  }
}

// ---------------------------------------------------------------- hash keys

/** Minimal view of a request the hash policies read. */
export interface HashInput {
  hashHeaders: Record<string, string | string[] | undefined>;
  sourceIp: string;
  query: string;
}

/** The request's consistent-hash key, or -1 when the policy's input is absent. */
export function requestHash(lb: LoadBalancer, up: HashInput): number {
  if (lb.kind !== 'CONSISTENT_HASH') return -1;
  switch (lb.by) {
    case 'header': {
      const v = lb.name === null ? undefined : up.hashHeaders[lb.name];
      if (v === undefined) return -1;
      return hashString(typeof v === 'string' ? v : v.join(','));
    }
    case 'cookie': {
      const v = lb.name === null ? null : cookieValue(up.hashHeaders.cookie, lb.name);
      return v === null ? -1 : hashString(v);
    }
    case 'sourceIp':
      return up.sourceIp ? hashString(up.sourceIp) : -1;
    case 'queryParam': {
      const v = lb.name === null ? null : queryValue(up.query, lb.name);
      return v === null ? -1 : hashString(v);
    }
  }
}

/** A cookie's value from Cookie header(s); surrounding quotes removed as Envoy does. */
export function cookieValue(header: string | string[] | undefined, name: string): string | null {
  if (header === undefined) return null;
  const all = typeof header === 'string' ? header : header.join('; ');
  let at = 0;
  while (at < all.length) {
    let end = all.indexOf(';', at);
    if (end === -1) end = all.length;
    const eq = all.indexOf('=', at);
    if (eq !== -1 && eq < end && all.slice(at, eq).trim() === name) {
      let v = all.slice(eq + 1, end).trim();
      if (v.length >= 2 && v[0] === '"' && v[v.length - 1] === '"') v = v.slice(1, -1);
      return v;
    }
    at = end + 1;
  }
  return null;
}

/** A query parameter's raw value (first occurrence); `?` prefix optional. */
export function queryValue(query: string, name: string): string | null {
  const q = query.startsWith('?') ? query.slice(1) : query;
  let at = 0;
  while (at <= q.length) {
    let end = q.indexOf('&', at);
    if (end === -1) end = q.length;
    const eq = q.indexOf('=', at);
    const keyEnd = eq !== -1 && eq < end ? eq : end;
    if (keyEnd - at === name.length && q.startsWith(name, at)) return keyEnd === end ? '' : q.slice(eq + 1, end);
    at = end + 1;
  }
  return null;
}

/**
 * Envoy's behaviour for a hash cookie with a ttl that the request lacks: make one up, use
 * it as this request's key, and set it on the response so the client comes back to the
 * same endpoint. Decided per cluster: returns the Set-Cookie attributes after the value,
 * or null when the policy does not generate cookies (or its name/path cannot be a header).
 */
export function hashCookieAttributes(lb: LoadBalancer): string | null {
  if (lb.kind !== 'CONSISTENT_HASH' || lb.by !== 'cookie' || lb.name === null || lb.cookieTtlMs === null) return null;
  const path = lb.cookiePath ?? '/';
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(lb.name) || !/^[\x21-\x3a\x3c-\x7e]*$/.test(path)) return null;
  let attrs = '';
  if (lb.cookieTtlMs > 0) attrs += `; Max-Age=${Math.max(1, Math.floor(lb.cookieTtlMs / 1000))}`;
  return `${attrs}; Path=${path}; HttpOnly`;
}

/** A fresh cookie value: 64 random bits as hex. */
export function randomHex16(): string {
  return ((Math.random() * 0x100000000) >>> 0).toString(16).padStart(8, '0') + ((Math.random() * 0x100000000) >>> 0).toString(16).padStart(8, '0');
}
