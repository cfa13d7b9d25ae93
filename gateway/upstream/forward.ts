// One downstream request's trip upstream, as Envoy's router runs it:
//   pick an endpoint (load balancer; earlier tries' endpoints avoided) → admission gate
//   (overflow: 503 UO) → try (per-try timeout) → on a retriable outcome, back off and try
//   again while attempts remain and nothing was sent downstream → response head through
//   hooks.onHeaders to the client → body and trailers streamed → ForwardResult.
// The route timeout spans everything: before response headers it becomes a 504 local reply,
// after them it resets the downstream stream. A client that goes away aborts the try (DC).
// gRPC requests get their local replies as trailers-only gRPC statuses instead of HTTP errors.
//
// An Exchange is the one object allocated per request (plus the per-try Call); timers and
// stream listeners are top-level functions that get it as an argument or through a symbol.
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { Logger } from 'pino';
import type { RetryPolicy } from '../../api/proxyconfig.ts';
import { BodySource } from './body.ts';
import type { ClusterRuntime } from './cluster.ts';
import type { EndpointState } from './endpoint.ts';
import { hashString, randomHex16, requestHash } from './lb.ts';
import { admit, stripResponseHopByHop } from './pool.ts';
import type { Call, FailureKind, Outgoing, Sink } from './pool.ts';
import type { DownstreamReq, DownstreamRes, ForwardDone, ForwardResult, HeaderMap, ResponseFlag, ResponseHooks, UpstreamRequest } from './types.ts';

// ---------------------------------------------------------------- retry policy

const R_5XX = 1;
const R_GATEWAY = 2;
const R_RESET = 4;
const R_CONNECT = 8;
const R_4XX = 16;
const R_REFUSED = 32;
const R_CODES = 64;
const R_CANCELLED = 128;
const R_DEADLINE = 256;
const R_INTERNAL = 512;
const R_RESOURCE = 1024;
const R_UNAVAILABLE = 2048;
const R_GRPC = R_CANCELLED | R_DEADLINE | R_INTERNAL | R_RESOURCE | R_UNAVAILABLE;

const RETRY_BITS: Readonly<Record<string, number>> = {
  '5xx': R_5XX,
  'gateway-error': R_GATEWAY,
  reset: R_RESET,
  'connect-failure': R_CONNECT,
  'retriable-4xx': R_4XX,
  'refused-stream': R_REFUSED,
  'retriable-status-codes': R_CODES,
  cancelled: R_CANCELLED,
  'deadline-exceeded': R_DEADLINE,
  internal: R_INTERNAL,
  'resource-exhausted': R_RESOURCE,
  unavailable: R_UNAVAILABLE,
};

interface CompiledRetry {
  attempts: number;
  perTryTimeoutMs: number;
  bits: number;
  codes: number[];
}

// Route retry policies are long-lived objects of the applied config: compiled on first use.
const compiledRetries = new WeakMap<RetryPolicy, CompiledRetry>();

export function compileRetry(p: RetryPolicy): CompiledRetry {
  let c = compiledRetries.get(p);
  if (c === undefined) {
    let bits = 0;
    for (const name of p.retryOn) bits |= RETRY_BITS[name.trim()] ?? 0;
    // Istio lists status codes in retryOn itself; they are retried whether or not the
    // `retriable-status-codes` policy name is spelled out.
    c = { attempts: Math.max(0, p.attempts), perTryTimeoutMs: p.perTryTimeoutMs ?? 0, bits, codes: p.retriableStatusCodes };
    compiledRetries.set(p, c);
  }
  return c;
}

export function retriableFailure(bits: number, kind: FailureKind): boolean {
  switch (kind) {
    case 'connect': return (bits & (R_CONNECT | R_5XX | R_GATEWAY | R_RESET)) !== 0;
    case 'reset': return (bits & (R_5XX | R_GATEWAY | R_RESET)) !== 0;
    case 'refused': return (bits & (R_REFUSED | R_5XX | R_GATEWAY | R_RESET)) !== 0;
    default: return false;
  }
}

function grpcBit(status: string | string[] | undefined): number {
  switch (typeof status === 'string' ? status : undefined) {
    case '1': return R_CANCELLED;
    case '4': return R_DEADLINE;
    case '8': return R_RESOURCE;
    case '13': return R_INTERNAL;
    case '14': return R_UNAVAILABLE;
    default: return 0;
  }
}

function retriableResponse(r: CompiledRetry, status: number, headers: HeaderMap): boolean {
  const b = r.bits;
  if ((b & R_5XX) !== 0 && status >= 500) return true;
  if ((b & R_GATEWAY) !== 0 && (status === 502 || status === 503 || status === 504)) return true;
  if ((b & R_4XX) !== 0 && status === 409) return true;
  if (r.codes.length > 0 && r.codes.includes(status)) return true;
  // gRPC statuses are read from a trailers-only response's head.
  if ((b & R_GRPC) !== 0 && (b & grpcBit(headers['grpc-status'])) !== 0) return true;
  return false;
}

/** Envoy's jittered exponential backoff: 25 ms base, full jitter, ceiling 250 ms. */
function backoffMs(retriesDone: number): number {
  return Math.random() * Math.min(250, 25 * 2 ** Math.min(retriesDone, 4));
}

// ---------------------------------------------------------------- local replies

const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_INTERNAL = 13;

export const BODY_NO_HEALTHY = 'no healthy upstream';
export const BODY_TIMEOUT = 'upstream request timeout';
const RESET_PREFIX = 'upstream connect error or disconnect/reset before headers. reset reason: ';

function resetBody(reason: string): string { return RESET_PREFIX + reason; }

function isH2(res: DownstreamRes): res is Http2ServerResponse {
  return (res as Http2ServerResponse).stream !== undefined;
}

function downstreamClosed(res: DownstreamRes): boolean {
  if (isH2(res)) return res.stream.destroyed || res.stream.closed;
  return res.destroyed || res.closed;
}

/** gRPC's percent-encoding of grpc-message: bytes outside printable ASCII, and `%`. */
function grpcMessage(s: string): string {
  return /^[\x20-\x24\x26-\x7e]*$/.test(s) ? s : encodeURIComponent(s);
}

/**
 * Writes a local reply (Envoy's): HTTP status + plain text, or for gRPC a trailers-only
 * response with grpc-status. Returns the body bytes written.
 */
export function writeLocalReply(res: DownstreamRes, hooks: ResponseHooks | null, grpc: boolean, status: number, body: string, grpcStatus: number): number {
  if (grpc) {
    const headers: HeaderMap = { 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': grpcMessage(body) };
    if (hooks !== null) callHook(hooks, 200, headers);
    if (isH2(res)) {
      (headers as Record<string, unknown>)[':status'] = 200;
      res.stream.respond(headers, { endStream: true });
    } else {
      (res as ServerResponse).writeHead(200, headers as OutgoingHttpHeaders);
      res.end();
    }
    return 0;
  }
  const headers: HeaderMap = { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) };
  if (hooks !== null) callHook(hooks, status, headers);
  (res as ServerResponse).writeHead(status, headers as OutgoingHttpHeaders);
  res.end(body);
  return Buffer.byteLength(body);
}

/**
 * The downstream half's response edits. A throw there must not escape into a timer or an
 * undici/http2 callback (it would crash the proxy or wedge the connection): the response
 * goes out unedited and the error is logged.
 */
function callHook(hooks: ResponseHooks, status: number, headers: HeaderMap, log: Logger | null = null): void {
  try {
    hooks.onHeaders(status, headers);
  } catch (err) {
    log?.error({ err }, 'response header hook failed');
  }
}

// ---------------------------------------------------------------- the exchange

const kExchange = Symbol('meshgate.exchange');
type TaggedRes = DownstreamRes & { [kExchange]?: Exchange };

const EMPTY = Buffer.alloc(0);
const NO_HEADERS: HeaderMap = Object.freeze({}) as HeaderMap;

/** A downstream response that takes a head as bytes (the HTTP/1.1 fast path's FastRes). */
interface RawHeadRes { writeRawHead(status: number, lines: Buffer, flags: number, nameLens: number, set: Readonly<Record<string, string>> | null): void }
// Frozen: a result's flags are read, never edited; a push would throw rather than leak.
const NO_RESPONSE_FLAGS = Object.freeze([]) as unknown as ResponseFlag[];

export class Exchange implements Sink {
  readonly c: ClusterRuntime;
  readonly req: DownstreamReq;
  readonly res: TaggedRes;
  readonly up: UpstreamRequest;
  readonly hooks: ResponseHooks;
  /** Called once from finish() with `doneArg` and the result. */
  readonly done: ForwardDone<unknown>;
  readonly doneArg: unknown;
  readonly retry: CompiledRetry | null;
  readonly out: Outgoing;
  readonly src: BodySource | null;
  hash = -1;
  setCookie: string | null = null;
  /** The response head may reach the client as the fast-path client's bytes (Sink.rawHead). */
  rawHead = false;

  call: Call | null = null;
  endpoint: EndpointState | null = null;
  tried: EndpointState[] | null = null;
  attempts = 0;
  /** NO_RESPONSE_FLAGS (shared, never written) until the first flag: most requests have none. */
  flags: ResponseFlag[] = NO_RESPONSE_FLAGS;
  status = 0;
  bytesSent = 0;
  headersSent = false;
  trailersOnly = false;
  finished = false;
  overallTimer: NodeJS.Timeout | null = null;
  tryTimer: NodeJS.Timeout | null = null;
  backoffTimer: NodeJS.Timeout | null = null;

  constructor(c: ClusterRuntime, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks, done: ForwardDone<unknown>, doneArg: unknown) {
    this.c = c;
    this.req = req;
    this.res = res as TaggedRes;
    this.up = up;
    this.hooks = hooks;
    this.done = done;
    this.doneArg = doneArg;
    this.retry = up.retries !== null ? compileRetry(up.retries) : null;
    let body: Buffer | null = up.body;
    let src: BodySource | null = null;
    if (body === null) {
      if (hasNoBody(req)) body = EMPTY;
      else src = new BodySource(req);
    }
    this.src = src;
    this.out = { method: up.method, path: up.path, authority: up.authority, headers: up.headers, body };
  }

  begin(): void {
    const c = this.c;
    c.inflight++;
    const res = this.res;
    if (downstreamClosed(res)) { this.flag('DC'); this.finish(); return; }
    res[kExchange] = this;
    res.on('close', onDownstreamClose);
    if (this.up.timeoutMs !== null && this.up.timeoutMs > 0) this.overallTimer = setTimeout(onOverallTimeout, this.up.timeoutMs, this);
    if (c.def.lb.kind === 'CONSISTENT_HASH') {
      this.hash = requestHash(c.def.lb, this.up);
      if (this.hash < 0 && c.cookieAttributes !== null) {
        const value = randomHex16();
        this.setCookie = `${(c.def.lb as { name: string }).name}="${value}"${c.cookieAttributes}`;
        this.hash = hashString(value);
      }
    }
    this.rawHead = (this.hooks.noop === true || this.hooks.setOnly !== undefined) && this.setCookie === null && !this.up.grpc && typeof (res as unknown as Partial<RawHeadRes>).writeRawHead === 'function';
    this.attempt();
  }

  attempt(): void {
    const c = this.c;
    const ep = c.picker.pick(this.hash, this.tried);
    if (ep === null) {
      this.flag('UH');
      this.localReply(503, BODY_NO_HEALTHY, GRPC_UNAVAILABLE);
      return;
    }
    this.attempts++;
    this.endpoint = ep;
    if (this.src !== null) this.out.body = this.src.open();
    const call = c.newCall(ep, this, this.out);
    this.call = call;
    const r = this.retry;
    if (r !== null && r.perTryTimeoutMs > 0) this.tryTimer = setTimeout(onTryTimeout, r.perTryTimeoutMs, this, call);
    if (!admit(call)) {
      this.call = null;
      this.clearTryTimer();
      c.overflows++;
      this.flag('UO');
      this.localReply(503, resetBody('overflow'), GRPC_UNAVAILABLE);
    }
  }

  flag(f: ResponseFlag): void {
    if (this.flags === NO_RESPONSE_FLAGS) this.flags = [f];
    else this.flags.push(f);
  }

  /** Retries left, nothing sent downstream, and the request body can be sent again. */
  canRetry(): boolean {
    const r = this.retry;
    if (r === null || this.finished || this.headersSent || this.attempts > r.attempts) return false;
    const src = this.src;
    return src === null || (src.consumed === 0 && !src.failed);
  }

  /** The retry policy would retry, but its attempts are used up: Envoy's URX. */
  noteExhausted(): void {
    const r = this.retry;
    if (r !== null && r.attempts > 0 && this.attempts > r.attempts) this.flag('URX');
  }

  scheduleRetry(): void {
    (this.tried ??= []).push(this.endpoint!);
    this.backoffTimer = setTimeout(onBackoffDone, backoffMs(this.attempts - 1), this);
  }

  // -------------------------------------------------------------- Sink

  /** Outlier detection hears the status; true when the policy retries it (the call is aborted). */
  retriedOn(call: Call, status: number, headers: HeaderMap): boolean {
    this.c.recordStatus(call.ep, status);
    const r = this.retry;
    if (r !== null && retriableResponse(r, status, headers)) {
      if (this.canRetry()) {
        call.abort();
        this.call = null;
        this.clearTryTimer();
        this.scheduleRetry();
        return true;
      }
      this.noteExhausted();
    }
    this.clearTryTimer();
    return false;
  }

  upstreamRawHead(call: Call, status: number, lines: Buffer, flags: number, nameLens: number): void {
    if (call !== this.call) return;
    // rawHeadLines refuses heads with grpc-status: no header a retry reads is missing here.
    if (this.retriedOn(call, status, NO_HEADERS)) return;
    this.status = status;
    this.headersSent = true;
    try {
      (this.res as unknown as RawHeadRes).writeRawHead(status, lines, flags, nameLens, this.hooks.setOnly ?? null);
    } catch (err) {
      // A set header a client cannot be sent: as upstreamHeaders answers it.
      this.headersCannotBeSent(call, err as Error);
    }
  }

  upstreamHeaders(call: Call, status: number, headers: HeaderMap, endStream: boolean): void {
    if (call !== this.call) return;
    if (this.retriedOn(call, status, headers)) return;
    stripResponseHopByHop(headers);
    if (this.setCookie !== null) appendHeader(headers, 'set-cookie', this.setCookie);
    callHook(this.hooks, status, headers, this.c.log);
    this.status = status;
    this.headersSent = true;
    const res = this.res;
    try {
      if (endStream && this.up.grpc && isH2(res)) {
        // A trailers-only gRPC reply must stay one HEADERS frame with END_STREAM.
        (headers as Record<string, unknown>)[':status'] = status;
        res.stream.respond(headers, { endStream: true });
        this.trailersOnly = true;
      } else {
        (res as ServerResponse).writeHead(status, headers as OutgoingHttpHeaders);
      }
    } catch (err) {
      // Headers a client cannot be sent (an edit produced an invalid value).
      this.headersCannotBeSent(call, err as Error);
    }
  }

  headersCannotBeSent(call: Call, err: Error): void {
    call.abort();
    this.call = null;
    this.headersSent = false;
    this.status = 502;
    this.bytesSent = writeLocalReply(this.res, null, this.up.grpc, 502, `upstream response headers cannot be forwarded: ${err.message}`, GRPC_INTERNAL);
    this.finish();
  }

  upstreamData(call: Call, chunk: Buffer): void {
    if (call !== this.call) return;
    this.bytesSent += chunk.length;
    if (!(this.res as ServerResponse).write(chunk)) {
      call.pause();
      this.res.once('drain', onDownstreamDrain);
    }
  }

  upstreamEnd(call: Call, trailers: HeaderMap | null): void {
    if (call !== this.call) return;
    this.call = null;
    if (!this.trailersOnly) {
      const res = this.res;
      if (trailers !== null) res.addTrailers(trailers as Record<string, string>);
      res.end();
    }
    this.finish();
  }

  upstreamError(call: Call, kind: FailureKind, err: Error): void {
    if (call !== this.call) return;
    this.call = null;
    this.clearTryTimer();
    this.c.log?.debug({ cluster: this.c.name, upstream: call.ep.hostPort, kind, err: err.message, attempt: this.attempts }, 'upstream try failed');
    if (kind === 'downstream' || (this.src !== null && this.src.failed)) {
      this.flag('DC');
      this.finish();
      return;
    }
    if (kind === 'invalid') {
      this.localReply(400, 'invalid request: it cannot be forwarded upstream', GRPC_INTERNAL);
      return;
    }
    this.c.recordLocalFailure(call.ep);
    const flag: ResponseFlag = kind === 'connect' ? 'UF' : kind === 'reset' && !this.c.http2 ? 'UC' : 'UR';
    if (this.headersSent) {
      // The response was cut mid-body: the client must see a reset, not a short body.
      this.flag(flag);
      this.resetDownstream();
      return;
    }
    const r = this.retry;
    if (r !== null && retriableFailure(r.bits, kind)) {
      if (this.canRetry()) { this.scheduleRetry(); return; }
      this.noteExhausted();
    }
    this.flag(flag);
    const reason = kind === 'connect' ? 'connection failure'
      : kind === 'refused' ? 'remote refused stream reset'
      : this.c.http2 ? 'remote reset' : 'connection termination';
    this.localReply(503, resetBody(reason), GRPC_UNAVAILABLE);
  }

  // -------------------------------------------------------------- endings

  localReply(status: number, body: string, grpcStatus: number): void {
    if (this.finished) return;
    if (this.headersSent || (this.res as { headersSent: boolean }).headersSent) { this.resetDownstream(); return; }
    this.headersSent = true;
    this.status = this.up.grpc ? 200 : status;
    this.bytesSent = writeLocalReply(this.res, this.hooks, this.up.grpc, status, body, grpcStatus);
    this.finish();
  }

  resetDownstream(): void {
    this.finish();
    this.res.destroy();
  }

  abortTry(): void {
    const call = this.call;
    if (call !== null) {
      this.call = null;
      call.abort();
    }
  }

  clearTryTimer(): void {
    if (this.tryTimer !== null) { clearTimeout(this.tryTimer); this.tryTimer = null; }
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTryTimer();
    if (this.overallTimer !== null) { clearTimeout(this.overallTimer); this.overallTimer = null; }
    if (this.backoffTimer !== null) { clearTimeout(this.backoffTimer); this.backoffTimer = null; }
    this.src?.detach();
    const res = this.res;
    if (res[kExchange] === this) {
      res[kExchange] = undefined;
      res.off('close', onDownstreamClose);
      res.off('drain', onDownstreamDrain);
    }
    this.c.done();
    this.done(this.doneArg, {
      status: this.status,
      upstreamHost: this.endpoint !== null ? this.endpoint.hostPort : null,
      attempts: this.attempts,
      flags: this.flags,
      bytesSent: this.bytesSent,
    });
  }
}

function appendHeader(h: HeaderMap, name: string, value: string): void {
  const cur = h[name];
  if (cur === undefined) h[name] = value;
  else if (typeof cur === 'string') h[name] = [cur, value];
  else cur.push(value);
}

/** A request without a body needs no streaming (and stays retriable). */
function hasNoBody(req: DownstreamReq): boolean {
  const stream = (req as { stream?: { endAfterHeaders: boolean } }).stream;
  if (stream !== undefined) return stream.endAfterHeaders || req.readableEnded;
  const h = req.headers;
  const cl = h['content-length'];
  return h['transfer-encoding'] === undefined && (cl === undefined || cl === '0');
}

function onDownstreamClose(this: TaggedRes): void {
  const ex = this[kExchange];
  if (ex === undefined || ex.finished) return;
  ex.abortTry();
  ex.flag('DC');
  ex.finish();
}

function onDownstreamDrain(this: TaggedRes): void {
  const ex = this[kExchange];
  if (ex !== undefined) ex.call?.resume();
}

function onOverallTimeout(ex: Exchange): void {
  ex.overallTimer = null;
  if (ex.finished) return;
  const call = ex.call;
  ex.abortTry();
  ex.flag('UT');
  if (ex.headersSent) { ex.resetDownstream(); return; }
  if (call !== null) ex.c.recordLocalFailure(call.ep);
  ex.localReply(504, BODY_TIMEOUT, GRPC_DEADLINE_EXCEEDED);
}

function onTryTimeout(ex: Exchange, call: Call): void {
  ex.tryTimer = null;
  if (ex.call !== call || ex.headersSent || ex.finished) return;
  ex.abortTry();
  ex.c.recordLocalFailure(call.ep);
  const r = ex.retry!;
  if ((r.bits & (R_5XX | R_GATEWAY | R_RESET)) !== 0) {
    if (ex.canRetry()) { ex.scheduleRetry(); return; }
    ex.noteExhausted();
  }
  ex.flag('UT');
  ex.localReply(504, BODY_TIMEOUT, GRPC_DEADLINE_EXCEEDED);
}

function onBackoffDone(ex: Exchange): void {
  ex.backoffTimer = null;
  if (!ex.finished) ex.attempt();
}

/** Forwards one request; resolves when the response is complete or abandoned. */
export function forwardTo(c: ClusterRuntime, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks): Promise<ForwardResult> {
  return new Promise<ForwardResult>((resolve) => new Exchange(c, req, res, up, hooks, settlePromise as ForwardDone<unknown>, resolve).begin());
}

function settlePromise(resolve: (r: ForwardResult) => void, r: ForwardResult): void {
  resolve(r);
}

/** forwardTo without the Promise: `done(arg, result)` once, possibly before this returns. */
export function forwardThen<T>(c: ClusterRuntime, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks, done: ForwardDone<T>, arg: T): void {
  new Exchange(c, req, res, up, hooks, done as ForwardDone<unknown>, arg).begin();
}
