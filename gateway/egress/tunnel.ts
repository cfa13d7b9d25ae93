// `CONNECT host:port` through the egress forward proxy. In this order, and the order is
// the security of it:
//
//  1. authority    host name or IP literal, `[v6]:port`, port 1-65535; anything else 400.
//     policies     the proxy's JWT, authorization and rate-limit policies, on the CONNECT
//                  request (method CONNECT, host = target): 401/403/429 and close.
//  2. resolve      the host, with the process's Resolver (an IP literal is itself): the
//                  address is what `addresses` (CIDR) entries check and where we connect.
//  3. decide       on the CONNECT line, SNI unknown (protocol TLS: a TLS entry matches by
//                  host, a TCP entry by host or by address). Refused: 502 naming host, port
//                  and reason, then close. Else `200 Connection Established`.
//  4. peek         the client's first bytes, bounded in time and size, never forwarded yet.
//                  A ClientHello: decide again with its SNI, so a tunnel to an allowed name
//                  cannot carry a handshake for another (domain fronting). Not TLS: decide
//                  as TCP (only address-based or TCP entries carry opaque bytes). Refused:
//                  the connection is destroyed; the destination never saw a byte.
//  5. connect      to the resolved address (10 s), write the peeked bytes, then relay both
//                  ways with backpressure: client → destination by pipe(), destination →
//                  client by reads into a reused buffer (Downlink); nothing looks at the
//                  bytes. Half-close passes through (allowHalfOpen on both sides).
//
// A tunnel lives on the config version it was decided on: a push that removes its entry
// refuses new tunnels, while open ones keep going until either side closes them.
import net from 'node:net';
import type http from 'node:http';
import type { EgressDecision } from '../../policies/egress.ts';
import { writeSocketReply } from '../local-reply.ts';
import { checkPolicies, requestFacts } from '../policy.ts';
import type { TunnelBytes, TunnelFailure } from '../metrics.ts';
import { parseClientHello, MAX_CLIENT_HELLO, type HelloResult } from './clienthello.ts';
import { blockedBody, EGRESS_HEADER, noteDecision, shownDestination } from './decision.ts';
import type { ForwardProxy } from './proxy.ts';
import type { EgressRuntime } from './runtime.ts';
import { parseAuthority, type Destination } from './target.ts';

/** How long the client has, after 200, to send a complete ClientHello (or its first bytes). */
export const PEEK_TIMEOUT_MS = 10_000;
/** Bytes held while waiting: a ClientHello, its record headers, and a little slack. */
const MAX_PEEK_BYTES = MAX_CLIENT_HELLO + 1024;
export const CONNECT_TIMEOUT_MS = 10_000;
/** Envoy's tcp_proxy default: a tunnel with no traffic either way for an hour is closed. */
const IDLE_TIMEOUT_MS = 60 * 60 * 1000;
/** One read's worth from the destination (what libuv reads at most by default). */
const DOWNLINK_BUFFER = 64 * 1024;

const ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

export type TunnelSet = Set<Tunnel>;

/** One CONNECT from the 200 on: the client socket, and the upstream once connected. */
export class Tunnel implements TunnelBytes {
  readonly client: net.Socket;
  upstream: net.Socket | null = null;
  private readonly set: TunnelSet;
  private readonly rt: EgressRuntime;
  private counted = false;

  constructor(client: net.Socket, set: TunnelSet, rt: EgressRuntime) {
    this.client = client;
    this.set = set;
    this.rt = rt;
    set.add(this);
  }

  sent(): number { return this.upstream === null ? 0 : this.upstream.bytesWritten; }
  received(): number { return this.upstream === null ? 0 : this.upstream.bytesRead; }

  /** Both sides connected: counted as an active tunnel from now until it closes. */
  opened(): void {
    this.counted = true;
    this.rt.shared.metrics?.tunnelOpened(this);
  }

  destroy(): void {
    this.client.destroy();
    this.upstream?.destroy();
    this.done();
  }

  done(): void {
    if (!this.set.delete(this)) return;
    if (this.counted) this.rt.shared.metrics?.tunnelClosed(this);
  }
}

/**
 * Answers and closes. Whatever the client still sends is read and dropped (nothing after a
 * refused CONNECT is a request), and a client that never closes its side is cut after a
 * while instead of holding the socket.
 */
function refuseSocket(socket: net.Socket, status: number, body: string, extra: string): void {
  writeSocketReply(socket, status, body, extra);
  socket.resume();
  socket.setTimeout(5_000, () => socket.destroy());
}

/** The `connect` handler of the forward proxy's server. */
export function handleConnect(fp: ForwardProxy, rt: EgressRuntime, req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
  socket.on('error', () => { /* resets are normal; close handlers clean up */ });
  const url = req.url ?? '';
  const parsed = parseAuthority(url, 0);
  if (!parsed.ok) {
    rt.shared.log?.debug({ target: url.slice(0, 300), reason: parsed.why, client: req.socket.remoteAddress }, 'bad CONNECT target');
    refuseSocket(socket, 400, `forward proxy: CONNECT target ${JSON.stringify(url.slice(0, 300))} ${parsed.why}\n`, '');
    return;
  }
  const start = (): void => {
    connectResolved(fp, rt, req, socket, head, parsed.value).catch((err: unknown) => {
      rt.shared.log?.error({ err, target: url }, 'CONNECT failed');
      socket.destroy();
    });
  };
  const policies = rt.shared.policies;
  if (policies === null) return start();
  // The proxy's RequestAuthentication, AuthorizationPolicy and rate limits see the CONNECT
  // request as Envoy's HTTP filters do (method CONNECT, host = the target, no path): a
  // security team can say which sources may open tunnels to which hosts, before the
  // allowlist is even asked.
  const facts = requestFacts(req, policies, fp.boundPort, '', '', url);
  checkPolicies(policies, req, facts, null, null, (v) => {
    if (v.pass) return start();
    let extra = '';
    for (const [k, val] of Object.entries(v.headers)) extra += `${k}: ${val}\r\n`;
    rt.shared.log?.info({ host: parsed.value.host, port: parsed.value.port, status: v.status, client: req.socket.remoteAddress }, 'CONNECT refused by policy');
    refuseSocket(socket, v.status, v.body === '' ? '' : `${v.body}\n`, extra);
  });
}

async function connectResolved(fp: ForwardProxy, rt: EgressRuntime, req: http.IncomingMessage, socket: net.Socket, head: Buffer, dest: Destination): Promise<void> {
  const client = req.socket.remoteAddress;
  let address: string | null = dest.ip ? dest.host : null;
  /** Where the tunnel connects: the named port, or a STATIC endpoint's. */
  let dialPort = dest.port;
  let resolveError = '';
  if (address === null) {
    // Decided on the name alone: a name the allowlist refuses is not looked up at all, so a
    // blocked CONNECT cannot smuggle data out in a DNS query for it (unless an addresses
    // entry covers the port: then its address may still allow it).
    const byName = rt.policy.decide({ host: dest.host, port: dest.port, protocol: 'TLS', sni: null, address: null });
    if (!byName.allowed && !rt.policy.allowsByAddress(dest.port)) {
      noteDecision(rt, dest.host, dest.port, 'connect', byName, client, null);
      refuseSocket(socket, 502, blockedBody(dest.host, dest.port, byName.reason), `${EGRESS_HEADER}: blocked\r\n`);
      return;
    }
    // A STATIC ServiceEntry says where the host is: no lookup of the name, as Envoy's
    // STATIC cluster connects to its endpoints.
    const targets = byName.allowed ? byName.targets : null;
    if (targets !== null && targets !== undefined && targets.length > 0) {
      const t = targets.length === 1 ? targets[0] : targets[Math.floor(Math.random() * targets.length)];
      address = t.address;
      dialPort = t.port;
    }
  }
  if (address === null) {
    try {
      const all = await rt.resolver.resolve(dest.host);
      address = all[0] ?? null;
    } catch (e) {
      resolveError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    }
    if (socket.destroyed) return;
  }

  let d: EgressDecision;
  const forbidden = address === null ? null : fp.isSelf(address, dialPort)
    ? `${shownDestination(dest.host, dest.port)} is this forward proxy; the tunnel would loop back into it`
    : rt.guard.check(address, dialPort);
  if (forbidden !== null) {
    d = { allowed: false, audited: false, entry: null, resolution: null, location: null, reason: forbidden };
  } else {
    d = rt.policy.decide({ host: dest.host, port: dest.port, protocol: 'TLS', sni: null, address });
  }
  if (!d.allowed) {
    noteDecision(rt, dest.host, dest.port, 'connect', d, client, null);
    refuseSocket(socket, 502, blockedBody(dest.host, dest.port, d.reason), `${EGRESS_HEADER}: blocked\r\n`);
    return;
  }
  if (address === null) {
    noteDecision(rt, dest.host, dest.port, 'connect', d, client, null);
    rt.shared.metrics?.tunnelFailed('connect_error');
    rt.shared.log?.warn({ host: dest.host, port: dest.port, error: resolveError, client }, 'egress tunnel: cannot resolve the destination');
    refuseSocket(socket, 502, `egress to ${shownDestination(dest.host, dest.port)} failed: cannot resolve ${dest.host} (${resolveError})\n`, '');
    return;
  }

  const tunnel = new Tunnel(socket, fp.tunnels, rt);
  socket.on('close', () => { if (tunnel.upstream === null) tunnel.done(); });
  socket.write(ESTABLISHED);
  // An address a TCP entry allows may carry any bytes, TLS or not: nothing to peek at, and
  // protocols where the server speaks first (SMTP, MySQL) must not wait for a ClientHello.
  const opaque = rt.policy.decide({ host: dest.host, port: dest.port, protocol: 'TCP', sni: null, address });
  if (opaque.allowed && !opaque.audited) {
    noteDecision(rt, dest.host, dest.port, 'connect', opaque, client, null);
    dial(rt, tunnel, dest, address, dialPort, head);
    return;
  }
  peek(socket, head, (hello, bytes, timedOut) => afterPeek(rt, tunnel, dest, address, dialPort, d, hello, bytes, timedOut, client));
}

/**
 * Collects the client's first bytes until they are (or cannot be) a complete ClientHello,
 * then hands them over with the socket paused. `hello` null: the client sent nothing in
 * PEEK_TIMEOUT_MS (a protocol where the server speaks first).
 */
function peek(socket: net.Socket, head: Buffer, done: (hello: HelloResult | null, bytes: Buffer, timedOut: boolean) => void): void {
  let buf = head;
  let finished = false;
  const finish = (r: HelloResult | null, timedOut = false): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.pause();
    done(r, buf, timedOut);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    classify();
  };
  const classify = (): void => {
    const r = parseClientHello(buf);
    if (r.kind !== 'incomplete') return finish(r);
    if (buf.length > MAX_PEEK_BYTES) finish({ kind: 'bad-tls', why: `no complete ClientHello in the first ${MAX_PEEK_BYTES} bytes` });
  };
  const timer = setTimeout(() => {
    finish(buf.length === 0 ? null : { kind: 'bad-tls', why: `ClientHello incomplete after ${PEEK_TIMEOUT_MS / 1000} s` }, true);
  }, PEEK_TIMEOUT_MS);
  socket.on('data', onData);
  socket.once('close', () => { if (!finished) { finished = true; clearTimeout(timer); } });
  if (buf.length > 0) classify();
}

function refuse(rt: EgressRuntime, tunnel: Tunnel, dest: Destination, d: EgressDecision, client: string | undefined, sni: string | null, failure: TunnelFailure): void {
  noteDecision(rt, dest.host, dest.port, 'connect', d, client, sni);
  rt.shared.metrics?.tunnelFailed(failure);
  tunnel.destroy();
}

function afterPeek(rt: EgressRuntime, tunnel: Tunnel, dest: Destination, address: string, dialPort: number, first: EgressDecision, hello: HelloResult | null, bytes: Buffer, timedOut: boolean, client: string | undefined): void {
  if (tunnel.client.destroyed) return tunnel.done();
  let d: EgressDecision;
  let sni: string | null = null;
  if (hello !== null && hello.kind === 'bad-tls') {
    d = { ...first, allowed: false, audited: false, reason: `the tunnel's first bytes look like TLS but are not a ClientHello the proxy can check (${hello.why})` };
    return refuse(rt, tunnel, dest, d, client, null, timedOut ? 'clienthello_timeout' : 'clienthello_invalid');
  }
  if (hello !== null && hello.kind === 'tls') {
    sni = hello.sni;
    if (hello.malformed) rt.shared.log?.debug({ host: dest.host, port: dest.port, client }, 'egress tunnel: malformed server_name in ClientHello, treated as none');
    d = rt.policy.decide({ host: dest.host, port: dest.port, protocol: 'TLS', sni, address });
    if (!d.allowed) return refuse(rt, tunnel, dest, d, client, sni, 'sni_refused');
  } else {
    // Not TLS (or nothing yet: the server speaks first): opaque bytes, for TCP entries only.
    d = rt.policy.decide({ host: dest.host, port: dest.port, protocol: 'TCP', sni: null, address });
    if (!d.allowed) return refuse(rt, tunnel, dest, d, client, null, 'tcp_refused');
  }
  // One count per tunnel: audited if either decision needed audit mode.
  noteDecision(rt, dest.host, dest.port, 'connect', first.audited && !d.audited ? first : d, client, sni);
  dial(rt, tunnel, dest, address, dialPort, bytes);
}

/**
 * Destination → client, the direction bulk downloads take. Reads land in one reused
 * buffer (node's `onread`) instead of a fresh 64 KiB allocation per read: on loopback and
 * fast links most writes to the client complete at once, and then the same memory serves
 * the next read, with no garbage for the collector. A write that did not complete keeps
 * referring to the buffer, so the next read gets a new one; `false` stops reading until
 * the client drains (backpressure, as pipe() would).
 */
class Downlink {
  private buf: Buffer = Buffer.allocUnsafe(DOWNLINK_BUFFER);
  readonly client: net.Socket;
  upstream: net.Socket | null = null;
  private readonly resume = (): void => { this.upstream?.resume(); };

  constructor(client: net.Socket) {
    this.client = client;
  }

  next(): Buffer {
    if (this.client.writableLength > 0) this.buf = Buffer.allocUnsafe(DOWNLINK_BUFFER);
    return this.buf;
  }

  write(n: number, buf: Uint8Array): boolean {
    if (this.client.write(buf.subarray(0, n))) return true;
    this.client.once('drain', this.resume);
    return false;
  }
}

function dial(rt: EgressRuntime, tunnel: Tunnel, dest: Destination, address: string, port: number, bytes: Buffer): void {
  const client = tunnel.client;
  const down = new Downlink(client);
  const upstream = net.connect({
    host: address, port, allowHalfOpen: true, noDelay: true,
    onread: { buffer: () => down.next(), callback: (n: number, buf: Uint8Array) => down.write(n, buf) },
  });
  down.upstream = upstream;
  tunnel.upstream = upstream;
  let connected = false;
  const timer = setTimeout(() => {
    rt.shared.metrics?.tunnelFailed('connect_timeout');
    rt.shared.log?.warn({ host: dest.host, port: dest.port, address }, `egress tunnel: connect timed out after ${CONNECT_TIMEOUT_MS / 1000} s`);
    tunnel.destroy();
  }, CONNECT_TIMEOUT_MS);
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    if (!connected) {
      clearTimeout(timer);
      rt.shared.metrics?.tunnelFailed('connect_error');
      rt.shared.log?.warn({ host: dest.host, port: dest.port, address, error: err.code ?? err.message }, 'egress tunnel: cannot connect');
    }
    tunnel.destroy();
  });
  upstream.once('connect', () => {
    connected = true;
    clearTimeout(timer);
    if (client.destroyed) return tunnel.destroy();
    tunnel.opened();
    if (bytes.length > 0) upstream.write(bytes);
    client.setTimeout(IDLE_TIMEOUT_MS, () => tunnel.destroy());
    client.pipe(upstream);
    upstream.once('end', () => client.end());
    client.resume();
  });
  // A side that closes having finished both ways leaves the other to finish on its own
  // (its last bytes may still be flushing); any other close (reset, error, timeout) cuts both.
  const onClose = (s: net.Socket, other: net.Socket) => () => {
    if (!(s.readableEnded && s.writableFinished)) other.destroy();
    if (client.destroyed && upstream.destroyed) tunnel.done();
  };
  client.once('close', onClose(client, upstream));
  upstream.once('close', onClose(upstream, client));
  client.on('error', () => tunnel.destroy());
}
