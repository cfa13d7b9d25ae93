// A strict HTTP/1.1 request-head parser for the plaintext fast path (see conn.ts). It
// accepts only the boring subset real clients send and says FALLBACK for everything else:
// node's own parser then sees exactly the same bytes and answers as it always did (400,
// 431, upgrades, HTTP/1.0, obs-fold, smuggling attempts…). So this parser never has to
// produce an error reply and never has to be as lenient as node: "not sure" is FALLBACK.
//
// Accepted: `METHOD SP origin-form SP HTTP/1.1 CRLF`, a known upper-case method, a target
// of visible ASCII starting with `/`, header lines `token ":" OWS value OWS CRLF` with
// values of SP/HTAB/VCHAR, exactly one Host, at most one Content-Length (digits)
// or one `Transfer-Encoding: chunked`, never both, no Upgrade, no Expect, the whole head
// within MAX_HEAD_BYTES.
//
// The header object is built the way node's IncomingMessage builds `headers` (the
// pipeline, policies and metrics read it as such): a few single-valued headers keep their
// first value, set-cookie is an array, cookie joins with `; `, every other repeated header
// joins with `, `.

import { TCHAR } from './chars.ts';

/** Buffer#latin1Slice: node's own fast path for one-byte strings (not in the typings). */
export function latin1(buf: Buffer, start: number, end: number): string {
  return (buf as unknown as { latin1Slice(s: number, e: number): string }).latin1Slice(start, end);
}

/** Node's maxHeaderSize on the plaintext port (listener.ts): beyond it node answers 431. */
export const MAX_HEAD_BYTES = 60 * 1024;

export const BODY_NONE = 0;
export const BODY_LENGTH = 1;
export const BODY_CHUNKED = 2;

export interface RequestHead {
  method: string;
  url: string;
  /** Lower-case names, node's join rules. */
  headers: Record<string, string | string[]>;
  /** Names as received, then values, alternating (node's rawHeaders). */
  rawHeaders: string[];
  bodyKind: number;
  /** BODY_LENGTH: the declared length. */
  contentLength: number;
  /** `Connection: close` was sent: the connection ends after this exchange. */
  close: boolean;
  /** Bytes of the head, CRLFCRLF included. */
  length: number;
}

export const INCOMPLETE = 0;
export const FALLBACK = 1;

const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

/** Header value bytes: HTAB, SP, VCHAR. obs-text (0x80+) is legal but rare: node decides. */
const VCHAR = new Uint8Array(256);
VCHAR[9] = 1;
for (let c = 32; c <= 126; c++) VCHAR[c] = 1;

const PROTO_NAMES: ReadonlySet<string> = new Set(Object.getOwnPropertyNames(Object.prototype).map((n) => n.toLowerCase()));

/** Node keeps the first value of these and drops repeats (_http_incoming.js matchKnownFields). */
const FIRST_WINS: ReadonlySet<string> = new Set([
  'content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization',
  'proxy-authorization', 'if-modified-since', 'if-unmodified-since', 'from', 'location',
  'max-forwards', 'retry-after', 'etag', 'last-modified', 'server', 'age', 'expires',
]);

/** Heads fit in one read; beyond this much buffered input, the head's end is looked up first. */
const DECODE_ALL = 8 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Parses the head starting at `start` in `buf[start, end)`. Returns the head, INCOMPLETE
 * (valid so far, CRLFCRLF not seen yet, within the size limit) or FALLBACK.
 *
 * The bytes are decoded once (latin1: one character per byte, so string offsets are byte
 * offsets): one native call per head instead of one per method, target, header name and
 * value; the scanning reads the bytes.
 */
export function parseRequestHead(buf: Buffer, start: number, end: number): RequestHead | typeof INCOMPLETE | typeof FALLBACK {
  let stop = Math.min(end, start + MAX_HEAD_BYTES);
  if (stop - start > DECODE_ALL) {
    // A body or pipelined requests behind the head: decode only the head when its end is there.
    const e = buf.indexOf(HEAD_END, start);
    if (e >= 0 && e + 4 <= stop) stop = e + 4;
  }
  return parseHeadText(latin1(buf, start, stop), buf, start, end - start >= MAX_HEAD_BYTES);
}

/**
 * `t` is `b[base, base + t.length)` decoded: the scans read bytes from `b` (a typed-array
 * read is over twice as fast as charCodeAt, which counts for long values — a JWT is ~700
 * bytes) and the strings are sliced from `t`. `full`: the input is already as long as a
 * head may be (no more bytes would help).
 */
function parseHeadText(t: string, b: Buffer, base: number, full: boolean): RequestHead | typeof INCOMPLETE | typeof FALLBACK {
  const limit = t.length;
  const more = full ? FALLBACK : INCOMPLETE;
  let i = 0;

  // Method: upper-case letters up to SP.
  while (i < limit) {
    const c = b[base + i];
    if (c === 32) break;
    if (c < 65 || c > 90 || i > 7) return FALLBACK;
    i++;
  }
  if (i >= limit) return more;
  const method = knownMethod(t, i);
  if (method === null) return FALLBACK;
  i++;

  // Origin-form target: `/` then visible ASCII.
  const urlStart = i;
  if (i < limit && b[base + i] !== 47) return FALLBACK;
  while (i < limit) {
    const c = b[base + i];
    if (c === 32) break;
    if (c < 0x21 || c > 0x7e) return FALLBACK;
    i++;
  }
  if (i + VERSION_TEXT.length > limit) return full ? FALLBACK : VERSION_TEXT.startsWith(t.slice(i)) ? INCOMPLETE : FALLBACK;
  if (!t.startsWith(VERSION_TEXT, i)) return FALLBACK;
  const url = t.slice(urlStart, i);
  i += VERSION_TEXT.length;

  const headers: Record<string, string | string[]> = {};
  const rawHeaders: string[] = [];
  let hosts = 0;
  let contentLength = -1;
  let chunked = false;
  let teSeen = false;
  let close = false;
  for (;;) {
    if (i + 1 >= limit) return more;
    if (b[base + i] === 13) {
      if (b[base + i + 1] !== 10) return FALLBACK;
      i += 2;
      break;
    }
    // Name: tchar+ then `:` (no whitespace before the colon; obs-fold starts with SP/HTAB).
    const nameStart = i;
    while (i < limit && TCHAR[b[base + i]] === 1) i++;
    if (i >= limit) return more;
    if (b[base + i] !== 58 || i === nameStart) return FALLBACK;
    const rawName = t.slice(nameStart, i);
    i++;
    while (i < limit) {
      const c = b[base + i];
      if (c !== 32 && c !== 9) break;
      i++;
    }
    const valueStart = i;
    while (i < limit && VCHAR[b[base + i]] === 1) i++;
    // Trailing whitespace is not part of the value.
    let valueEnd = i;
    while (valueEnd > valueStart && (b[base + valueEnd - 1] === 32 || b[base + valueEnd - 1] === 9)) valueEnd--;
    if (i + 1 >= limit) return more;
    if (b[base + i] !== 13 || b[base + i + 1] !== 10) return FALLBACK;
    i += 2;
    const value = t.slice(valueStart, valueEnd);
    const name = lowerName(rawName);
    rawHeaders.push(rawName, value);
    switch (name) {
      case 'host':
        hosts++;
        break;
      case 'content-length':
        if (contentLength >= 0 || !digits(value)) return FALLBACK;
        contentLength = Number(value);
        break;
      case 'transfer-encoding':
        if (teSeen || value.toLowerCase() !== 'chunked') return FALLBACK;
        teSeen = true;
        chunked = true;
        break;
      case 'connection': {
        const v = value.toLowerCase();
        if (v === 'close') close = true;
        else if (v !== 'keep-alive') {
          for (const x of v.split(',')) {
            const tok = x.trim();
            if (tok === 'close') close = true;
            else if (tok === 'upgrade') return FALLBACK;
          }
        }
        break;
      }
      case 'upgrade': case 'expect': case 'http2-settings':
        return FALLBACK;
    }
    // `constructor`, `__proto__`, `toString`…: names that collide with what every object
    // inherits are left to node rather than trusted to a plain object here.
    if (PROTO_NAMES.has(name)) return FALLBACK;
    addHeader(headers, name, value);
  }
  if (hosts !== 1 || (chunked && contentLength >= 0)) return FALLBACK;
  return {
    method,
    url,
    headers,
    rawHeaders,
    bodyKind: chunked ? BODY_CHUNKED : contentLength > 0 ? BODY_LENGTH : BODY_NONE,
    contentLength: contentLength > 0 ? contentLength : 0,
    close,
    length: i,
  };
}

const VERSION_TEXT = ' HTTP/1.1\r\n';

/** The method as one of the constant strings of METHODS; null for anything else. */
function knownMethod(t: string, len: number): string | null {
  switch (len) {
    case 3:
      if (t.startsWith('GET')) return 'GET';
      if (t.startsWith('PUT')) return 'PUT';
      return null;
    case 4:
      if (t.startsWith('POST')) return 'POST';
      if (t.startsWith('HEAD')) return 'HEAD';
      return null;
  }
  const m = t.slice(0, len);
  return METHODS.has(m) ? m : null;
}

/**
 * Lower-cased header name; the usual spellings of the usual names map straight to their
 * constant (internalised) lower-case strings, which later property accesses find faster.
 */
function lowerName(raw: string): string {
  switch (raw) {
    case 'Host': case 'host': return 'host';
    case 'User-Agent': case 'user-agent': return 'user-agent';
    case 'Accept': case 'accept': return 'accept';
    case 'Accept-Encoding': case 'accept-encoding': return 'accept-encoding';
    case 'Accept-Language': case 'accept-language': return 'accept-language';
    case 'Connection': case 'connection': return 'connection';
    case 'Content-Type': case 'content-type': return 'content-type';
    case 'Content-Length': case 'content-length': return 'content-length';
    case 'Authorization': case 'authorization': return 'authorization';
    case 'Cookie': case 'cookie': return 'cookie';
  }
  return raw.toLowerCase();
}

function digits(v: string): boolean {
  // Up to 15 digits: any length a Number holds exactly.
  if (v.length === 0 || v.length > 15) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

function addHeader(h: Record<string, string | string[]>, name: string, value: string): void {
  const cur = h[name];
  if (cur === undefined) {
    h[name] = name === 'set-cookie' ? [value] : value;
    return;
  }
  if (name === 'set-cookie') (cur as string[]).push(value);
  else if (name === 'cookie') h[name] = `${cur as string}; ${value}`;
  else if (!FIRST_WINS.has(name)) h[name] = `${cur as string}, ${value}`;
}

/** node's headersDistinct: every value of every header, lower-case names. */
export function distinctOf(raw: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const cur = out[name];
    if (cur === undefined) out[name] = [raw[i + 1]]; else cur.push(raw[i + 1]);
  }
  return out;
}
