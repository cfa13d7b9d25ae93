// HTTP/2 to an endpoint over one node:http2 session: h2c for plaintext clusters, ALPN h2
// over TLS otherwise. Requests wait for the session's handshake (so a failed connect is a
// connect failure, not a reset), then each becomes a stream; the gate in pool.ts caps
// concurrent streams at http2MaxRequests. A session that got GOAWAY, closed, idled out or
// served maxRequestsPerConnection streams is let go (its streams finish) and the next
// request dials a new one.
//
// Stream and session events are handled by top-level functions that find their Call or
// transport through a symbol on the emitter: nothing is allocated per request beyond the
// stream and its header object.
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders, IncomingHttpStatusHeader, OutgoingHttpHeaders, SecureClientSessionOptions } from 'node:http2';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import type { ConnectionPool } from '../../api/proxyconfig.ts';
import type { EndpointState, Transport } from './endpoint.ts';
import { Call, HOP_BY_HOP, RUNNING } from './pool.ts';
import type { Gate, Outgoing, Sink } from './pool.ts';
import type { TlsSetup } from './tls.ts';
import type { HeaderMap } from './types.ts';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = http2.constants;
const kCall = Symbol('meshgate.h2call');
const kTransport = Symbol('meshgate.h2transport');

type TaggedSession = ClientHttp2Session & { [kTransport]?: H2Transport };
type TaggedStream = ClientHttp2Stream & { [kCall]?: H2Call };

export class H2Transport implements Transport {
  readonly url: string;
  readonly scheme: 'http' | 'https';
  readonly options: SecureClientSessionOptions;
  readonly cp: ConnectionPool;
  session: TaggedSession | null = null;
  connected = false;
  connectTimer: NodeJS.Timeout | null = null;
  lastError: Error | null = null;
  streamsOnSession = 0;
  /** Calls waiting for the handshake. */
  waiting: H2Call[] = [];
  /** Every session still open, including let-go ones with streams in flight. */
  readonly sessions = new Set<ClientHttp2Session>();
  closed = false;

  constructor(ep: EndpointState, cp: ConnectionPool, tls: TlsSetup | null, lookup?: LookupFunction) {
    this.scheme = tls === null ? 'http' : 'https';
    this.url = `${this.scheme}://${ep.hostPort}`;
    this.cp = cp;
    this.options = {
      settings: { enablePush: false },
      // Passed on to net/tls.connect; without servername, node still sends the host name
      // (not the address it resolved to) as SNI.
      ...(lookup !== undefined ? { lookup } : {}),
      ...(tls !== null ? {
        secureContext: tls.secureContext,
        rejectUnauthorized: tls.rejectUnauthorized,
        checkServerIdentity: tls.checkServerIdentity,
        ...(tls.servername !== '' ? { servername: tls.servername } : {}),
      } : {}),
    };
  }

  send(call: H2Call): void {
    const s = this.session;
    if (s !== null && this.connected) { call.begin(s); return; }
    this.waiting.push(call);
    if (s === null) this.connect();
  }

  connect(): void {
    this.connected = false;
    this.lastError = null;
    this.streamsOnSession = 0;
    const s = http2.connect(this.url, this.options) as TaggedSession;
    s[kTransport] = this;
    this.session = s;
    this.sessions.add(s);
    s.on('connect', onSessionConnect);
    s.on('error', onSessionError);
    s.on('close', onSessionClose);
    s.on('goaway', onSessionGoaway);
    this.connectTimer = setTimeout(onConnectTimeout, this.cp.connectTimeoutMs, this, s);
  }

  /** Stops giving new streams to the current session; it closes once its streams are done. */
  letGo(s: ClientHttp2Session): void {
    if (this.session !== s) return;
    this.session = null;
    this.connected = false;
    if (!s.closed && !s.destroyed) s.close();
  }

  failWaiting(err: Error): void {
    const w = this.waiting;
    this.waiting = [];
    for (const call of w) call.connectFailed(err);
  }

  close(): Promise<void> {
    this.closed = true;
    this.failWaiting(new Error('cluster closed'));
    const open = [...this.sessions];
    return Promise.all(open.map((s) => new Promise<void>((resolve) => {
      if (s.closed || s.destroyed) { resolve(); return; }
      s.close(() => resolve());
    }))).then(ignore);
  }

  destroy(): void {
    this.closed = true;
    this.failWaiting(new Error('cluster closed'));
    for (const s of this.sessions) s.destroy();
  }
}

function ignore(): void {}

function onSessionConnect(this: TaggedSession): void {
  const t = this[kTransport]!;
  if (t.session !== this) return;
  if (t.connectTimer !== null) { clearTimeout(t.connectTimer); t.connectTimer = null; }
  t.connected = true;
  if (t.cp.idleTimeoutMs > 0) this.setTimeout(t.cp.idleTimeoutMs, onSessionIdle);
  const w = t.waiting;
  t.waiting = [];
  for (const call of w) {
    // A let-go session (maxRequestsPerConnection reached while flushing) sends the rest elsewhere.
    if (t.session === this) call.begin(this);
    else t.send(call);
  }
}

function onSessionError(this: TaggedSession, err: Error): void {
  this[kTransport]!.lastError = err;
}

function onSessionClose(this: TaggedSession): void {
  const t = this[kTransport]!;
  t.sessions.delete(this);
  if (t.session !== this) return;
  t.session = null;
  const wasConnected = t.connected;
  t.connected = false;
  if (t.connectTimer !== null) { clearTimeout(t.connectTimer); t.connectTimer = null; }
  if (!wasConnected) t.failWaiting(t.lastError ?? new Error('upstream connection closed during the handshake'));
}

function onSessionGoaway(this: TaggedSession): void {
  this[kTransport]!.letGo(this);
}

function onSessionIdle(this: TaggedSession): void {
  this[kTransport]!.letGo(this);
}

function onConnectTimeout(t: H2Transport, s: TaggedSession): void {
  t.connectTimer = null;
  if (t.session !== s || t.connected) return;
  t.lastError = new Error('upstream connect timeout');
  s.destroy();
}

export class H2Call extends Call {
  readonly transport: H2Transport;
  stream: TaggedStream | null = null;
  trailers: HeaderMap | null = null;
  error: Error | null = null;
  gotHeaders = false;

  constructor(transport: H2Transport, gate: Gate, ep: EndpointState, sink: Sink, out: Outgoing) {
    super(gate, ep, sink, out);
    this.transport = transport;
  }

  start(): void {
    if (this.transport.closed) { this.connectFailed(new Error('cluster closed')); return; }
    this.transport.send(this);
  }

  begin(session: TaggedSession): void {
    if (this.state !== RUNNING) return;
    const out = this.out;
    const body = out.body;
    const empty = body === null || (Buffer.isBuffer(body) && body.length === 0);
    let stream: TaggedStream;
    try {
      stream = session.request(requestHeaders(out, this.transport.scheme), { endStream: empty }) as TaggedStream;
    } catch (err) {
      this.settle();
      this.sink.upstreamError(this, 'invalid', err as Error);
      return;
    }
    const t = this.transport;
    const max = t.cp.maxRequestsPerConnection;
    if (max > 0 && ++t.streamsOnSession >= max) t.letGo(session);
    stream[kCall] = this;
    this.stream = stream;
    stream.on('response', onStreamResponse);
    stream.on('data', onStreamData);
    stream.on('trailers', onStreamTrailers);
    stream.on('end', onStreamEnd);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    if (!empty) {
      if (Buffer.isBuffer(body)) stream.end(body);
      else (body as Readable).pipe(stream);
    }
  }

  connectFailed(err: Error): void {
    if (this.state !== RUNNING) return;
    this.settle();
    this.sink.upstreamError(this, 'connect', err);
  }

  pause(): void { this.stream?.pause(); }
  resume(): void { this.stream?.resume(); }
  protected cut(): void {
    const s = this.stream;
    if (s !== null && !s.destroyed) s.close(NGHTTP2_CANCEL);
  }
}

// HPACK would carry CR, LF and NUL, and node's http2 does not refuse them; an HTTP/1.1 hop
// further on would then see injected headers. Same rule as node's HTTP/1.1 check.
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function checkValue(name: string, v: string | string[]): void {
  if (typeof v === 'string' ? INVALID_VALUE.test(v) : v.some((x) => INVALID_VALUE.test(x))) {
    throw new Error(`invalid character in header ${name}`);
  }
}

/** Pseudo-headers first, then the route's headers minus what HTTP/2 forbids. */
function requestHeaders(out: Outgoing, scheme: string): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = {
    ':method': out.method,
    ':path': out.path,
    ':authority': out.authority,
    ':scheme': scheme,
  };
  const src = out.headers;
  const whole = Buffer.isBuffer(out.body);
  for (const k in src) {
    if (HOP_BY_HOP[k] === 1 || k === 'host' || k === 'expect' || k.charCodeAt(0) === 58) continue;
    if (whole && k === 'content-length') continue;
    const v = src[k];
    if (k === 'te' && v !== 'trailers') continue;
    checkValue(k, v);
    h[k] = v;
  }
  checkValue(':path', out.path);
  checkValue(':authority', out.authority);
  if (whole && (out.body as Buffer).length > 0) h['content-length'] = (out.body as Buffer).length;
  return h;
}

/** Response head or trailers as a plain object: pseudo-headers dropped. */
function plainHeaders(src: IncomingHttpHeaders): HeaderMap {
  const h: HeaderMap = {};
  for (const k in src) {
    if (k.charCodeAt(0) === 58) continue;
    const v = src[k];
    if (v !== undefined) h[k] = v;
  }
  return h;
}

function onStreamResponse(this: TaggedStream, headers: IncomingHttpHeaders & IncomingHttpStatusHeader, flags: number): void {
  const call = this[kCall]!;
  if (call.state !== RUNNING) return;
  call.gotHeaders = true;
  call.sink.upstreamHeaders(call, Number(headers[':status']), plainHeaders(headers), (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
}

function onStreamData(this: TaggedStream, chunk: Buffer): void {
  const call = this[kCall]!;
  if (call.state === RUNNING) call.sink.upstreamData(call, chunk);
}

function onStreamTrailers(this: TaggedStream, trailers: IncomingHttpHeaders): void {
  this[kCall]!.trailers = plainHeaders(trailers);
}

function onStreamEnd(this: TaggedStream): void {
  const call = this[kCall]!;
  if (call.state !== RUNNING || !call.gotHeaders) return;
  call.settle();
  call.sink.upstreamEnd(call, call.trailers);
}

function onStreamError(this: TaggedStream, err: Error): void {
  this[kCall]!.error = err;
}

function onStreamClose(this: TaggedStream): void {
  const call = this[kCall]!;
  if (call.state !== RUNNING) return;
  call.settle();
  const code = this.rstCode;
  const kind = code === NGHTTP2_REFUSED_STREAM && !call.gotHeaders ? 'refused' : 'reset';
  call.sink.upstreamError(call, kind, call.error ?? new Error(`upstream reset the stream (code ${code})`));
}
