// Which addresses a config-supplied URL may reach (GHSA-fgw5-hp8f-xfhc: a jwksUri aimed at
// 169.254.169.254 turns the gateway into a reader of cloud credentials). The check runs on
// the literal host, on every address DNS returns, and on the socket's peer address once
// connected, so a name that resolves publicly once and privately later (DNS rebinding)
// still cannot reach an internal address.
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';

interface Range { net: string; prefix: number; why: string }

const V4_RANGES: Range[] = [
  { net: '0.0.0.0', prefix: 8, why: 'unspecified' },
  { net: '10.0.0.0', prefix: 8, why: 'private' },
  { net: '100.64.0.0', prefix: 10, why: 'shared address space (CGNAT)' },
  { net: '127.0.0.0', prefix: 8, why: 'loopback' },
  { net: '169.254.0.0', prefix: 16, why: 'link-local (cloud metadata)' },
  { net: '172.16.0.0', prefix: 12, why: 'private' },
  { net: '192.0.0.0', prefix: 24, why: 'IETF protocol assignments' },
  { net: '192.168.0.0', prefix: 16, why: 'private' },
  { net: '198.18.0.0', prefix: 15, why: 'benchmarking' },
  { net: '224.0.0.0', prefix: 4, why: 'multicast' },
  { net: '240.0.0.0', prefix: 4, why: 'reserved' },
];

const V6_RANGES: Range[] = [
  { net: '::', prefix: 128, why: 'unspecified' },
  { net: '::1', prefix: 128, why: 'loopback' },
  { net: 'fe80::', prefix: 10, why: 'link-local' },
  { net: 'fec0::', prefix: 10, why: 'site-local' },
  { net: 'fc00::', prefix: 7, why: 'unique local (private)' },
  { net: 'ff00::', prefix: 8, why: 'multicast' },
  { net: 'fd00:ec2::254', prefix: 128, why: 'cloud metadata' },
];

// One BlockList per reason keeps the message specific ("loopback", not just "refused").
function buildLists(ranges: Range[], family: 'ipv4' | 'ipv6'): { list: BlockList; why: string }[] {
  return ranges.map((r) => {
    const list = new BlockList();
    list.addSubnet(r.net, r.prefix, family);
    return { list, why: r.why };
  });
}
const V4_LISTS = buildLists(V4_RANGES, 'ipv4');
const V6_LISTS = buildLists(V6_RANGES, 'ipv6');

/** Host names of metadata services and the local machine, refused before any lookup. */
const FORBIDDEN_NAMES = new Set([
  'localhost',
  'metadata',
  'metadata.google.internal',
  'metadata.goog',
  'metadata.azure.internal',
  'instance-data',
  'instance-data.ec2.internal',
  'metadata.tencentyun.com',
  'metadata.platformequinix.com',
]);

function v4FromHex(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Expands an IPv6 literal to its eight 16-bit groups; null when it is not one. */
function ipv6Groups(ip: string): number[] | null {
  let s = ip;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two groups.
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const q = tail.split('.').map(Number);
    if (q.length !== 4 || q.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return null;
    s = `${s.slice(0, lastColon + 1)}${((q[0] << 8) | q[1]).toString(16)}:${((q[2] << 8) | q[3]).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  const fill = 8 - head.length - rest.length;
  if (halves.length === 1 ? head.length !== 8 : fill < 0) return null;
  const groups = [...head, ...new Array(halves.length === 2 ? fill : 0).fill(0), ...rest];
  return groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff) ? null : groups;
}

/**
 * Why an address must not be reached without the explicit opt-in, or null when it is a
 * public address. IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, compatible)
 * are judged by the embedded address.
 */
export function privateAddressReason(ip: string): string | null {
  const family = isIP(ip);
  if (family === 4) {
    for (const { list, why } of V4_LISTS) if (list.check(ip, 'ipv4')) return why;
    if (ip === '255.255.255.255') return 'broadcast';
    return null;
  }
  if (family !== 6) return 'not an IP address';
  const g = ipv6Groups(ip);
  if (!g) return 'not an IP address';
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  let embedded: string | null = null;
  if (zeros(0, 5) && g[5] === 0xffff) embedded = v4FromHex(g[6], g[7]); // ::ffff:a.b.c.d
  else if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) embedded = v4FromHex(g[6], g[7]); // NAT64
  else if (g[0] === 0x2002) embedded = v4FromHex(g[1], g[2]); // 6to4
  else if (zeros(0, 6) && (g[6] !== 0 || g[7] > 1)) embedded = v4FromHex(g[6], g[7]); // ::a.b.c.d
  if (embedded) {
    const why = privateAddressReason(embedded);
    return why ? `${why} (IPv4 ${embedded} inside IPv6)` : null;
  }
  const canonical = g.map((x) => x.toString(16)).join(':');
  for (const { list, why } of V6_LISTS) if (list.check(canonical, 'ipv6')) return why;
  return null;
}

/** Why a host name is refused before resolving it, or null. */
export function forbiddenHostReason(host: string): string | null {
  const h = host.toLowerCase().replace(/\.$/, '').replace(/^\[|\]$/g, '');
  if (isIP(h)) return privateAddressReason(h);
  if (FORBIDDEN_NAMES.has(h) || h.endsWith('.localhost')) return 'a local or metadata host name';
  return null;
}

export class SsrfError extends Error {
  override name = 'SsrfError';
}

/**
 * A `lookup` for net/tls connect options that resolves every address and fails when any of
 * them is private: a name mixing public and private answers is treated as hostile.
 */
export function makePublicOnlyLookup(resolve: typeof dnsLookup = dnsLookup): LookupFunction {
  return function publicOnlyLookup(hostname, options, callback) {
    guardedResolve(resolve, hostname, options, callback);
  };
}

export const publicOnlyLookup: LookupFunction = makePublicOnlyLookup();

function guardedResolve(resolve: typeof dnsLookup, hostname: string, options: Parameters<LookupFunction>[1], callback: Parameters<LookupFunction>[2]): void {
  resolve(hostname, { family: options.family, hints: options.hints, all: true }, (err, addresses: LookupAddress[]) => {
    if (err) { callback(err, '', 0); return; }
    for (const a of addresses) {
      const why = privateAddressReason(a.address);
      if (why) {
        callback(new SsrfError(`${hostname} resolves to ${a.address} (${why})`), '', 0);
        return;
      }
    }
    if (addresses.length === 0) { callback(new Error(`${hostname} has no addresses`), '', 0); return; }
    // Node calls lookup with all: true when it races address families (autoSelectFamily).
    if (options.all) (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
    else callback(null, addresses[0].address, addresses[0].family);
  });
}
