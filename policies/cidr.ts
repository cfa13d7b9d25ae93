// IP addresses and CIDR blocks as numbers, for authorization's ipBlocks / remoteIpBlocks /
// source.ip / remote.ip. Blocks are parsed once when config is applied; a request's address
// is parsed into a reusable IpAddr (no allocation) and compared word by word.
//
// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports for an IPv4 peer)
// is turned into plain IPv4, in addresses and in blocks written inside ::ffff:0:0/96, so a
// rule on `10.0.0.0/8` holds whichever way the socket spells the peer. Otherwise the two
// families stay apart as in Envoy: `::/0` does not cover IPv4 clients.
//
// Parsing is as strict as Go's netip (what Istio validates with): no leading zeros in IPv4
// octets (`010.0.0.1` would be octal to some parsers and decimal to others), no zone in a
// block, prefix length within the family. Host bits after the prefix are masked off, as
// Envoy does with `10.0.0.1/8`.

export type IpFamily = 0 | 4 | 6;

/** A parsed address: family 0 when the text was not an address. IPv4 sits in w0. */
export class IpAddr {
  family: IpFamily = 0;
  w0 = 0;
  w1 = 0;
  w2 = 0;
  w3 = 0;
}

export interface Cidr {
  family: 4 | 6;
  prefix: number;
  /** Network words (masked), int32. IPv4 uses w0 only. */
  w0: number; w1: number; w2: number; w3: number;
  m0: number; m1: number; m2: number; m3: number;
}

const groups = new Array<number>(8).fill(0);

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Dotted quad in s[from, to) → uint32, or -1. */
function parseV4(s: string, from: number, to: number): number {
  let value = 0;
  let parts = 0;
  let i = from;
  while (parts < 4) {
    const start = i;
    let octet = 0;
    while (i < to) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      i++;
      if (i - start > 3) return -1;
    }
    if (i === start || octet > 255) return -1;
    if (i - start > 1 && s.charCodeAt(start) === 48) return -1; // leading zero
    value = value * 256 + octet;
    parts++;
    if (parts < 4) {
      if (i >= to || s.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === to ? value : -1;
}

/** IPv6 text in s[from, to) into `groups` (8 × 16 bits). False when malformed. */
function parseV6(s: string, from: number, to: number): boolean {
  let gi = 0;
  let gap = -1;
  let i = from;
  if (to - from < 2) return false;
  if (s.charCodeAt(i) === 58) {
    if (s.charCodeAt(i + 1) !== 58) return false;
    gap = 0;
    i += 2;
  }
  while (i < to) {
    const start = i;
    let val = 0;
    while (i < to) {
      const h = hexVal(s.charCodeAt(i));
      if (h < 0) break;
      val = val * 16 + h;
      i++;
    }
    if (i < to && s.charCodeAt(i) === 46) {
      // an embedded dotted quad takes the last two groups and ends the address
      if (gi > 6) return false;
      const v4 = parseV4(s, start, to);
      if (v4 < 0) return false;
      groups[gi++] = Math.floor(v4 / 65536);
      groups[gi++] = v4 % 65536;
      i = to;
      break;
    }
    const digits = i - start;
    if (digits === 0 || digits > 4 || gi >= 8) return false;
    groups[gi++] = val;
    if (i === to) break;
    if (s.charCodeAt(i) !== 58) return false;
    i++;
    if (i < to && s.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = gi;
      i++;
    } else if (i === to) {
      return false; // a single trailing colon
    }
  }
  if (gap < 0) return gi === 8;
  if (gi > 7) return false;
  // move the groups after `::` to the end and zero the gap
  const tail = gi - gap;
  for (let k = 0; k < tail; k++) groups[7 - k] = groups[gi - 1 - k];
  for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  return true;
}

function setMappedOrV6(out: IpAddr): void {
  const w0 = ((groups[0] << 16) | groups[1]) | 0;
  const w1 = ((groups[2] << 16) | groups[3]) | 0;
  const w2 = ((groups[4] << 16) | groups[5]) | 0;
  const w3 = ((groups[6] << 16) | groups[7]) | 0;
  if (w0 === 0 && w1 === 0 && w2 === 0xffff) {
    out.family = 4; out.w0 = w3; out.w1 = 0; out.w2 = 0; out.w3 = 0;
    return;
  }
  out.family = 6; out.w0 = w0; out.w1 = w1; out.w2 = w2; out.w3 = w3;
}

/**
 * Parses an address (IPv4, IPv6, IPv4-mapped IPv6 → IPv4; an IPv6 zone `%eth0` is ignored)
 * into `out`. Returns false (and family 0) when it is not an address.
 */
export function parseIp(text: string, out: IpAddr): boolean {
  out.family = 0;
  const len = text.length;
  if (len === 0 || len > 64) return false;
  if (text.indexOf(':') < 0) {
    const v4 = parseV4(text, 0, len);
    if (v4 < 0) return false;
    out.family = 4; out.w0 = v4 | 0; out.w1 = 0; out.w2 = 0; out.w3 = 0;
    return true;
  }
  let end = text.indexOf('%');
  if (end < 0) end = len;
  if (!parseV6(text, 0, end)) return false;
  setMappedOrV6(out);
  return true;
}

function maskWord(prefix: number, word: number): number {
  const bits = Math.min(32, Math.max(0, prefix - word * 32));
  return bits === 0 ? 0 : (-1 << (32 - bits)) | 0;
}

const scratch = new IpAddr();

/**
 * Parses `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128). Null when
 * malformed. A block inside ::ffff:0:0/96 becomes the IPv4 block it spells.
 */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  if (addr.indexOf('%') >= 0) return null;
  const isV6 = addr.indexOf(':') >= 0;
  let prefix = isV6 ? 128 : 32;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (p.length === 0 || p.length > 3) return null;
    let n = 0;
    for (let i = 0; i < p.length; i++) {
      const c = p.charCodeAt(i);
      if (c < 48 || c > 57) return null;
      n = n * 10 + (c - 48);
    }
    if (p.length > 1 && p.charCodeAt(0) === 48) return null;
    if (n > prefix) return null;
    prefix = n;
  }
  if (isV6) {
    if (!parseV6(addr, 0, addr.length)) return null;
    setMappedOrV6(scratch);
    // a mapped block narrower than the mapped range is an IPv4 block; a wider one stays IPv6
    if (scratch.family === 4 && prefix < 96) {
      scratch.family = 6;
      scratch.w3 = scratch.w0; scratch.w0 = 0; scratch.w1 = 0; scratch.w2 = 0xffff;
    } else if (scratch.family === 4) {
      prefix -= 96;
    }
  } else if (!parseIp(addr, scratch)) {
    return null;
  }
  const family = scratch.family as 4 | 6;
  const m0 = maskWord(prefix, 0);
  const m1 = family === 4 ? 0 : maskWord(prefix, 1);
  const m2 = family === 4 ? 0 : maskWord(prefix, 2);
  const m3 = family === 4 ? 0 : maskWord(prefix, 3);
  return {
    family, prefix,
    w0: scratch.w0 & m0, w1: scratch.w1 & m1, w2: scratch.w2 & m2, w3: scratch.w3 & m3,
    m0, m1, m2, m3,
  };
}

export function cidrContains(c: Cidr, ip: IpAddr): boolean {
  if (ip.family !== c.family) return false;
  return ((ip.w0 & c.m0) === c.w0) && ((ip.w1 & c.m1) === c.w1)
    && ((ip.w2 & c.m2) === c.w2) && ((ip.w3 & c.m3) === c.w3);
}

/** A compiled list of blocks (ORed). Single IPv4 addresses go into a set, as lists of them are common. */
export class CidrSet {
  readonly hosts4: Set<number>;
  readonly blocks: Cidr[];

  constructor(cidrs: readonly Cidr[]) {
    this.hosts4 = new Set();
    this.blocks = [];
    for (const c of cidrs) {
      if (c.family === 4 && c.prefix === 32) this.hosts4.add(c.w0);
      else this.blocks.push(c);
    }
  }

  contains(ip: IpAddr): boolean {
    if (ip.family === 0) return false;
    if (ip.family === 4 && this.hosts4.size > 0 && this.hosts4.has(ip.w0)) return true;
    const blocks = this.blocks;
    for (let i = 0; i < blocks.length; i++) {
      if (cidrContains(blocks[i], ip)) return true;
    }
    return false;
  }
}
