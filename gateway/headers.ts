// Header handling at the edge: which client headers may pass, what the proxy adds
// (x-request-id, x-forwarded-*), and the route's header edits compiled into arrays so a
// request only walks what the route configured.
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { HeaderOps } from '../api/proxyconfig.ts';
import type { HeaderMap } from './upstream/types.ts';

export interface CompiledHeaderOps {
  set: [string, string][];
  add: [string, string][];
  remove: string[];
  /** `set` of `host`/`:authority` on requests: becomes the upstream authority. */
  authority: string | null;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

function validValue(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    // CR, LF and NUL in a value would split or truncate the header on the wire
    // [CVE-2023-27493]; other control characters are refused by HTTP parsers downstream.
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return false;
  }
  return true;
}

/** Throws, naming `where`, when a name or value could not be sent as a header. */
export function compileHeaderOps(ops: HeaderOps | null, where: string): CompiledHeaderOps | null {
  if (ops === null || (ops.set.length === 0 && ops.add.length === 0 && ops.remove.length === 0)) return null;
  const out: CompiledHeaderOps = { set: [], add: [], remove: [], authority: null };
  const check = (name: string, value: string | null): string => {
    const n = name.toLowerCase();
    const bare = n.startsWith(':') ? n.slice(1) : n;
    if (!TOKEN.test(bare)) throw new Error(`${where}: header name ${JSON.stringify(name)} is not a valid token`);
    if (value !== null && !validValue(value)) throw new Error(`${where}: header ${name} has a value with control characters (CR/LF/NUL)`);
    return n;
  };
  for (const [name, value] of ops.set) {
    const n = check(name, value);
    if (n === 'host' || n === ':authority') out.authority = value;
    else out.set.push([n, value]);
  }
  for (const [name, value] of ops.add) out.add.push([check(name, value), value]);
  for (const name of ops.remove) out.remove.push(check(name, null));
  return out;
}

/**
 * Envoy's order: removals first, then set/add in config order (Istio writes `set` before
 * `add`), so a header both removed and set ends up set.
 */
export function applyHeaderOps(h: HeaderMap, ops: CompiledHeaderOps): void {
  const remove = ops.remove;
  for (let i = 0; i < remove.length; i++) delete h[remove[i]];
  const set = ops.set;
  for (let i = 0; i < set.length; i++) h[set[i][0]] = set[i][1];
  const add = ops.add;
  for (let i = 0; i < add.length; i++) {
    const name = add[i][0];
    const cur = h[name];
    if (cur === undefined) h[name] = add[i][1];
    else if (typeof cur === 'string') h[name] = [cur, add[i][1]];
    else cur.push(add[i][1]);
  }
}

/**
 * Headers only the proxy may set: a client sending them could impersonate internal
 * routing or identity decisions [CVE-2023-27487, CVE-2024-45806].
 */
export function isInternalHeader(name: string): boolean {
  if (name.charCodeAt(0) !== 120 /* x */ || name.charCodeAt(1) !== 45 /* - */) return false;
  return name.startsWith('x-envoy-') || name.startsWith('x-meshgate-') || name === 'x-forwarded-client-cert';
}

/** Deletes client-set internal headers in place; later stages see the cleaned map. */
export function stripInternalHeaders(h: IncomingHttpHeaders): void {
  for (const name in h) {
    if (isInternalHeader(name)) delete h[name];
  }
}

/**
 * Every value of every header as received (node joins repeated headers in `headers`), for
 * route matching and policies: a header sent twice is checked value by value
 * [CVE-2026-26308]. Pseudo-headers are left out, and so are the internal headers the edge
 * strips, so that no policy or route can act on a header the upstream never sees.
 */
export function distinctHeaderValues(req: { rawHeaders: string[] }): Record<string, string[]> {
  // HTTP/1: computed once by node and cached on the request.
  const d = (req as { headersDistinct?: Record<string, string[]> }).headersDistinct;
  if (d !== undefined) {
    for (const name in d) if (isInternalHeader(name)) return withoutInternal(d);
    return d;
  }
  // HTTP/2 compat requests have no headersDistinct; rawHeaders keeps each occurrence.
  const raw = req.rawHeaders;
  const out: Record<string, string[]> = Object.create(null);
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (name.charCodeAt(0) === 58 /* ':' */ || isInternalHeader(name)) continue;
    const cur = out[name];
    if (cur === undefined) out[name] = [raw[i + 1]]; else cur.push(raw[i + 1]);
  }
  return out;
}

function withoutInternal(d: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = Object.create(null);
  for (const name in d) if (!isInternalHeader(name)) out[name] = d[name];
  return out;
}

const MAX_REQUEST_ID = 128;

/**
 * Keeps a client's x-request-id when it is a plausible id (so a trace can start at the
 * client), replaces anything else: an id is logged and forwarded, so it must be short and
 * printable.
 */
export function pickRequestId(v: string | string[] | undefined): string {
  if (typeof v === 'string' && v.length > 0 && v.length <= MAX_REQUEST_ID) {
    let ok = true;
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (!((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 95 || c === 46 || c === 58)) { ok = false; break; }
    }
    if (ok) return v;
  }
  return randomUUID();
}

/** Tokens of a Connection header, lower-cased: the extra headers it makes hop-by-hop. */
function connectionTokens(v: string | string[] | undefined): string[] | null {
  if (v === undefined) return null;
  const s = (typeof v === 'string' ? v : v.join(',')).toLowerCase();
  if (s === 'keep-alive' || s === 'close' || s === 'upgrade') return null;
  const out: string[] = [];
  for (const t of s.split(',')) {
    const n = t.trim();
    if (n && n !== 'keep-alive' && n !== 'close' && n !== 'upgrade') out.push(n);
  }
  return out.length ? out : null;
}

/**
 * The headers to send upstream: the client's minus pseudo-headers, `host`, internal
 * headers and hop-by-hop headers (RFC 9110 7.6.1, the ones named by `connection`
 * included); `te` only as `trailers` (gRPC needs it). `upgrade` survives only for
 * WebSocket tunnels, with `connection: upgrade` re-added.
 */
export function buildUpstreamHeaders(src: IncomingHttpHeaders, upgrade: boolean, clientIp: string, scheme: string, requestId: string): HeaderMap {
  const out: HeaderMap = {};
  const drop = connectionTokens(src.connection);
  for (const name in src) {
    const v = src[name];
    if (v === undefined || name.charCodeAt(0) === 58 /* : */) continue;
    switch (name) {
      case 'host': case 'connection': case 'keep-alive': case 'proxy-connection':
      case 'transfer-encoding': case 'http2-settings': case 'x-request-id':
      case 'x-forwarded-proto':
        continue;
      case 'upgrade':
        if (upgrade) out.upgrade = v;
        continue;
      case 'te':
        if (typeof v === 'string' && v.toLowerCase().includes('trailers')) out.te = 'trailers';
        continue;
    }
    if (isInternalHeader(name)) continue;
    if (drop !== null && drop.includes(name)) continue;
    out[name] = v;
  }
  if (upgrade) out.connection = 'upgrade';
  const xff = out['x-forwarded-for'];
  out['x-forwarded-for'] = xff === undefined ? clientIp : `${typeof xff === 'string' ? xff : xff.join(', ')}, ${clientIp}`;
  out['x-forwarded-proto'] = scheme;
  out['x-request-id'] = requestId;
  return out;
}

/** The client address as Envoy reports it: IPv4-mapped IPv6 shown as IPv4. */
export function clientAddress(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}
