// HTTP/1.1 Upgrade (WebSocket) tunnels. The request head is written by hand on a fresh
// connection (plain or TLS per cluster): upgraded connections are never pooled. The
// upstream's response head is read up to its blank line; on 101 it is relayed and the two
// sockets are piped both ways, each closed when the other closes or fails. Any other answer
// is relayed and the client socket closed — bytes the client sent after its upgrade request
// are never forwarded unless the upstream agreed to switch protocols (no smuggling).
// Connect failures are retried per the route's retry policy; the route timeout covers the
// wait for the response head (504); the tunnel itself has no timeout, as in Envoy.
import net from 'node:net';
import tls from 'node:tls';
import { STATUS_CODES } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ClusterRuntime } from './cluster.ts';
import type { EndpointState } from './endpoint.ts';
import { BODY_NO_HEALTHY, BODY_TIMEOUT, compileRetry, retriableFailure } from './forward.ts';
import { requestHash } from './lb.ts';
import type { ForwardResult, ResponseFlag, UpstreamRequest } from './types.ts';

const MAX_HEAD_BYTES = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
// A fixed pattern over our own request line and header values (not a user regex).
const UNSAFE = /[\r\n\0]/;

/** Raw HTTP/1.1 reply on a client socket that node handed over for an upgrade. */
export function writeRawReply(socket: Duplex, status: number, body: string): number {
  if (socket.destroyed) return 0;
  const len = Buffer.byteLength(body);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain\r\ncontent-length: ${len}\r\nconnection: close\r\n\r\n${body}`);
  return len;
}

/** The upgrade request head, or null when a value would break the framing (CR, LF, NUL). */
export function requestHead(up: UpstreamRequest): string | null {
  if (UNSAFE.test(up.method) || UNSAFE.test(up.path) || UNSAFE.test(up.authority) || /\s/.test(up.path) || /\s/.test(up.method)) return null;
  let head = `${up.method} ${up.path} HTTP/1.1\r\nhost: ${up.authority}\r\n`;
  for (const k in up.headers) {
    if (k === 'host' || k.charCodeAt(0) === 58 || !/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(k)) continue;
    const v = up.headers[k];
    const values = typeof v === 'string' ? [v] : v;
    for (const x of values) {
      if (UNSAFE.test(x)) return null;
      head += `${k}: ${x}\r\n`;
    }
  }
  return head + '\r\n';
}

class Tunnel {
  readonly c: ClusterRuntime;
  readonly socket: Duplex;
  readonly head: Buffer;
  readonly up: UpstreamRequest;
  readonly resolve: (r: ForwardResult) => void;
  readonly hash: number;
  requestHead = '';
  conn: net.Socket | null = null;
  ep: EndpointState | null = null;
  tried: EndpointState[] | null = null;
  attempts = 0;
  flags: ResponseFlag[] = [];
  status = 0;
  bytesSent = 0;
  timer: NodeJS.Timeout | null = null;
  connectTimer: NodeJS.Timeout | null = null;
  chunks: Buffer[] = [];
  headBytes = 0;
  connected = false;
  responded = false;
  done = false;
  closedSides = 0;

  constructor(c: ClusterRuntime, socket: Duplex, head: Buffer, up: UpstreamRequest, resolve: (r: ForwardResult) => void) {
    this.c = c;
    this.socket = socket;
    this.head = head;
    this.up = up;
    this.resolve = resolve;
    this.hash = requestHash(c.def.lb, up);
  }

  begin(): void {
    this.c.inflight++;
    const socket = this.socket;
    socket.pause();
    socket.on('error', ignore);
    socket.once('close', () => this.clientClosed());
    const head = requestHead(this.up);
    if (head === null) { this.reply(400, 'invalid request: it cannot be forwarded upstream'); return; }
    this.requestHead = head;
    if (this.up.timeoutMs !== null && this.up.timeoutMs > 0) {
      this.timer = setTimeout(() => this.timedOut(), this.up.timeoutMs);
    }
    this.connect();
  }

  connect(): void {
    if (this.done) return;
    const ep = this.c.picker.pick(this.hash, this.tried);
    if (ep === null) { this.flags.push('UH'); this.reply(503, BODY_NO_HEALTHY); return; }
    this.attempts++;
    this.ep = ep;
    ep.totalRequests++;
    ep.active++;
    this.connected = false;
    this.chunks = [];
    this.headBytes = 0;
    const t = this.c.tls;
    const conn = t === null
      ? net.connect({ host: ep.address, port: ep.port, lookup: this.c.lookup })
      : tls.connect({
        host: ep.address,
        port: ep.port,
        lookup: this.c.lookup,
        secureContext: t.secureContext,
        rejectUnauthorized: t.rejectUnauthorized,
        checkServerIdentity: t.checkServerIdentity,
        ALPNProtocols: ['http/1.1'],
        // tls.connect (unlike undici and http2) sends no SNI of its own: without a
        // configured one, a DNS endpoint's name is the SNI, as for the other transports.
        ...(t.servername !== '' ? { servername: t.servername } : net.isIP(ep.address) === 0 ? { servername: ep.address } : {}),
      });
    this.conn = conn;
    this.c.tunnels.add(conn);
    conn.setNoDelay(true);
    this.connectTimer = setTimeout(() => conn.destroy(new Error('upstream connect timeout')), this.c.def.connectionPool.connectTimeoutMs);
    conn.once(t === null ? 'connect' : 'secureConnect', () => {
      if (this.connectTimer !== null) { clearTimeout(this.connectTimer); this.connectTimer = null; }
      this.connected = true;
      conn.write(this.requestHead);
    });
    const onData = (chunk: Buffer) => this.headData(conn, chunk, onData);
    conn.on('data', onData);
    conn.on('error', ignore);
    conn.once('close', () => this.upstreamClosed(conn, ep));
  }

  headData(conn: net.Socket, chunk: Buffer, onData: (c: Buffer) => void): void {
    if (this.conn !== conn || this.responded) return;
    this.chunks.push(chunk);
    this.headBytes += chunk.length;
    const all = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks);
    const end = all.indexOf(HEAD_END);
    if (end === -1) {
      if (this.headBytes > MAX_HEAD_BYTES) { conn.destroy(new Error('upstream response head too large')); }
      return;
    }
    conn.off('data', onData);
    conn.pause();
    this.responded = true;
    if (this.connectTimer !== null) { clearTimeout(this.connectTimer); this.connectTimer = null; }
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
    const headText = all.subarray(0, end).toString('latin1');
    const rest = all.subarray(end + 4);
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(headText);
    const status = m === null ? 0 : Number(m[1]);
    if (status === 0) { this.flags.push('UC'); conn.destroy(); this.replyNow(502, 'upstream sent an invalid response head'); return; }
    this.status = status;
    this.c.recordStatus(this.ep!, status);
    const socket = this.socket;
    socket.write(all.subarray(0, end + 4));
    if (rest.length > 0) { socket.write(rest); this.bytesSent += rest.length; }
    conn.on('data', (d: Buffer) => { this.bytesSent += d.length; });
    if (status === 101) {
      if (this.head.length > 0) conn.write(this.head);
      conn.pipe(socket);
      socket.pipe(conn);
      conn.resume();
      socket.resume();
      return;
    }
    // Not switching protocols: relay this one response, then close.
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(headText);
    if (cl !== null && rest.length >= Number(cl[1])) { socket.end(); conn.destroy(); return; }
    conn.pipe(socket);
    conn.resume();
    if (cl !== null) {
      let left = Number(cl[1]) - rest.length;
      conn.on('data', (d: Buffer) => { left -= d.length; if (left <= 0) { conn.unpipe(socket); socket.end(); conn.destroy(); } });
    }
  }

  upstreamClosed(conn: net.Socket, ep: EndpointState): void {
    ep.active--;
    this.c.tunnels.delete(conn);
    if (this.conn !== conn) return;
    if (this.responded) {
      this.sideClosed();
      // Flush what was relayed, then close: the client must not wait on a dead tunnel.
      if (!this.socket.destroyed) (this.socket as net.Socket).destroySoon();
      return;
    }
    if (this.done) return;
    // Closed before a response head: a connect failure, or a reset after connecting.
    if (this.connectTimer !== null) { clearTimeout(this.connectTimer); this.connectTimer = null; }
    const wasConnected = this.connected;
    this.c.recordLocalFailure(ep);
    const r = this.up.retries !== null ? compileRetry(this.up.retries) : null;
    if (!wasConnected && r !== null && this.attempts <= r.attempts && retriableFailure(r.bits, 'connect')) {
      (this.tried ??= []).push(ep);
      this.connect();
      return;
    }
    this.flags.push(wasConnected ? 'UC' : 'UF');
    this.reply(503, `upstream connect error or disconnect/reset before headers. reset reason: ${wasConnected ? 'connection termination' : 'connection failure'}`);
  }

  clientClosed(): void {
    if (this.responded) { this.sideClosed(); this.conn?.destroy(); return; }
    if (this.done) return;
    this.flags.push('DC');
    this.conn?.destroy();
    this.finish();
  }

  /** Both sides of an established exchange closed: the tunnel is over. */
  sideClosed(): void {
    if (++this.closedSides >= 2) this.finish();
  }

  timedOut(): void {
    this.timer = null;
    if (this.responded || this.done) return;
    this.flags.push('UT');
    const conn = this.conn;
    this.conn = null;
    conn?.destroy();
    if (this.ep !== null) this.c.recordLocalFailure(this.ep);
    this.reply(504, BODY_TIMEOUT);
  }

  reply(status: number, body: string): void {
    if (this.done) return;
    this.replyNow(status, body);
  }

  replyNow(status: number, body: string): void {
    this.status = status;
    this.bytesSent = writeRawReply(this.socket, status, body);
    this.finish();
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.c.done();
    this.resolve({ status: this.status, upstreamHost: this.ep?.hostPort ?? null, attempts: this.attempts, flags: this.flags, bytesSent: this.bytesSent });
  }
}

function ignore(): void {}

/** Resolves when the tunnel (or the relayed non-101 answer) is over. */
export function upgradeTo(c: ClusterRuntime, _req: IncomingMessage, socket: Duplex, head: Buffer, up: UpstreamRequest): Promise<ForwardResult> {
  return new Promise<ForwardResult>((resolve) => new Tunnel(c, socket, head, up, resolve).begin());
}
