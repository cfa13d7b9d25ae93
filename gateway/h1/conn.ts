// The plaintext HTTP/1.1 fast path, downstream side: one FastConnection per client socket
// that parses request heads itself (head.ts) and runs the unchanged request pipeline
// (pipeline.ts handleRequest) with request/response objects implemented here instead of
// node's IncomingMessage/ServerResponse.
//
// Why this shape: the pipeline's stages (checks, normalisation, internal headers,
// x-request-id, route match, CORS, policies, faults, actions, metrics) and the upstream
// half (retries, timeouts, outlier detection, mirrors) stay one code path for every
// protocol, so the fast path cannot drift from the slow one. What it replaces is the part
// the profile blamed: node's per-request HTTP machinery (parser callbacks, IncomingMessage
// and ServerResponse state, header objects, writev of head and body). FastReq/FastRes
// implement exactly what pipeline.ts, cors.ts, local-reply.ts, policy.ts, metrics.ts,
// body.ts and upstream/forward.ts use of them (see the member comments).
//
// Falling back: a head the strict parser does not accept (anything unusual, anything
// malformed, HTTP/1.0, upgrades, Expect) is never answered here. Between two requests — no
// byte of the next request consumed yet — the socket, with every unconsumed byte pushed
// back, goes to node's http server, which then owns the connection for good and answers
// exactly as it did before this file existed. Requests are served one at a time in order;
// pipelined heads wait in the buffer until the response before them is complete.
import { EventEmitter } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { handleRequest, type ListenerRuntime } from '../pipeline.ts';
import { h1Stats } from './enabled.ts';
import { BODY_CHUNKED, BODY_LENGTH, BODY_NONE, distinctOf, FALLBACK, INCOMPLETE, MAX_HEAD_BYTES, parseRequestHead, type RequestHead } from './head.ts';
import { isToken, validFieldValue } from './chars.ts';
import { chunkSizeLine } from './chunked.ts';
import { Sweep } from './sweep.ts';
import { RAW_HAS_DATE, RAW_HAS_LENGTH } from '../upstream/pool.ts';

/** What the connection needs from its port: the current runtime, node's server for fallbacks. */
export interface FastPort {
  readonly runtime: ListenerRuntime;
  /** Hands the socket (unconsumed bytes already unshifted) to node's http server. */
  fallback(sock: Socket): void;
  /**
   * Idle keep-alive connections close after this long without traffic, and a partial head
   * that long without progress gets 408 (node's keepAliveTimeout and headersTimeout).
   */
  readonly keepAliveMs: number;
  /** `Connection: keep-alive` and `Keep-Alive: timeout=N` lines, as node's server writes them. */
  readonly keepAliveHeader: string;
}

const S_HEAD = 0;
const S_BODY = 1;
/** Body complete, response still being written. */
const S_WAIT = 2;
const S_GONE = 3;

const CH_SIZE = 0;
const CH_DATA = 1;
const CH_DATA_CRLF = 2;
const CH_TRAILER = 3;
/** A chunk-size line (with extensions) longer than this is not a client we serve. */
const MAX_CHUNK_LINE = 4096;

/** Pipelined bytes buffered while a response is pending before the socket is paused. */
const MAX_BUFFERED = 2 * MAX_HEAD_BYTES;

const REQUEST_TIMEOUT_REPLY = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';
const BAD_REQUEST_REPLY = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n';

export class FastConnection {
  readonly sock: Socket;
  readonly port: FastPort;
  buf: Buffer | null = null;
  pos = 0;
  state = S_HEAD;
  driving = false;
  req: FastReq | null = null;
  res: FastRes | null = null;
  /** BODY_LENGTH: bytes left; chunked: bytes left in the current chunk. */
  bodyLeft = 0;
  chunked = false;
  chunkState = CH_SIZE;
  /** The request body is complete (or there was none). */
  reqComplete = false;
  /** The response is complete; the body, if any, is drained and dropped. */
  resDone = false;
  /** Body push refused by the request stream: wait for its _read. */
  bodyPaused = false;
  /** Paused because pipelined bytes piled up behind a pending response. */
  inputPaused = false;
  /** Close once the current exchange completes (Connection: close, server closing). */
  closeAfter = false;
  closing = false;
  /** Read or written since the last sweep; quietMs: how long neither happened (by sweeps). */
  active = true;
  quietMs = 0;
  /**
   * Head tails for raw heads (Date?, connection line, chunked?, CRLF) as bytes, by
   * hasDate | close << 1 | chunked << 2; those with a Date are for `tailDate`'s second.
   */
  tails: (Buffer | undefined)[] = [];
  tailDate = '';

  constructor(sock: Socket, port: FastPort) {
    this.sock = sock;
    this.port = port;
    const s = sock as TaggedSocket;
    s[kConn] = this;
    sock.on('data', onSockData);
    sock.on('close', onSockClose);
    sock.on('drain', onSockDrain);
    // Inactivity (no read, no write for keepAliveMs): idle keep-alive connections close,
    // partial heads get 408, as node's server does. Counted by one sweep for all
    // connections rather than a socket timer, which node refreshes on every read and write.
    idleSweep.add(this);
  }

  /** The end of a raw head (see FastRes.writeRawHead), cached per connection. */
  tail(hasDate: boolean, close: boolean, chunked: boolean): Buffer {
    const key = (hasDate ? 1 : 0) | (close ? 2 : 0) | (chunked ? 4 : 0);
    let date = '';
    if (!hasDate) {
      date = dateHeader();
      if (date !== this.tailDate) {
        this.tailDate = date;
        this.tails = [];
      }
    }
    let t = this.tails[key];
    if (t === undefined) {
      t = Buffer.from(`${date}${close ? 'Connection: close\r\n' : this.port.keepAliveHeader}${chunked ? 'Transfer-Encoding: chunked\r\n' : ''}\r\n`, 'latin1');
      this.tails[key] = t;
    }
    return t;
  }

  onData(chunk: Buffer): void {
    this.active = true;
    const b = this.buf;
    if (b === null) { this.buf = chunk; this.pos = 0; }
    else { this.buf = Buffer.concat([b.subarray(this.pos), chunk]); this.pos = 0; }
    this.drive();
  }

  /** Runs the state machine over the buffered bytes as far as it can go. */
  drive(): void {
    if (this.driving || this.state === S_GONE) return;
    this.driving = true;
    try {
      for (;;) {
        if (this.state === S_BODY) {
          if (!this.feedBody()) break;
          continue;
        }
        if (this.state === S_WAIT) {
          const b = this.buf;
          if (b !== null && b.length - this.pos > MAX_BUFFERED && !this.inputPaused) { this.inputPaused = true; this.sock.pause(); }
          break;
        }
        if (this.state !== S_HEAD) break;
        const b = this.buf;
        if (b === null) break;
        const h = parseRequestHead(b, this.pos, b.length);
        if (h === INCOMPLETE) break;
        if (h === FALLBACK) { this.handoff(); break; }
        this.consume(h.length);
        this.begin(h);
      }
    } finally {
      this.driving = false;
    }
  }

  consume(n: number): void {
    this.pos += n;
    if (this.buf !== null && this.pos >= this.buf.length) { this.buf = null; this.pos = 0; }
  }

  begin(h: RequestHead): void {
    h1Stats.served++;
    const req = new FastReq(this, h);
    const res = new FastRes(this, h.method === 'HEAD');
    this.req = req;
    this.res = res;
    this.reqComplete = false;
    this.resDone = false;
    this.bodyPaused = false;
    if (h.close) this.closeAfter = true;
    if (h.bodyKind === BODY_LENGTH) { this.chunked = false; this.bodyLeft = h.contentLength; this.state = S_BODY; }
    else if (h.bodyKind === BODY_CHUNKED) { this.chunked = true; this.chunkState = CH_SIZE; this.bodyLeft = 0; this.state = S_BODY; }
    // No body: the stream ends when first read (_read), not here; push(null) on a stream
    // nobody reads costs more than the rest of the head (it schedules stream ticks).
    else { this.reqComplete = true; req.complete = true; this.state = S_WAIT; }
    handleRequest(this.port.runtime, req as never, res as never);
  }

  /** Moves buffered body bytes into the request; true once the body is complete. */
  feedBody(): boolean {
    const req = this.req!;
    for (;;) {
      if (this.bodyPaused) return false;
      const b = this.buf;
      if (!this.chunked) {
        if (this.bodyLeft === 0) return this.bodyComplete();
        if (b === null) return false;
        const n = Math.min(this.bodyLeft, b.length - this.pos);
        const piece = b.subarray(this.pos, this.pos + n);
        this.bodyLeft -= n;
        this.consume(n);
        if (!this.resDone && !req.push(piece)) this.pauseBody();
        continue;
      }
      if (b === null) return false;
      switch (this.chunkState) {
        case CH_SIZE: {
          const eol = b.indexOf(10, this.pos);
          if (eol < 0) {
            if (b.length - this.pos > MAX_CHUNK_LINE) return this.badBody();
            return false;
          }
          const size = chunkSizeLine(b, this.pos, eol, true);
          if (size < 0) return this.badBody();
          this.consume(eol + 1 - this.pos);
          this.bodyLeft = size;
          this.chunkState = size === 0 ? CH_TRAILER : CH_DATA;
          break;
        }
        case CH_DATA: {
          const n = Math.min(this.bodyLeft, b.length - this.pos);
          const piece = b.subarray(this.pos, this.pos + n);
          this.bodyLeft -= n;
          this.consume(n);
          if (this.bodyLeft === 0) this.chunkState = CH_DATA_CRLF;
          if (!this.resDone && !req.push(piece)) this.pauseBody();
          break;
        }
        case CH_DATA_CRLF: {
          if (b.length - this.pos < 2) return false;
          if (b[this.pos] !== 13 || b[this.pos + 1] !== 10) return this.badBody();
          this.consume(2);
          this.chunkState = CH_SIZE;
          break;
        }
        case CH_TRAILER: {
          // Trailer fields are read and dropped (the upstream request carries none), up to
          // the empty line that ends the message.
          const eol = b.indexOf(10, this.pos);
          if (eol < 0) {
            if (b.length - this.pos > MAX_CHUNK_LINE) return this.badBody();
            return false;
          }
          if (eol === this.pos || b[eol - 1] !== 13) return this.badBody();
          const empty = eol === this.pos + 1;
          if (!empty && !trailerLine(b, this.pos, eol - 1)) return this.badBody();
          this.consume(eol + 1 - this.pos);
          if (empty) return this.bodyComplete();
          break;
        }
      }
    }
  }

  /** The request stream is full: stop reading the socket until it asks for more (_read). */
  pauseBody(): void {
    this.bodyPaused = true;
    this.sock.pause();
  }

  resumeBody(): void {
    this.bodyPaused = false;
    if (!this.inputPaused) this.sock.resume();
    if (!this.driving) this.drive();
  }

  bodyComplete(): boolean {
    this.reqComplete = true;
    const req = this.req!;
    req.complete = true;
    if (!this.resDone) req.push(null);
    if (this.resDone) this.nextExchange();
    else this.state = S_WAIT;
    return this.state === S_HEAD;
  }

  /**
   * A malformed chunked body. Node answers 400 and closes; so do we, unless the response
   * has started (then the connection is cut). The request stream errors: the upstream try
   * stops and nothing half-sent is retried.
   */
  badBody(): false {
    const res = this.res;
    this.state = S_GONE;
    this.req?.fail(new Error('malformed chunked request body'));
    if (res !== null && !res.headersSent && !this.resDone) {
      res.headersSent = true;
      res.writableEnded = true;
      this.sock.end(BAD_REQUEST_REPLY);
    } else {
      this.sock.destroy();
    }
    return false;
  }

  /** The response ended (FastRes.end). */
  responseDone(): void {
    this.resDone = true;
    if (this.state === S_WAIT) this.nextExchange();
    // The rest of the body is read and dropped, as node's server dumps it.
    else if (this.state === S_BODY && this.bodyPaused) this.resumeBody();
  }

  nextExchange(): void {
    this.req = null;
    this.res = null;
    this.state = S_HEAD;
    if (this.closeAfter || this.closing) {
      this.state = S_GONE;
      this.sock.end();
      return;
    }
    if (this.inputPaused) { this.inputPaused = false; this.sock.resume(); }
    if (!this.driving && this.buf !== null) this.drive();
  }

  /** Node's http server takes the connection over from the first unconsumed byte. */
  handoff(): void {
    const sock = this.sock;
    h1Stats.fallbacks++;
    this.state = S_GONE;
    (sock as TaggedSocket)[kConn] = undefined;
    sock.removeListener('data', onSockData);
    sock.removeListener('close', onSockClose);
    sock.removeListener('drain', onSockDrain);
    idleSweep.delete(this);
    sock.pause();
    const rest = this.buf === null ? null : this.buf.subarray(this.pos);
    this.buf = null;
    if (rest !== null && rest.length > 0) sock.unshift(rest);
    this.port.fallback(sock);
  }

  onClose(): void {
    idleSweep.delete(this);
    const prev = this.state;
    this.state = S_GONE;
    this.buf = null;
    const req = this.req;
    const res = this.res;
    if (req !== null && !this.reqComplete && prev !== S_GONE) req.fail(new Error('aborted'));
    if (res !== null && !res.writableEnded) {
      res.destroyed = true;
      res.closed = true;
      res.emit('close');
    }
  }

  onTimeout(): void {
    // A long upstream wait is not idleness: node's server has no request timeout either.
    if (this.state !== S_HEAD) return;
    if (this.buf !== null) {
      this.state = S_GONE;
      this.sock.end(REQUEST_TIMEOUT_REPLY);
    } else {
      this.sock.destroy();
    }
  }

  /** Server closing: idle connections go now, busy ones after their current exchange. */
  closeIdle(): void {
    this.closing = true;
    if (this.state === S_HEAD && this.buf === null) {
      this.state = S_GONE;
      this.sock.destroy();
    }
  }

  get idle(): boolean { return this.state === S_HEAD && this.buf === null; }
}

const kConn = Symbol('meshgate.h1conn');
type TaggedSocket = Socket & { [kConn]?: FastConnection };

function onSockData(this: TaggedSocket, chunk: Buffer): void { this[kConn]?.onData(chunk); }
function onSockClose(this: TaggedSocket): void { this[kConn]?.onClose(); }

/** Sweep period of the inactivity check: a timeout fires up to two periods late (61-62 s for 60 s). */
const SWEEP_MS = 1000;

/** Every open fast connection, checked for inactivity once per SWEEP_MS by one timer. */
const idleSweep = new Sweep<FastConnection>(SWEEP_MS, sweepIdle);

function sweepIdle(conns: Set<FastConnection>): void {
  for (const c of conns) {
    if (c.active) { c.active = false; c.quietMs = 0; continue; }
    c.quietMs += SWEEP_MS;
    if (c.quietMs < c.port.keepAliveMs) continue;
    // As a socket timer would: fires once, then again only after another quiet period.
    c.quietMs = 0;
    c.onTimeout();
  }
}
function onSockDrain(this: TaggedSocket): void {
  const res = this[kConn]?.res;
  if (res != null && res.needDrain) { res.needDrain = false; res.emit('drain'); }
}

function trailerLine(b: Buffer, start: number, end: number): boolean {
  let i = start;
  while (i < end && b[i] !== 58) {
    const c = b[i];
    if (c <= 0x20 || c >= 0x7f) return false;
    i++;
  }
  if (i === start || i === end) return false;
  for (i++; i < end; i++) {
    const c = b[i];
    if ((c < 0x20 && c !== 9) || c === 0x7f) return false;
  }
  return true;
}

// ---------------------------------------------------------------- the request

/**
 * What the pipeline reads of IncomingMessage: method, url, headers (node's join rules),
 * rawHeaders, headersDistinct (routing and policies), socket (peer address), httpVersion;
 * and the body as a Readable (body.ts streams it, pipeline.ts reads small ones whole).
 */
export class FastReq extends Readable {
  readonly conn: FastConnection;
  readonly method: string;
  url: string;
  readonly headers: Record<string, string | string[]>;
  readonly rawHeaders: string[];
  readonly socket: Socket;
  readonly httpVersion = '1.1';
  readonly httpVersionMajor = 1;
  readonly httpVersionMinor = 1;
  complete = false;
  aborted = false;
  /** Sent without a body: the stream is empty. */
  readonly bodyless: boolean;
  private distinct: Record<string, string[]> | null = null;

  constructor(conn: FastConnection, h: RequestHead) {
    super();
    this.conn = conn;
    this.method = h.method;
    this.url = h.url;
    this.headers = h.headers;
    this.rawHeaders = h.rawHeaders;
    this.socket = conn.sock;
    this.bodyless = h.bodyKind === BODY_NONE;
  }

  get connection(): Socket { return this.socket; }

  /** Computed on first use, as node does. */
  get headersDistinct(): Record<string, string[]> {
    return this.distinct ??= distinctOf(this.rawHeaders);
  }

  override _read(): void {
    const c = this.conn;
    if (this.bodyless) { this.push(null); return; }
    if (c.req === this && c.bodyPaused) c.resumeBody();
  }

  /** The client went away (or sent a broken body) before the body was complete. */
  fail(err: Error): void {
    if (this.aborted || this.destroyed) return;
    this.aborted = true;
    this.emit('aborted');
    // IncomingMessage does not throw an unobserved error either.
    if (this.listenerCount('error') > 0) this.destroy(err);
    else this.destroy();
  }
}

// ---------------------------------------------------------------- the response

/** Node's `Date` header, rebuilt at most once a second. */
let dateSecond = 0;
let dateLine = '';
function dateHeader(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateLine = `Date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateLine;
}

/**
 * node's checkIsHttpToken / checkInvalidHeaderChar: writeHead throws on the same input.
 * Table loops rather than regular expressions: they run for every header of every response.
 */
/** Chunks up to this size are copied next to the head / chunk framing: one write syscall. */
const COALESCE_MAX = 16 * 1024;
const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';

/**
 * What the pipeline and the upstream half use of ServerResponse: writeHead(status, map)
 * (throws on headers node would refuse, so forward.ts can turn them into a 502), write
 * (false + 'drain' for backpressure), end, addTrailers, destroy, 'close' when the client
 * leaves first, headersSent, writableEnded, destroyed, closed, statusCode, getHeader.
 *
 * The head is written with the first body bytes (or at end): one write per small response,
 * where node's ServerResponse does a writev of head and body.
 */
export class FastRes extends EventEmitter {
  readonly conn: FastConnection;
  readonly headRequest: boolean;
  statusCode = 200;
  statusMessage = '';
  headersSent = false;
  writableEnded = false;
  destroyed = false;
  closed = false;
  needDrain = false;
  /** Head not written yet (it goes out with the first bytes of body or at end). */
  pendingHead: string | null = null;
  /** writeRawHead's header lines and the rest of its head, not written yet. */
  pendingRaw: Buffer | null = null;
  /** Header lines a policy set (writeRawHead's `set`), written after pendingRaw. */
  pendingAdded = '';
  pendingTail: Buffer | null = null;
  chunked = false;
  /** 204/304/HEAD: a head only. */
  noBody = false;
  private trailers: Record<string, string> | null = null;
  private sentHeaders: Record<string, unknown> | null = null;

  constructor(conn: FastConnection, headRequest: boolean) {
    super();
    this.conn = conn;
    this.headRequest = headRequest;
  }

  getHeader(name: string): unknown {
    const h = this.sentHeaders;
    return h === null ? undefined : h[name];
  }

  writeHead(status: number, headers?: Record<string, unknown>): this {
    if (this.headersSent) throw new Error('Cannot write headers after they are sent to the client');
    let head = statusLine(status);
    let hasLength = false;
    let hasDate = false;
    let connection: string | null = null;
    if (headers !== undefined) {
      for (const name in headers) {
        const v = headers[name];
        if (v === undefined) continue;
        if (!isToken(name)) throw new TypeError(`Header name must be a valid HTTP token ["${name}"]`);
        if (Array.isArray(v)) {
          for (let i = 0; i < v.length; i++) head += headerLine(name, v[i]);
        } else {
          head += headerLine(name, v);
        }
        // Only the four names framing cares about are lower-cased (by their lengths).
        const len = name.length;
        const n = len === 14 || len === 4 || len === 10 || len === 17 ? name.toLowerCase() : '';
        if (n === 'content-length') hasLength = true;
        else if (n === 'date') hasDate = true;
        else if (n === 'connection') connection = String(v).toLowerCase();
        else if (n === 'transfer-encoding') hasLength = true; // the caller frames it
      }
    }
    this.sentHeaders = headers ?? null;
    this.pendingHead = this.headTail(status, head, hasLength, hasDate, connection);
    return this;
  }

  /**
   * A head from the fast-path client as bytes (Sink.upstreamRawHead): `lines` are the
   * header lines writeHead would have written for the same response, so only the status
   * line and the tail (Date, keep-alive, framing) are added here. getHeader() answers
   * undefined for these: nothing reads response headers back on this path (gRPC, the one
   * reader, never takes it).
   */
  writeRawHead(status: number, lines: Buffer, flags: number, nameLens: number, set: Readonly<Record<string, string>> | null): void {
    if (this.headersSent) throw new Error('Cannot write headers after they are sent to the client');
    let added = '';
    if (set !== null) {
      const a = setLines(lines, nameLens, set);
      // A set header the upstream sent as well replaces it in place: the map path does that.
      if (a === null) { this.writeHead(status, Object.assign(linesToMap(lines), set)); return; }
      added = a;
    }
    const close = this.headState(status, (flags & RAW_HAS_LENGTH) !== 0, null) === TAIL_CLOSE;
    this.pendingRaw = lines;
    this.pendingAdded = added;
    this.pendingTail = this.conn.tail((flags & RAW_HAS_DATE) !== 0, close, this.chunked);
  }

  /**
   * Status and framing state for a head about to be written: noBody, chunked (no length
   * and a body), whether the connection closes after it. Returns which connection line
   * the head ends with.
   */
  private headState(status: number, hasLength: boolean, connection: string | null): number {
    this.statusCode = status;
    this.noBody = this.headRequest || status === 204 || status === 304 || (status >= 100 && status < 200);
    this.chunked = !hasLength && !this.noBody;
    this.headersSent = true;
    const conn = this.conn;
    if (connection !== null) {
      if (connection.includes('close')) conn.closeAfter = true;
      return TAIL_GIVEN;
    }
    if (conn.closeAfter || conn.closing) {
      conn.closeAfter = true;
      return TAIL_CLOSE;
    }
    return TAIL_KEEP_ALIVE;
  }

  /** headState, then what follows the header lines (Date, connection, framing, CRLF). */
  private headTail(status: number, head: string, hasLength: boolean, hasDate: boolean, connection: string | null): string {
    const mode = this.headState(status, hasLength, connection);
    if (!hasDate) head += dateHeader();
    if (mode === TAIL_CLOSE) head += 'Connection: close\r\n';
    else if (mode === TAIL_KEEP_ALIVE) head += this.conn.port.keepAliveHeader;
    if (this.chunked) head += 'Transfer-Encoding: chunked\r\n';
    return head + CRLF;
  }

  addTrailers(t: Record<string, string>): void {
    this.trailers = t;
  }

  write(chunk: Buffer | string): boolean {
    if (this.writableEnded || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    const body = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (body.length === 0 || this.noBody) {
      if (this.pendingHead !== null || this.pendingRaw !== null) return this.flush(null, false);
      return true;
    }
    return this.flush(body, false);
  }

  end(chunk?: Buffer | string): this {
    if (this.writableEnded) return this;
    if (this.destroyed) { this.writableEnded = true; return this; }
    if (!this.headersSent) this.writeHead(this.statusCode);
    let body: Buffer | null = null;
    if (chunk !== undefined && !this.noBody) {
      body = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (body.length === 0) body = null;
    }
    this.writableEnded = true;
    this.flush(body, true);
    this.conn.responseDone();
    return this;
  }

  /** Writes the pending head (if any), the framed body piece, and at `last` the final chunk. */
  private flush(body: Buffer | null, last: boolean): boolean {
    this.conn.active = true;
    const sock = this.conn.sock;
    const raw = this.pendingRaw;
    if (raw !== null) {
      const tail = this.pendingTail!;
      const added = this.pendingAdded;
      this.pendingRaw = null;
      this.pendingTail = null;
      this.pendingAdded = '';
      return this.flushRaw(raw, added, tail, body, last);
    }
    let prefix = this.pendingHead ?? '';
    this.pendingHead = null;
    let suffix = '';
    if (this.chunked) {
      if (body !== null) {
        prefix += body.length.toString(16) + CRLF;
        suffix = CRLF;
      }
      if (last) suffix += this.trailers === null ? LAST_CHUNK : lastChunkWithTrailers(this.trailers);
    }
    let ok: boolean;
    if (body === null) {
      ok = prefix.length + suffix.length === 0 ? true : sock.write(prefix + suffix, 'latin1');
    } else if (body.length <= COALESCE_MAX) {
      const p = prefix.length;
      const out = Buffer.allocUnsafe(p + body.length + suffix.length);
      if (p > 0) out.write(prefix, 0, 'latin1');
      body.copy(out, p);
      if (suffix.length > 0) out.write(suffix, p + body.length, 'latin1');
      ok = sock.write(out);
    } else {
      sock.cork();
      if (prefix.length > 0) sock.write(prefix, 'latin1');
      sock.write(body);
      ok = suffix.length > 0 ? sock.write(suffix, 'latin1') : true;
      sock.uncork();
      ok = ok && sock.writableLength < sock.writableHighWaterMark;
    }
    if (!ok) this.needDrain = true;
    return ok;
  }

  /**
   * flush() for a head given as bytes: status line, the lines, `tail` (the rest of the head)
   * and the body's first piece in one buffer, one write.
   */
  /**
   * flush() for a head given as bytes: status line, the lines, the tail and the body's first
   * piece (framed when chunked) in one buffer, one write; the three head parts are Buffers
   * already (the status line and tail cached), so this is copies only.
   */
  private flushRaw(lines: Buffer, added: string, tail: Buffer, body: Buffer | null, last: boolean): boolean {
    const sock = this.conn.sock;
    const status = statusLineBytes(this.statusCode);
    let frame = '';
    let suffix = '';
    if (this.chunked) {
      if (body !== null) {
        frame = body.length.toString(16) + CRLF;
        suffix = CRLF;
      }
      if (last) suffix += this.trailers === null ? LAST_CHUNK : lastChunkWithTrailers(this.trailers);
    }
    const whole = body === null || body.length <= COALESCE_MAX;
    const inline = body !== null && whole ? body.length : 0;
    // `added` is latin-1 (setLines checked it): one byte per character.
    const out = Buffer.allocUnsafe(status.length + lines.length + added.length + tail.length + frame.length + (whole ? inline + suffix.length : 0));
    out.set(status, 0);
    let o = status.length;
    out.set(lines, o);
    o += lines.length;
    if (added.length > 0) o += out.write(added, o, 'latin1');
    out.set(tail, o);
    o += tail.length;
    if (frame.length > 0) o += out.write(frame, o, 'latin1');
    if (whole) {
      if (inline > 0) {
        out.set(body!, o);
        o += inline;
      }
      if (suffix.length > 0) out.write(suffix, o, 'latin1');
      const ok = sock.write(out);
      if (!ok) this.needDrain = true;
      return ok;
    }
    sock.cork();
    sock.write(out);
    sock.write(body!);
    let ok = suffix.length > 0 ? sock.write(suffix, 'latin1') : true;
    sock.uncork();
    ok = ok && sock.writableLength < sock.writableHighWaterMark;
    if (!ok) this.needDrain = true;
    return ok;
  }

  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.conn.sock.destroy();
    return this;
  }
}

/**
 * `set` as header lines to append after a raw head's `lines`, or null when one of its names
 * is among them already (or frames the message: the map path must handle it). Throws on
 * what writeHead would refuse.
 */
function setLines(lines: Buffer, nameLens: number, set: Readonly<Record<string, string>>): string | null {
  let out = '';
  for (const name in set) {
    if (name === 'content-length' || name === 'transfer-encoding' || name === 'connection' || name === 'date') return null;
    // Only when a name of this length is there can it be this one.
    if ((nameLens & (1 << (name.length < 31 ? name.length : 31))) !== 0 && hasLine(lines, name)) return null;
    if (!isToken(name)) throw new TypeError(`Header name must be a valid HTTP token ["${name}"]`);
    out += headerLine(name, set[name]);
  }
  return out;
}

/** A line of `lines` starts with `name:`. */
function hasLine(lines: Buffer, name: string): boolean {
  const needle = `${name}:`;
  for (let at = lines.indexOf(needle); at >= 0; at = lines.indexOf(needle, at + 1)) {
    if (at === 0 || lines[at - 1] === 10) return true;
  }
  return false;
}

/** Raw head lines (`name: value\r\n`, names lower-case and distinct) back as a header map. */
function linesToMap(lines: Buffer): Record<string, string> {
  const map: Record<string, string> = {};
  for (const line of lines.toString('latin1').split('\r\n')) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    map[line.slice(0, colon)] = line.slice(colon + 2);
  }
  return map;
}

/** `HTTP/1.1 200 OK\r\n`, node's reason phrases; built once per status. */
const STATUS_LINES: string[] = [];
function statusLine(status: number): string {
  return STATUS_LINES[status] ??= `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'unknown'}\r\n`;
}
const STATUS_LINE_BYTES: Buffer[] = [];
function statusLineBytes(status: number): Buffer {
  return STATUS_LINE_BYTES[status] ??= Buffer.from(statusLine(status), 'latin1');
}

/** headState's answers: the head ends with the port's keep-alive lines, `Connection: close`, or the caller's own. */
const TAIL_KEEP_ALIVE = 0;
const TAIL_CLOSE = 1;
const TAIL_GIVEN = 2;

function headerLine(name: string, v: unknown): string {
  const s = typeof v === 'string' ? v : String(v);
  if (!validFieldValue(s)) throw new TypeError(`Invalid character in header content ["${name}"]`);
  return `${name}: ${s}\r\n`;
}

function lastChunkWithTrailers(t: Record<string, string>): string {
  let out = '0\r\n';
  for (const k in t) {
    if (!isToken(k)) throw new TypeError(`Trailer name must be a valid HTTP token ["${k}"]`);
    out += headerLine(k, t[k]);
  }
  return out + CRLF;
}

/** Closes the socket now if it is an idle fast-path connection; marks a busy one to close after its exchange. */
export function closeIdleFast(sock: Socket): void {
  (sock as TaggedSocket)[kConn]?.closeIdle();
}
