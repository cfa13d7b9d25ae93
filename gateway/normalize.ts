// Request-target normalisation, as Envoy does it for Istio's default `BASE` setting
// (normalize_path on, merge_slashes off, escaped slashes kept). Route matching, policy and
// the path sent upstream all see the same normalised path, so a rule on `/admin` cannot be
// skipped with `/public/../admin`, `/%2e%2e/admin` or `/admin#x` [CVE-2021-39156].

export interface NormalizeOptions {
  /** Collapse `//` into `/` (Istio's MERGE_SLASHES); off by default as in Istio. */
  mergeSlashes: boolean;
}

export const DEFAULT_NORMALIZE: NormalizeOptions = { mergeSlashes: false };

export interface NormalizedTarget {
  /** Normalised path, always starting with `/`. */
  path: string;
  /** Query string without the `?`, `''` when none. */
  query: string;
}

const CH_PERCENT = 37;
const CH_SLASH = 47;
const CH_BACKSLASH = 92;
const CH_DOT = 46;
const CH_HASH = 35;
const CH_QUERY = 63;

/**
 * Normalises an origin-form request target (`/path?query#fragment`). Returns null when the
 * target must be refused with 400: not starting with `/`, `%00`, or a raw control character.
 */
export function normalizeTarget(target: string, opts: NormalizeOptions = DEFAULT_NORMALIZE): NormalizedTarget | null {
  const len = target.length;
  if (len === 0 || target.charCodeAt(0) !== CH_SLASH) return null;
  // Fast path: most targets need no change. One scan decides; only targets with `%`, `\`,
  // `#`, a dot right after a slash, or (when merging) a double slash take the slow path.
  let end = len;
  let queryAt = -1;
  let slow = false;
  let prev = 0;
  for (let i = 0; i < len; i++) {
    const c = target.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return null;
    if (c === CH_QUERY) { queryAt = i; break; }
    if (c === CH_HASH) { end = i; slow = true; break; }
    if (c === CH_PERCENT || c === CH_BACKSLASH) slow = true;
    else if (c === CH_DOT && prev === CH_SLASH) slow = true;
    else if (c === CH_SLASH && prev === CH_SLASH && opts.mergeSlashes) slow = true;
    prev = c;
  }
  let query = '';
  if (queryAt >= 0) {
    end = queryAt;
    let qEnd = len;
    for (let i = queryAt + 1; i < len; i++) {
      const c = target.charCodeAt(i);
      if (c < 0x20 || c === 0x7f) return null;
      if (c === CH_HASH) { qEnd = i; break; }
    }
    query = target.slice(queryAt + 1, qEnd);
  }
  if (!slow) return { path: end === len ? target : target.slice(0, end), query };
  const decoded = decodeUnreserved(target, end);
  if (decoded === null) return null;
  let path = removeDotSegments(decoded);
  if (opts.mergeSlashes) path = mergeSlashes(path);
  return { path, query };
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

function isUnreserved(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39)
    || b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
}

const HEX = '0123456789ABCDEF';

/**
 * Decodes percent-encoded unreserved characters (RFC 3986 2.3: they are equivalent to
 * their decoded form, so `%2e` is a dot and takes part in dot-segment removal), upper-cases
 * the hex of every other escape, keeps `%2F`/`%5C` encoded (Istio's default: decoding them
 * would let `/admin%2Fx` reach a rule on `/admin/x` or split a segment), and turns `\` into
 * `/` as Envoy does. Null on `%00`.
 */
function decodeUnreserved(s: string, end: number): string | null {
  let out = '';
  let from = 0;
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === CH_BACKSLASH) {
      out += s.slice(from, i) + '/';
      from = i + 1;
    } else if (c === CH_PERCENT) {
      if (i + 2 >= end) continue; // truncated escape: kept as written
      const h = hexVal(s.charCodeAt(i + 1));
      const l = hexVal(s.charCodeAt(i + 2));
      if (h < 0 || l < 0) continue; // not an escape: kept as written
      const b = h * 16 + l;
      if (b === 0) return null;
      out += s.slice(from, i) + (isUnreserved(b) ? String.fromCharCode(b) : '%' + HEX[h] + HEX[l]);
      from = i + 3;
      i += 2;
    }
  }
  return from === 0 ? s.slice(0, end) : out + s.slice(from, end);
}

/** RFC 3986 5.2.4 on an absolute path; `..` at the root stays at the root. */
export function removeDotSegments(path: string): string {
  const segs = path.split('/');
  // segs[0] is '' (the path starts with '/').
  const out: string[] = [];
  const last = segs.length - 1;
  for (let i = 1; i <= last; i++) {
    const s = segs[i];
    if (s === '.') {
      if (i === last) out.push('');
    } else if (s === '..') {
      if (out.length > 0) out.pop();
      if (i === last) out.push('');
    } else {
      out.push(s);
    }
  }
  return '/' + out.join('/');
}

function mergeSlashes(path: string): string {
  let out = '';
  let prevSlash = false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === CH_SLASH) {
      if (prevSlash) continue;
      prevSlash = true;
    } else {
      prevSlash = false;
    }
    out += path[i];
  }
  return out;
}
