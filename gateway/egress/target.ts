// Where a forward-proxy request wants to go: the authority of `CONNECT host:port`, of an
// absolute-form `GET http://host[:port]/path`, or the Host header of an origin-form request.
// Parsed strictly before the policy sees it: the allowlist compares names, so a target that
// two parsers could read differently (userinfo, a numeric name some resolvers take for an
// address, a port with a sign or leading garbage) is refused with 400 instead of guessed at.
import net from 'node:net';

export interface Destination {
  /** Lower-case host name, or an IP literal without brackets. */
  host: string;
  port: number;
  /** `host:port` as the request names it, IPv6 in brackets; what Host is set to upstream. */
  authority: string;
  /** The host is an IP literal. */
  ip: boolean;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; why: string };

const MAX_NAME = 253;

function fail<T>(why: string): Parsed<T> {
  return { ok: false, why };
}

/** Null when `name` is a host name the proxy will look up; else why not. */
function nameProblem(name: string): string | null {
  if (name.length === 0) return 'has no host';
  if (name.length > MAX_NAME) return `host is longer than ${MAX_NAME} characters`;
  const labels = name.split('.');
  for (const l of labels) {
    if (l.length === 0) return 'host has an empty label';
    if (l.length > 63) return 'host has a label longer than 63 characters';
    if (!/^[a-z0-9_-]+$/.test(l)) return 'host contains characters not allowed in a host name';
    if (l.startsWith('-') || l.endsWith('-')) return 'host has a label that starts or ends with "-"';
  }
  const last = labels[labels.length - 1];
  // `127.1`, `2130706433`, `0x7f.1`: addresses to some resolvers, names to others.
  if (/^[0-9]+$/.test(last) || /^0x/.test(last)) return 'host is numeric but not an IPv4 address in dotted-quad form';
  return null;
}

function parsePort(text: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) return -1;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : -1;
}

/**
 * `host:port`, `[v6]:port`; `defaultPort` > 0 makes the port optional (HTTP: 80), 0 makes
 * it required (CONNECT).
 */
export function parseAuthority(raw: string, defaultPort: number): Parsed<Destination> {
  if (raw.length === 0) return fail('is empty');
  if (raw.length > MAX_NAME + 8) return fail('is too long');
  if (raw.includes('@')) return fail('has userinfo ("user@"); name only the host and port');
  let hostText: string;
  let portText: string | null;
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close < 0) return fail('has an IPv6 address without its closing "]"');
    hostText = raw.slice(1, close);
    const rest = raw.slice(close + 1);
    if (rest === '') portText = null;
    else if (rest.startsWith(':')) portText = rest.slice(1);
    else return fail('has characters after the IPv6 address that are not ":port"');
    if (net.isIPv6(hostText) === false || hostText.includes('%')) return fail(`[${hostText}] is not an IPv6 address`);
  } else {
    const colon = raw.lastIndexOf(':');
    if (colon >= 0 && raw.indexOf(':') !== colon) return fail('has an IPv6 address without brackets (write [addr]:port)');
    hostText = colon < 0 ? raw : raw.slice(0, colon);
    portText = colon < 0 ? null : raw.slice(colon + 1);
  }
  let port: number;
  if (portText === null) {
    if (defaultPort <= 0) return fail('has no port (write host:port)');
    port = defaultPort;
  } else {
    port = parsePort(portText);
    if (port < 0) return fail(`port ${JSON.stringify(portText)} is not a port number (1-65535)`);
  }
  let host = hostText.toLowerCase();
  let ip = net.isIP(host) !== 0;
  if (!ip) {
    if (host.endsWith('.')) host = host.slice(0, -1);
    const bad = nameProblem(host);
    if (bad !== null) return fail(bad);
    ip = false;
  }
  const shown = host.includes(':') ? `[${host}]` : host;
  return { ok: true, value: { host, port, authority: portText === null ? shown : `${shown}:${port}`, ip } };
}

export interface HttpTarget {
  dest: Destination;
  /** Origin-form path and query to send upstream (`/` when the URL had none). */
  path: string;
}

/**
 * The destination of a plain HTTP request to the forward proxy: absolute-form (`http://…`,
 * the authority wins over Host as RFC 9112 3.2.2 says) or origin-form with a Host header.
 */
export function parseHttpTarget(url: string, host: string | undefined): Parsed<HttpTarget> {
  if (url.startsWith('/')) {
    if (host === undefined || host === '') return fail('origin-form request without a Host header names no destination');
    const a = parseAuthority(host, 80);
    if (!a.ok) return fail(`Host ${JSON.stringify(host)} ${a.why}`);
    return { ok: true, value: { dest: a.value, path: url } };
  }
  const lower = url.slice(0, 8).toLowerCase();
  if (lower.startsWith('https://')) {
    return fail('https:// URLs cannot be proxied as plain requests; open a tunnel with CONNECT (HTTPS_PROXY does)');
  }
  if (!lower.startsWith('http://')) {
    return fail(`request target ${JSON.stringify(url.slice(0, 64))} is neither an http:// URL nor a path`);
  }
  let end = 7;
  while (end < url.length) {
    const c = url.charCodeAt(end);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break;
    end++;
  }
  const a = parseAuthority(url.slice(7, end), 80);
  if (!a.ok) return fail(`URL authority ${JSON.stringify(url.slice(7, end))} ${a.why}`);
  const rest = url.slice(end);
  return { ok: true, value: { dest: a.value, path: rest.startsWith('/') ? rest : '/' + rest } };
}
