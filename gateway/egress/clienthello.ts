// Reads the server name (SNI) out of the first bytes a client sends through a CONNECT
// tunnel, before any of them is forwarded, so the egress policy can refuse a tunnel opened
// to an allowed name that carries a ClientHello for another one (domain fronting).
//
// Strict on purpose: whatever does not parse as RFC 8446 / RFC 6066 says (a length that
// overruns its container, a second server_name extension, two host names, a name with bytes
// a DNS name cannot have) is reported as `malformed`, and the caller treats the hello as one
// without SNI. The parser never throws and never reads past what it was given.
//
// A ClientHello may span several TLS records (large key shares can push it past one), so
// the handshake message is reassembled from consecutive handshake records, up to
// MAX_CLIENT_HELLO bytes: the caller stops waiting there.

/** The most a ClientHello may take (handshake body); RFC 8446 records carry 2^14 bytes. */
export const MAX_CLIENT_HELLO = 16 * 1024;

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
const RECORD_HEADER = 5;
const MAX_RECORD = 16384 + 256;

export type HelloResult =
  /** More bytes are needed to tell. */
  | { kind: 'incomplete' }
  /** These are not TLS handshake bytes (a plain TCP protocol). */
  | { kind: 'not-tls' }
  /** A complete ClientHello; `sni` null when it has none (or it was malformed). */
  | { kind: 'tls'; sni: string | null; malformed: boolean }
  /** Starts like TLS but cannot be a ClientHello (or is larger than MAX_CLIENT_HELLO). */
  | { kind: 'bad-tls'; why: string };

const INCOMPLETE: HelloResult = { kind: 'incomplete' };
const NOT_TLS: HelloResult = { kind: 'not-tls' };

/**
 * Classifies the bytes seen so far. Call again with more bytes while it says `incomplete`.
 * Only the first byte decides TLS or not, as TLS clients always open with a handshake record.
 */
export function parseClientHello(buf: Buffer): HelloResult {
  if (buf.length === 0) return INCOMPLETE;
  if (buf[0] !== RECORD_HANDSHAKE) return NOT_TLS;
  // Reassemble the handshake message from the records' payloads.
  let need = -1;
  let off = 0;
  const parts: Buffer[] = [];
  let have = 0;
  while (need < 0 || have < need) {
    if (buf.length - off < RECORD_HEADER) return INCOMPLETE;
    if (buf[off] !== RECORD_HANDSHAKE) return { kind: 'bad-tls', why: 'a non-handshake record interrupts the ClientHello' };
    // Legacy record version: 0x0301 (TLS 1.0) to 0x0303; SSLv3 and earlier are refused.
    if (buf[off + 1] !== 3 || buf[off + 2] < 1 || buf[off + 2] > 4) return { kind: 'bad-tls', why: `record version ${buf[off + 1]}.${buf[off + 2]} is not TLS` };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > MAX_RECORD) return { kind: 'bad-tls', why: `record length ${len} is not valid` };
    if (buf.length - off - RECORD_HEADER < len) {
      // The record is not all here yet; give up early only when it cannot fit the bound.
      if (have + len > MAX_CLIENT_HELLO + 4) return { kind: 'bad-tls', why: `ClientHello is larger than ${MAX_CLIENT_HELLO} bytes` };
      return INCOMPLETE;
    }
    parts.push(buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len));
    have += len;
    off += RECORD_HEADER + len;
    if (need < 0 && have >= 4) {
      const first = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      if (first[0] !== HANDSHAKE_CLIENT_HELLO) return { kind: 'bad-tls', why: `first handshake message is type ${first[0]}, not a ClientHello` };
      need = 4 + ((first[1] << 16) | (first[2] << 8) | first[3]);
      if (need - 4 > MAX_CLIENT_HELLO) return { kind: 'bad-tls', why: `ClientHello is larger than ${MAX_CLIENT_HELLO} bytes` };
    }
  }
  const body = parts.length === 1 ? parts[0] : Buffer.concat(parts, have);
  return readHello(body.subarray(4, need));
}

/** The ClientHello body (after the 4-byte handshake header). */
function readHello(b: Buffer): HelloResult {
  const n = b.length;
  // legacy_version(2) random(32)
  let p = 34;
  if (p + 1 > n) return malformed();
  const sid = b[p];
  if (sid > 32) return malformed();
  p += 1 + sid;
  if (p + 2 > n) return malformed();
  const suites = b.readUInt16BE(p);
  if (suites < 2 || (suites & 1) !== 0) return malformed();
  p += 2 + suites;
  if (p + 1 > n) return malformed();
  const comp = b[p];
  if (comp < 1) return malformed();
  p += 1 + comp;
  if (p > n) return malformed();
  // No extensions at all: valid (old clients), and no SNI.
  if (p === n) return { kind: 'tls', sni: null, malformed: false };
  if (p + 2 > n) return malformed();
  const extLen = b.readUInt16BE(p);
  p += 2;
  if (p + extLen !== n) return malformed();
  let sni: string | null = null;
  let seen = false;
  while (p < n) {
    if (p + 4 > n) return malformed();
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    p += 4;
    if (p + len > n) return malformed();
    if (type === EXT_SERVER_NAME) {
      // RFC 8446 4.2: no extension type may appear twice.
      if (seen) return malformed();
      seen = true;
      const name = readServerName(b, p, p + len);
      if (name === undefined) return malformed();
      sni = name;
    }
    p += len;
  }
  return { kind: 'tls', sni, malformed: false };
}

/** The host_name of a server_name extension; null for an empty list, undefined when malformed. */
function readServerName(b: Buffer, start: number, end: number): string | null | undefined {
  if (end - start < 2) return undefined;
  const listLen = b.readUInt16BE(start);
  let p = start + 2;
  if (p + listLen !== end) return undefined;
  let host: string | null = null;
  while (p < end) {
    if (p + 3 > end) return undefined;
    const type = b[p];
    const len = b.readUInt16BE(p + 1);
    p += 3;
    if (p + len > end) return undefined;
    if (type === NAME_TYPE_HOST) {
      // RFC 6066 3: at most one name of each type.
      if (host !== null) return undefined;
      if (len === 0 || len > 253) return undefined;
      for (let i = p; i < p + len; i++) {
        const c = b[i];
        const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f;
        if (!ok) return undefined;
      }
      host = b.toString('latin1', p, p + len).toLowerCase();
      // One trailing dot is the same name; anything else the policy checks as a DNS name.
      if (host.endsWith('.')) host = host.slice(0, -1);
      if (host === '') return undefined;
    }
    p += len;
  }
  return host;
}

function malformed(): HelloResult {
  return { kind: 'tls', sni: null, malformed: true };
}
