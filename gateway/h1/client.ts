// The HTTP/1.1 fast path, upstream side: a minimal keep-alive client per endpoint, used in
// place of undici's Pool for plaintext HTTP/1.1 clusters (cluster.ts picks it). The profile
// put undici's per-request dispatch (request object, header validation and serialisation,
// its llhttp instance's callbacks) among the largest costs left; this client writes one
// head string (plus the body when it is small) per request and parses the response head
// itself.
//
// Semantics follow http1.ts so forward.ts, retries and outlier detection cannot tell the
// two apart:
//   - one request per connection at a time, no pipelining; the admission gate (pool.ts)
//     never starts more calls than maxConnections, so the pool never queues;
//   - idle connections are reused last-in first-out and closed after the upstream's
//     `Keep-Alive: timeout` hint minus one second, else after min(idleTimeout, 4 s), and
//     after maxRequestsPerConnection requests;
//   - failures before the connection is up are `connect` (refused, DNS, connect timeout),
//     after it `reset`; a request the client cannot encode (bad header name or value, bad
//     path) is `invalid` and never sent; a streamed body that ends short of its
//     Content-Length or fails is `downstream`;
//   - the request: Host first, `connection: keep-alive`, Content-Length for whole bodies
//     (omitted for an empty body on methods that do not expect one), chunked for streamed
//     bodies of unknown length — what undici sends;
//   - the response: Content-Length, chunked (trailers kept) or close-delimited bodies;
//     1xx heads skipped; repeated headers as arrays; values as latin-1 strings, as undici
//     hands them over, so bytes beyond ASCII leave downstream as they came.
import net from 'node:net';
import type { LookupFunction, Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { ConnectionPool } from '../../api/proxyconfig.ts';
import type { EndpointState, Transport } from '../upstream/endpoint.ts';
import { Call, RUNNING } from '../upstream/pool.ts';
import type { FailureKind, Gate, Outgoing, Sink } from '../upstream/pool.ts';
import type { HeaderMap } from '../upstream/types.ts';
import { h1Stats } from './enabled.ts';
import { latin1 } from './head.ts';
import { isToken, TCHAR, validFieldValue } from './chars.ts';
import { chunkSizeLine } from './chunked.ts';
import { Sweep } from './sweep.ts';
import { RAW_HAS_DATE, RAW_HAS_LENGTH } from '../upstream/pool.ts';

/** Response heads beyond this are refused (http1.ts gives undici the same limit). */
const MAX_RESPONSE_HEAD = 64 * 1024;
const DEFAULT_KEEPALIVE_MS = 4000;
const KEEPALIVE_THRESHOLD_MS = 1000;
/** Small bodies are copied next to the head: one write for the whole request. */
const COALESCE_MAX = 16 * 1024;
const SWEEP_MS = 1000;

export class FastH1Transport implements Transport {
  readonly host: string;
  readonly port: number;
  readonly lookup: LookupFunction | undefined;
  readonly connectTimeoutMs: number;
  /** Upper bound of an idle connection's life (idleTimeout). */
  readonly maxIdleMs: number;
  readonly defaultIdleMs: number;
  readonly threshold: number;
  readonly maxRequests: number;
  /** Idle connections, most recently used last. */
  readonly idle: UpConn[] = [];
  readonly conns = new Set<UpConn>();
  closed = false;
  private closeWaiters: (() => void)[] = [];

  constructor(ep: EndpointState, cp: ConnectionPool, lookup?: LookupFunction) {
    this.host = ep.address;
    this.port = ep.port;
    this.lookup = lookup;
    this.connectTimeoutMs = cp.connectTimeoutMs;
    const idle = Math.max(1, cp.idleTimeoutMs);
    this.maxIdleMs = idle;
    this.defaultIdleMs = Math.min(idle, DEFAULT_KEEPALIVE_MS);
    this.threshold = Math.min(KEEPALIVE_THRESHOLD_MS, Math.floor(idle / 2));
    this.maxRequests = cp.maxRequestsPerConnection > 0 ? cp.maxRequestsPerConnection : 0;
  }

  /** Runs `call` on an idle connection, or on a new one. */
  acquire(call: FastH1Call): void {
    if (this.closed) { call.failed('connect', new Error('cluster closed')); return; }
    const idle = this.idle;
    const now = Date.now();
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (c.sock.destroyed || now >= c.idleUntil) { c.destroy(); continue; }
      c.assign(call, true);
      return;
    }
    const c = new UpConn(this);
    this.conns.add(c);
    sweeper.add(this);
    c.assign(call, false);
  }

  release(c: UpConn): void {
    if (this.closed || (this.maxRequests > 0 && c.requests >= this.maxRequests)) { c.destroy(); return; }
    c.idleUntil = Date.now() + c.keepAliveMs;
    // The last response may have left it paused (downstream backpressure).
    if (c.sock.isPaused()) c.sock.resume();
    this.idle.push(c);
  }

  forget(c: UpConn): void {
    this.conns.delete(c);
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
    if (this.conns.size === 0) {
      sweeper.delete(this);
      if (this.closed) this.notifyClosed();
    }
  }

  /** Idle connections whose keep-alive ran out. */
  sweep(now: number): void {
    const idle = this.idle;
    for (let i = idle.length - 1; i >= 0; i--) if (now >= idle[i].idleUntil) idle[i].destroy();
  }

  close(): Promise<void> {
    this.closed = true;
    for (const c of [...this.idle]) c.destroy();
    if (this.conns.size === 0) return Promise.resolve();
    // Busy connections close when their response is complete (release sees `closed`).
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  destroy(): void {
    this.closed = true;
    for (const c of [...this.conns]) c.destroy();
  }

  private notifyClosed(): void {
    const w = this.closeWaiters;
    this.closeWaiters = [];
    for (const fn of w) fn();
  }
}

/** One timer for every transport with open connections: closes idle ones past their keep-alive. */
const sweeper = new Sweep<FastH1Transport>(SWEEP_MS, sweepAll);

function sweepAll(transports: Set<FastH1Transport>): void {
  const now = Date.now();
  for (const t of transports) t.sweep(now);
}

// ---------------------------------------------------------------- one connection

const R_IDLE = 0;
const R_HEAD = 1;
const R_LENGTH = 2;
const R_CHUNK_SIZE = 3;
const R_CHUNK_DATA = 4;
const R_CHUNK_CRLF = 5;
const R_TRAILERS = 6;
const R_UNTIL_CLOSE = 7;

const kUp = Symbol('meshgate.upconn');
type TaggedSocket = Socket & { [kUp]?: UpConn };

class UpConn {
  readonly t: FastH1Transport;
  readonly sock: Socket;
  call: FastH1Call | null = null;
  connected = false;
  connectTimer: NodeJS.Timeout | null = null;
  requests = 0;
  idleUntil = 0;
  keepAliveMs: number;
  /** The request (head and body) is fully written. */
  sent = false;
  /** The current exchange ends the connection (Connection: close, HTTP/1.0, close-delimited). */
  last = false;
  body: Readable | null = null;
  /** A streamed body's declared Content-Length (-1: none, chunked), and what is left of it. */
  declared = -1;
  bodyLeft = -1;
  /** A streamed body's head, held until its first chunk or its end. */
  pendingHead: string | null = null;

  rstate = R_IDLE;
  buf: Buffer | null = null;
  pos = 0;
  left = 0;
  status = 0;
  headRequest = false;
  trailers: HeaderMap | null = null;
  destroyed = false;
  /** The last Keep-Alive header seen. */
  hint = '';
  /** The socket's error, reported when it closes. */
  lastError: Error | null = null;

  constructor(t: FastH1Transport) {
    this.t = t;
    this.keepAliveMs = t.defaultIdleMs;
    // `onread`: the socket reads into READ_BUF and calls onRead directly, without the
    // Readable machinery per read ('data' events, a 64 KiB allocation, a nextTick). Every
    // byte kept beyond the call is copied out of READ_BUF (see onData and emitData).
    const sock = net.connect({ host: t.host, port: t.port, noDelay: true, onread: { buffer: READ_BUF, callback: onRead }, ...(t.lookup !== undefined ? { lookup: t.lookup } : {}) }) as TaggedSocket;
    sock[kUp] = this;
    this.sock = sock;
    sock.on('connect', onConnect);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.on('drain', onDrain);
    if (t.connectTimeoutMs > 0) this.connectTimer = setTimeout(onConnectTimeout, t.connectTimeoutMs, this);
  }

  assign(call: FastH1Call, reused: boolean): void {
    this.call = call;
    call.conn = this;
    this.requests++;
    this.sent = false;
    this.pendingHead = null;
    this.last = false;
    this.trailers = null;
    this.rstate = R_HEAD;
    if (reused) { call.connected = true; this.send(call); }
  }

  connectedNow(): void {
    this.connected = true;
    if (this.connectTimer !== null) { clearTimeout(this.connectTimer); this.connectTimer = null; }
    const call = this.call;
    if (call !== null) { call.connected = true; this.send(call); }
  }

  send(call: FastH1Call): void {
    h1Stats.upstreamRequests++;
    const out = call.out;
    const body = out.body;
    this.headRequest = out.method === 'HEAD';
    let head: string | null;
    if (body === null || Buffer.isBuffer(body)) {
      const len = body === null ? 0 : body.length;
      head = requestHead(out, len > 0 || expectsPayload(out.method) ? len : -1, false);
      if (head === null) return this.invalid(call);
      if (len === 0) this.sock.write(head, 'latin1');
      else if (len <= COALESCE_MAX) {
        const h = Buffer.byteLength(head, 'latin1');
        const buf = Buffer.allocUnsafe(h + len);
        buf.write(head, 0, 'latin1');
        (body as Buffer).copy(buf, h);
        this.sock.write(buf);
      } else {
        this.sock.cork();
        this.sock.write(head, 'latin1');
        this.sock.write(body as Buffer);
        this.sock.uncork();
      }
      this.sent = true;
      return;
    }
    // A streamed body: as undici, the head goes out with the first chunk (Content-Length
    // when the request declared one, else chunked), or at the end when there was none.
    const cl = out.headers['content-length'];
    const declared = typeof cl === 'string' && /^\d{1,15}$/.test(cl) ? Number(cl) : -1;
    head = requestHead(out, -1, false);
    if (head === null) return this.invalid(call);
    this.pendingHead = head.slice(0, -2);
    this.body = body;
    this.bodyLeft = declared;
    this.declared = declared;
    (body as TaggedBody)[kUp] = this;
    body.on('data', onBodyData);
    body.on('end', onBodyEnd);
    body.on('error', onBodyError);
  }

  invalid(call: FastH1Call): void {
    // Nothing was written: the connection is still clean and goes back to the pool.
    this.call = null;
    call.conn = null;
    this.rstate = R_IDLE;
    this.requests--;
    this.t.release(this);
    call.failed('invalid', new Error('request cannot be encoded: invalid header name or value, or path'));
  }

  bodyData(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const sock = this.sock;
    if (this.declared >= 0) {
      if (chunk.length > this.bodyLeft) { this.fail('downstream', new Error('request body longer than its content-length')); return; }
      this.bodyLeft -= chunk.length;
      if (this.pendingHead !== null) {
        sock.write(`${this.pendingHead}content-length: ${this.declared}\r\n\r\n`, 'latin1');
        this.pendingHead = null;
      }
      if (!sock.write(chunk)) this.body!.pause();
      return;
    }
    sock.cork();
    if (this.pendingHead !== null) {
      sock.write(`${this.pendingHead}transfer-encoding: chunked\r\n\r\n`, 'latin1');
      this.pendingHead = null;
    }
    sock.write(chunk.length.toString(16) + '\r\n', 'latin1');
    sock.write(chunk);
    const ok = sock.write('\r\n', 'latin1');
    sock.uncork();
    if (!ok) this.body!.pause();
  }

  bodyEnd(): void {
    if (this.declared >= 0 && this.bodyLeft > 0) { this.fail('downstream', new Error('request body shorter than its content-length')); return; }
    const head = this.pendingHead;
    if (head !== null) {
      this.pendingHead = null;
      // Nothing was sent: a length only for methods that expect a body (undici's rule).
      const method = this.call?.out.method ?? '';
      this.sock.write(expectsPayload(method) ? `${head}content-length: 0\r\n\r\n` : `${head}\r\n`, 'latin1');
    } else if (this.declared < 0) {
      this.sock.write('0\r\n\r\n', 'latin1');
    }
    this.detachBody();
    this.sent = true;
  }

  detachBody(): void {
    const b = this.body;
    if (b === null) return;
    this.body = null;
    b.off('data', onBodyData);
    b.off('end', onBodyEnd);
    b.off('error', onBodyError);
    (b as TaggedBody)[kUp] = undefined;
  }

  // ------------------------------------------------------------ response

  /** `chunk` may be a view of READ_BUF: what is left of it after parsing is copied. */
  onData(chunk: Buffer): void {
    if (this.rstate === R_IDLE) { this.destroy(); return; } // bytes nobody asked for
    const b = this.buf;
    if (b === null) { this.buf = chunk; this.pos = 0; }
    else { this.buf = Buffer.concat([b.subarray(this.pos), chunk]); this.pos = 0; }
    this.parse();
    const rest = this.buf;
    if (rest !== null && rest.buffer === READ_BUF.buffer) { this.buf = Buffer.from(rest.subarray(this.pos)); this.pos = 0; }
  }

  consume(n: number): void {
    this.pos += n;
    if (this.buf !== null && this.pos >= this.buf.length) { this.buf = null; this.pos = 0; }
  }

  parse(): void {
    for (;;) {
      const call = this.call;
      if (call === null || this.destroyed) return;
      const b = this.buf;
      switch (this.rstate) {
        case R_HEAD: {
          if (b === null) return;
          const end = b.indexOf(HEAD_END, this.pos);
          if (end < 0) {
            if (b.length - this.pos > MAX_RESPONSE_HEAD) this.fail('reset', new Error('upstream response head too large'));
            return;
          }
          if (end - this.pos > MAX_RESPONSE_HEAD) { this.fail('reset', new Error('upstream response head too large')); return; }
          const start = this.pos;
          this.consume(end + 4 - start);
          if (!this.head(call, b, start, end + 2)) return;
          break;
        }
        case R_LENGTH: {
          if (b === null) return;
          const n = Math.min(this.left, b.length - this.pos);
          const piece = b.subarray(this.pos, this.pos + n);
          this.left -= n;
          this.consume(n);
          if (this.left === 0) { this.complete(call, piece); return; }
          emitData(call, piece);
          break;
        }
        case R_UNTIL_CLOSE: {
          if (b === null) return;
          const piece = this.pos === 0 ? b : b.subarray(this.pos);
          this.buf = null;
          this.pos = 0;
          emitData(call, piece);
          break;
        }
        case R_CHUNK_SIZE: {
          if (b === null) return;
          const eol = b.indexOf(10, this.pos);
          if (eol < 0) { if (b.length - this.pos > 4096) this.fail('reset', new Error('bad chunk size line')); return; }
          const size = chunkSizeLine(b, this.pos, eol, false);
          if (size < 0) { this.fail('reset', new Error('bad chunk size line')); return; }
          this.consume(eol + 1 - this.pos);
          this.left = size;
          this.rstate = size === 0 ? R_TRAILERS : R_CHUNK_DATA;
          break;
        }
        case R_CHUNK_DATA: {
          if (b === null) return;
          const n = Math.min(this.left, b.length - this.pos);
          const piece = b.subarray(this.pos, this.pos + n);
          this.left -= n;
          this.consume(n);
          if (this.left === 0) this.rstate = R_CHUNK_CRLF;
          emitData(call, piece);
          break;
        }
        case R_CHUNK_CRLF: {
          if (b === null || b.length - this.pos < 2) return;
          if (b[this.pos] !== 13 || b[this.pos + 1] !== 10) { this.fail('reset', new Error('bad chunk terminator')); return; }
          this.consume(2);
          this.rstate = R_CHUNK_SIZE;
          break;
        }
        case R_TRAILERS: {
          if (b === null) return;
          const eol = b.indexOf(10, this.pos);
          if (eol < 0) { if (b.length - this.pos > MAX_RESPONSE_HEAD) this.fail('reset', new Error('trailers too large')); return; }
          if (eol === this.pos || b[eol - 1] !== 13) { this.fail('reset', new Error('bad trailer line')); return; }
          if (eol === this.pos + 1) {
            this.consume(2);
            this.complete(call, null);
            return;
          }
          const colon = b.indexOf(58, this.pos);
          if (colon < 0 || colon > eol) { this.fail('reset', new Error('bad trailer line')); return; }
          const name = latin1(b, this.pos, colon).trim().toLowerCase();
          const value = latin1(b, colon + 1, eol - 1).trim();
          addValue(this.trailers ??= {}, name, value);
          this.consume(eol + 1 - this.pos);
          break;
        }
        default:
          return;
      }
    }
  }

  /** Parses one response head (`start`..`end` excludes the final CRLF); false: stop parsing. */
  head(call: FastH1Call, b: Buffer, start: number, end: number): boolean {
    // HTTP/1.x SSS reason
    if (end - start < 12 || b[start] !== 72 || b[start + 1] !== 84 || b[start + 2] !== 84 || b[start + 3] !== 80
      || b[start + 4] !== 47 || b[start + 5] !== 49 || b[start + 6] !== 46 || b[start + 8] !== 32) {
      this.fail('reset', new Error('malformed upstream status line'));
      return false;
    }
    const minor = b[start + 7] - 48;
    const d0 = b[start + 9] - 48;
    const d1 = b[start + 10] - 48;
    const d2 = b[start + 11] - 48;
    const status = d0 * 100 + d1 * 10 + d2;
    if ((minor !== 0 && minor !== 1) || d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9
      || (end - start > 12 && b[start + 12] !== 32 && b[start + 12] !== 13)) {
      this.fail('reset', new Error('malformed upstream status line'));
      return false;
    }
    if (status >= 200 && call.sink.rawHead === true) {
      const lines = rawHeadLines(b, b.indexOf(10, start) + 1, end);
      if (lines !== null) {
        h1Stats.rawHeads++;
        const r = RAW;
        if (r.keepAlive !== null) this.keepAliveHint(r.keepAlive);
        const flags = r.cl >= 0 ? RAW_HAS_LENGTH | r.date : r.date;
        if (this.frame(status, minor, r.cl, r.chunked, r.connKeepAlive, r.connClose)) return this.deliverRaw(call, status, lines, flags, r.nameLens);
        call.sink.upstreamRawHead!(call, status, lines, flags, r.nameLens);
        return this.afterHead(call);
      }
    }
    // One string for the whole head (one native call instead of two per header line);
    // string offsets are byte offsets from `start`. Latin-1, as undici hands values over:
    // bytes beyond ASCII go back out downstream exactly as they came (UTF-8 stays UTF-8).
    const text = latin1(b, start, end);
    const n = end - start;
    let i = text.indexOf('\n');
    const headers: HeaderMap = {};
    let cl = -1;
    let chunked = false;
    let connection: string | null = null;
    let keepAlive: string | null = null;
    while (i + 1 < n) {
      const ls = i + 1;
      const le = text.indexOf('\n', ls);
      const lineEnd = le < 0 ? n : le;
      if (lineEnd - 1 < ls || text.charCodeAt(lineEnd - 1) !== 13) { this.fail('reset', new Error('malformed upstream header line')); return false; }
      const colon = text.indexOf(':', ls);
      if (colon < 0 || colon >= lineEnd - 1 || colon === ls) { this.fail('reset', new Error('malformed upstream header line')); return false; }
      const raw = text.slice(ls, colon);
      let name = knownName(raw);
      if (name === undefined) {
        name = raw.toLowerCase();
        if (!isToken(name)) { this.fail('reset', new Error('malformed upstream header name')); return false; }
      }
      const value = text.slice(colon + 1, lineEnd - 1).trim();
      // A control character in a value: llhttp (undici) resets the connection on it.
      if (!validFieldValue(value)) { this.fail('reset', new Error('malformed upstream header value')); return false; }
      switch (name) {
        case 'content-length': {
          if (!/^\d{1,15}$/.test(value) || (cl >= 0 && Number(value) !== cl)) { this.fail('reset', new Error('invalid upstream content-length')); return false; }
          cl = Number(value);
          break;
        }
        case 'transfer-encoding': {
          chunked = isChunked(value);
          break;
        }
        case 'connection': connection = value.toLowerCase(); break;
        case 'keep-alive': keepAlive = value; break;
      }
      // Framing and keep-alive headers are this hop's: stripResponseHopByHop (pool.ts) would
      // delete them, and deleting properties costs every later read of the object. A
      // Connection header naming other headers is kept for it to act on.
      if (name === 'keep-alive' || name === 'transfer-encoding') { i = lineEnd; continue; }
      if (name === 'connection') {
        const v = value.toLowerCase();
        if (v === 'keep-alive' || v === 'close') { i = lineEnd; continue; }
      }
      addValue(headers, name, value);
      i = lineEnd;
    }
    if (status < 200) {
      // 100 Continue, 103 Early Hints: not the response. 101 would switch protocols.
      if (status === 101) { this.fail('reset', new Error('unexpected 101 from upstream')); return false; }
      return true;
    }
    if (keepAlive !== null) this.keepAliveHint(keepAlive);
    const noBody = this.frame(status, minor, cl, chunked, connection !== null && connection.includes('keep-alive'), connection !== null && connection.includes('close'));
    call.sink.upstreamHeaders(call, status, headers, false);
    return noBody ? this.endAfterHead(call) : this.afterHead(call);
  }

  /**
   * Reads the response's framing into the connection's state: whether the connection
   * survives it (`last`) and how its body is delimited. True: the response has no body.
   */
  frame(status: number, minor: number, cl: number, chunked: boolean, connKeepAlive: boolean, connClose: boolean): boolean {
    this.status = status;
    this.last = minor === 0 ? !connKeepAlive : connClose;
    const noBody = this.headRequest || status === 204 || status === 304;
    if (noBody) this.left = 0;
    else if (chunked) this.rstate = R_CHUNK_SIZE;
    else if (cl >= 0) { this.rstate = R_LENGTH; this.left = cl; }
    else { this.rstate = R_UNTIL_CLOSE; this.last = true; }
    return noBody || (this.rstate === R_LENGTH && cl === 0);
  }

  /** A bodiless response's raw head went to the sink: the exchange is complete. */
  deliverRaw(call: FastH1Call, status: number, lines: Buffer, flags: number, nameLens: number): boolean {
    call.sink.upstreamRawHead!(call, status, lines, flags, nameLens);
    return this.endAfterHead(call);
  }

  /** After the sink heard the head: false stops parsing (the sink aborted the call). */
  afterHead(call: FastH1Call): boolean {
    return this.call === call; // a retriable status aborts the call from the sink
  }

  endAfterHead(call: FastH1Call): boolean {
    if (this.call !== call) return false;
    this.complete(call, null);
    return false;
  }

  keepAliveHint(v: string): void {
    // Upstreams send the same hint on every response: parsed once per connection.
    if (v === this.hint) return;
    this.hint = v;
    const m = /timeout=(\d+)/i.exec(v);
    if (m === null) return;
    const ms = Number(m[1]) * 1000 - this.t.threshold;
    this.keepAliveMs = Math.max(0, Math.min(ms, this.t.maxIdleMs));
  }

  /** The response is complete: the connection goes back to the pool (or closes), then the sink hears it. */
  complete(call: FastH1Call, lastPiece: Buffer | null): void {
    this.call = null;
    call.conn = null;
    this.rstate = R_IDLE;
    if (this.buf !== null) this.last = true; // bytes beyond the response: not a connection to trust
    if (this.last || !this.sent || this.keepAliveMs <= 0) this.destroy();
    else this.t.release(this);
    if (lastPiece !== null && lastPiece.length > 0) emitData(call, lastPiece);
    if (call.state !== RUNNING) return;
    call.settle();
    call.sink.upstreamEnd(call, this.trailers);
  }

  /** The current call fails; the connection is not reusable. */
  fail(kind: FailureKind, err: Error): void {
    const call = this.call;
    this.call = null;
    this.destroy();
    if (call !== null) {
      call.conn = null;
      call.failed(kind, err);
    }
  }

  onClose(err: Error | null): void {
    this.destroyed = true;
    if (this.connectTimer !== null) { clearTimeout(this.connectTimer); this.connectTimer = null; }
    this.detachBody();
    this.t.forget(this);
    const call = this.call;
    if (call === null) return;
    if (this.rstate === R_UNTIL_CLOSE && err === null) { this.complete(call, null); return; }
    this.call = null;
    call.conn = null;
    call.failed(this.connected ? 'reset' : 'connect', err ?? new Error(this.connected ? 'upstream closed the connection' : 'connection closed before it was established'));
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.detachBody();
    this.sock.destroy();
  }
}

type TaggedBody = Readable & { [kUp]?: UpConn };

const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

function isChunked(value: string): boolean {
  const v = value.toLowerCase();
  return v === 'chunked' || v.endsWith(',chunked') || v.endsWith(', chunked');
}

// ---------------------------------------------------------------- raw response heads

/** What rawHeadLines found besides the lines it kept (valid until its next call). */
const RAW = {
  cl: -1,
  chunked: false,
  connKeepAlive: false,
  connClose: false,
  keepAlive: null as string | null,
  /** RAW_HAS_DATE when a Date line is among the kept ones, else 0. */
  date: 0,
  /** Bit n set: a kept name has n characters (n ≥ 31: bit 31) — see Sink.upstreamRawHead. */
  nameLens: 0,
};
/** Heads with more lines than this take the header-map path. */
const RAW_MAX_LINES = 32;
const RAW_NAME_AT = new Int32Array(RAW_MAX_LINES);
const RAW_NAME_LEN = new Int32Array(RAW_MAX_LINES);
/** Output space: a head that could outgrow it (": " may add a byte per line) takes the map path. */
const RAW_OUT = Buffer.allocUnsafeSlow(8 * 1024);
const N_CONTENT_LENGTH = Buffer.from('content-length');
const N_TRANSFER_ENCODING = Buffer.from('transfer-encoding');
const N_CONNECTION = Buffer.from('connection');
const N_KEEP_ALIVE = Buffer.from('keep-alive');
const N_DATE = Buffer.from('date');
const V_KEEP_ALIVE = N_KEEP_ALIVE;
const V_CLOSE = Buffer.from('close');

/** `out[at..]` (lower-case already) equals `name`. */
function isName(out: Buffer, at: number, name: Buffer): boolean {
  for (let i = 0; i < name.length; i++) if (out[at + i] !== name[i]) return false;
  return true;
}

/** `b[from..to)` equals the lower-case `word`, ignoring ASCII case. */
function isWordCi(b: Buffer, from: number, to: number, word: Buffer): boolean {
  if (to - from !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    const c = b[from + i];
    if ((c >= 65 && c <= 90 ? c + 32 : c) !== word[i]) return false;
  }
  return true;
}

/**
 * The header lines of a response head (`b[from..end)`, each line with its CRLF) as the
 * map path would write them downstream — names lower-cased, values trimmed, `name: value`,
 * Connection (keep-alive/close), Keep-Alive and Transfer-Encoding dropped — built in one
 * pass over the bytes, with no string per header. Null whenever the map path could answer
 * differently, which then parses the head as before: a byte beyond ASCII or a control
 * character in a value, a malformed line, a name that is not a token, starts with a digit
 * (object keys order those first) or appears twice (the map groups repeats), a Connection
 * naming other headers, grpc-status (retries read it), the other hop-by-hop names,
 * a bad Content-Length, too many lines. RAW holds the framing it read.
 */
function rawHeadLines(b: Buffer, from: number, end: number): Buffer | null {
  if (from <= 0 || 2 * (end - from) > RAW_OUT.length) return null;
  const out = RAW_OUT;
  const r = RAW;
  r.cl = -1;
  r.chunked = false;
  r.connKeepAlive = false;
  r.connClose = false;
  r.keepAlive = null;
  r.date = 0;
  let lens = 0;
  let o = 0;
  let lines = 0;
  let p = from;
  while (p < end) {
    // name, lower-cased into out
    const ns = p;
    const o0 = o;
    let c = b[p];
    if (c >= 48 && c <= 57) return null;
    while (c !== 58) {
      if (TCHAR[c] !== 1) return null;
      out[o++] = c >= 65 && c <= 90 ? c + 32 : c;
      if (++p >= end) return null;
      c = b[p];
    }
    const nameLen = p - ns;
    if (nameLen === 0) return null;
    // a repeated name (compared case-insensitively; ^/~ counted equal: harmless, the map path takes it)
    for (let k = 0; k < lines; k++) {
      if (RAW_NAME_LEN[k] !== nameLen) continue;
      const at = RAW_NAME_AT[k];
      let same = true;
      for (let i = 0; i < nameLen; i++) if ((b[at + i] | 0x20) !== (b[ns + i] | 0x20)) { same = false; break; }
      if (same) return null;
    }
    if (lines === RAW_MAX_LINES) return null;
    RAW_NAME_AT[lines] = ns;
    RAW_NAME_LEN[lines] = nameLen;
    lines++;
    // value: OWS skipped, copied after ": ", trailing OWS dropped, must end CRLF
    p++;
    while (p < end && (b[p] === 32 || b[p] === 9)) p++;
    const vs = p;
    out[o++] = 58;
    out[o++] = 32; // an empty value stays `name: `, as writeHead writes it
    for (;;) {
      if (p >= end) return null;
      c = b[p];
      if (c === 13) break;
      if (c < 0x20 ? c !== 9 : c >= 0x7f) return null;
      out[o++] = c;
      p++;
    }
    if (p + 1 >= end || b[p + 1] !== 10) return null;
    let ve = p;
    while (ve > vs && (b[ve - 1] === 32 || b[ve - 1] === 9)) { ve--; o--; }
    p += 2;
    // names the map path treats apart
    switch (nameLen) {
      case 4:
        if (isName(out, o0, N_DATE)) r.date = RAW_HAS_DATE;
        break;
      case 14:
        if (isName(out, o0, N_CONTENT_LENGTH)) {
          const n = ve - vs;
          if (n < 1 || n > 15) return null;
          let v = 0;
          for (let i = vs; i < ve; i++) {
            const d = b[i] - 48;
            if (d < 0 || d > 9) return null;
            v = v * 10 + d;
          }
          r.cl = v;
        }
        break;
      case 17:
        if (isName(out, o0, N_TRANSFER_ENCODING)) { r.chunked = isChunked(latin1(b, vs, ve)); o = o0; continue; }
        break;
      case 10:
        if (isName(out, o0, N_CONNECTION)) {
          if (isWordCi(b, vs, ve, V_KEEP_ALIVE)) r.connKeepAlive = true;
          else if (isWordCi(b, vs, ve, V_CLOSE)) r.connClose = true;
          else return null;
          o = o0;
          continue;
        }
        if (isName(out, o0, N_KEEP_ALIVE)) { r.keepAlive = latin1(b, vs, ve); o = o0; continue; }
        break;
      case 11: // grpc-status
      case 16: // proxy-connection
      case 7: // upgrade
      case 2: // te
        if (isHopOrGrpc(out, o0, nameLen)) return null;
        break;
    }
    lens |= 1 << (nameLen < 31 ? nameLen : 31);
    out[o++] = 13;
    out[o++] = 10;
  }
  r.nameLens = lens;
  return Buffer.from(out.subarray(0, o));
}

const N_GRPC_STATUS = Buffer.from('grpc-status');
const N_PROXY_CONNECTION = Buffer.from('proxy-connection');
const N_UPGRADE = Buffer.from('upgrade');
const N_TE = Buffer.from('te');

function isHopOrGrpc(out: Buffer, at: number, len: number): boolean {
  switch (len) {
    case 11: return isName(out, at, N_GRPC_STATUS);
    case 16: return isName(out, at, N_PROXY_CONNECTION);
    case 7: return isName(out, at, N_UPGRADE);
    case 2: return isName(out, at, N_TE);
  }
  return false;
}

/**
 * Common response header names as upstreams spell them, to their lower-case form: no
 * lower-casing or token check for these, and the same (internalised) strings every time,
 * which keeps the per-response header objects cheap to build and to read. A switch, not a
 * Map: no hash of the fresh name string to compute.
 */
function knownName(raw: string): string | undefined {
  switch (raw) {
    case 'content-type': case 'Content-Type': return 'content-type';
    case 'content-length': case 'Content-Length': return 'content-length';
    case 'date': case 'Date': return 'date';
    case 'connection': case 'Connection': return 'connection';
    case 'keep-alive': case 'Keep-Alive': return 'keep-alive';
    case 'transfer-encoding': case 'Transfer-Encoding': return 'transfer-encoding';
    case 'server': case 'Server': return 'server';
    case 'cache-control': case 'Cache-Control': return 'cache-control';
    case 'etag': case 'ETag': case 'Etag': return 'etag';
    case 'last-modified': case 'Last-Modified': return 'last-modified';
    case 'vary': case 'Vary': return 'vary';
    case 'set-cookie': case 'Set-Cookie': return 'set-cookie';
    case 'location': case 'Location': return 'location';
    case 'expires': case 'Expires': return 'expires';
    case 'content-encoding': case 'Content-Encoding': return 'content-encoding';
  }
  return undefined;
}

function onConnect(this: TaggedSocket): void { this[kUp]?.connectedNow(); }
/** Where every upstream socket reads (one at a time: reads are delivered one by one). */
const READ_BUF = Buffer.allocUnsafeSlow(64 * 1024);

/** Called with the socket as `this`; true: keep reading (pause() is what stops it). */
function onRead(this: TaggedSocket, nread: number): boolean {
  const c = this[kUp];
  if (c !== undefined) c.onData(READ_BUF.subarray(0, nread));
  return true;
}

/** Body bytes to the sink in a buffer of their own: it may keep them past this read. */
function emitData(call: FastH1Call, piece: Buffer): void {
  call.sink.upstreamData(call, piece.buffer === READ_BUF.buffer ? Buffer.from(piece) : piece);
}
function onError(this: TaggedSocket, err: Error): void {
  const c = this[kUp];
  if (c !== undefined) c.lastError = err;
}
function onClose(this: TaggedSocket): void {
  const c = this[kUp];
  if (c === undefined) return;
  this[kUp] = undefined;
  c.onClose(c.lastError);
}
function onDrain(this: TaggedSocket): void { this[kUp]?.body?.resume(); }
function onConnectTimeout(c: UpConn): void {
  c.connectTimer = null;
  if (!c.connected) {
    c.lastError = new Error(`connect timeout after ${c.t.connectTimeoutMs} ms`);
    c.destroy();
  }
}
function onBodyData(this: TaggedBody, chunk: Buffer): void { this[kUp]?.bodyData(chunk); }
function onBodyEnd(this: TaggedBody): void { this[kUp]?.bodyEnd(); }
function onBodyError(this: TaggedBody, err: Error): void { this[kUp]?.fail('downstream', err); }

// ---------------------------------------------------------------- the call

export class FastH1Call extends Call {
  readonly transport: FastH1Transport;
  conn: UpConn | null = null;
  connected = false;

  constructor(transport: FastH1Transport, gate: Gate, ep: EndpointState, sink: Sink, out: Outgoing) {
    super(gate, ep, sink, out);
    this.transport = transport;
  }

  start(): void { this.transport.acquire(this); }

  pause(): void { this.conn?.sock.pause(); }
  resume(): void { this.conn?.sock.resume(); }

  protected cut(): void {
    const c = this.conn;
    this.conn = null;
    if (c !== null) { c.call = null; c.destroy(); }
  }

  failed(kind: FailureKind, err: Error): void {
    if (this.state !== RUNNING) return;
    this.settle();
    this.sink.upstreamError(this, kind, err);
  }
}

// ---------------------------------------------------------------- encoding

/** undici's path check: no control characters, space or anything beyond latin1. */
function validPath(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0xff) return false;
  }
  return true;
}

function expectsPayload(method: string): boolean {
  return method === 'POST' || method === 'PUT' || method === 'PATCH';
}

/** Hop-by-hop (HOP_BY_HOP), host, expect, content-length and pseudo-headers: never copied. */
function skippedRequestHeader(k: string): boolean {
  switch (k) {
    case 'connection': case 'keep-alive': case 'proxy-connection': case 'transfer-encoding': case 'upgrade':
    case 'http2-settings': case 'host': case 'expect': case 'content-length':
      return true;
  }
  return k.charCodeAt(0) === 58 /* ':' */;
}

/**
 * The request head as undici writes it (flattenHeaders' rules: hop-by-hop, host, expect and
 * pseudo-headers dropped, `te` only as trailers); `length` ≥ 0 adds Content-Length;
 * null when something cannot be encoded.
 */
function requestHead(out: Outgoing, length: number, chunked: boolean): string | null {
  if (!isToken(out.method) || !validPath(out.path) || !validFieldValue(out.authority)) return null;
  let head = `${out.method} ${out.path} HTTP/1.1\r\nhost: ${out.authority}\r\nconnection: keep-alive\r\n`;
  const h = out.headers;
  for (const k in h) {
    if (skippedRequestHeader(k)) continue;
    const v = h[k];
    if (k === 'te' && v !== 'trailers') continue;
    if (!isToken(k)) return null;
    if (typeof v === 'string') {
      if (!validFieldValue(v)) return null;
      head += `${k}: ${v}\r\n`;
    } else {
      for (let i = 0; i < v.length; i++) {
        if (!validFieldValue(v[i])) return null;
        head += `${k}: ${v[i]}\r\n`;
      }
    }
  }
  if (length >= 0) head += `content-length: ${length}\r\n`;
  else if (chunked) head += 'transfer-encoding: chunked\r\n';
  return head + '\r\n';
}

function addValue(h: HeaderMap, name: string, value: string): void {
  const cur = h[name];
  if (cur === undefined) h[name] = value;
  else if (typeof cur === 'string') h[name] = [cur, value];
  else cur.push(value);
}

