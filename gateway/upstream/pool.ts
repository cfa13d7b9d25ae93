// The seam between a request's lifecycle (forward.ts, mirror) and the wire (http1.ts,
// http2.ts): one `Call` per try, reporting to a `Sink`; and the admission gate in front of
// each endpoint — Envoy's circuit breakers as Istio configures them: at most
// maxConnections requests on an HTTP/1.1 endpoint (one per connection, no pipelining) or
// http2MaxRequests streams on an HTTP/2 one, at most maxPendingRequests waiting across
// the cluster, and an overflow (503, flag UO) beyond that.
import type { Readable } from 'node:stream';
import type { EndpointState, Admittable } from './endpoint.ts';
import type { HeaderMap } from './types.ts';

/** Why a try failed before (or while) its response arrived. */
export type FailureKind =
  | 'connect'    // no connection: refused, DNS, TLS handshake, connect timeout
  | 'reset'      // the connection closed or the stream was reset
  | 'refused'    // HTTP/2 REFUSED_STREAM: the upstream did not process it, safe to retry
  | 'invalid'    // the request could not be encoded (bad header value): never sent
  | 'downstream';// the downstream request body failed (client went away)

/** upstreamRawHead flags: a Content-Length line / a Date line is among the lines. */
export const RAW_HAS_LENGTH = 1;
export const RAW_HAS_DATE = 2;

export interface Sink {
  upstreamHeaders(call: Call, status: number, headers: HeaderMap, endStream: boolean): void;
  /**
   * Set when the sink forwards the response head unchanged to a downstream that can take
   * it as bytes (the HTTP/1.1 fast path, no response edits): the fast-path client may then
   * call upstreamRawHead instead of building a header map.
   */
  readonly rawHead?: boolean;
  /**
   * A final (≥ 200) response head as header lines: lower-case names, `name: value` with the
   * value trimmed, CRLF after each, hop-by-hop and framing lines (Connection, Keep-Alive,
   * Transfer-Encoding) already dropped, names all distinct — exactly what writeHead would
   * write for the map upstreamHeaders would have had. `flags`: RAW_HAS_LENGTH, RAW_HAS_DATE.
   * `nameLens`: bit n set when some name has n characters (bit 31: 31 or more), so a sink
   * adding headers knows without a search when none of its names can be there already.
   * `lines` is the sink's to keep.
   */
  upstreamRawHead?(call: Call, status: number, lines: Buffer, flags: number, nameLens: number): void;
  upstreamData(call: Call, chunk: Buffer): void;
  upstreamEnd(call: Call, trailers: HeaderMap | null): void;
  upstreamError(call: Call, kind: FailureKind, err: Error): void;
}

/** What a try sends; built once per try from the UpstreamRequest. */
export interface Outgoing {
  method: string;
  path: string;
  authority: string;
  headers: HeaderMap;
  /** null: no body. A Buffer: the whole body. A Readable: streamed. */
  body: Buffer | Readable | null;
}

/** The per-cluster numbers the gate reads. */
export interface Gate {
  /** Requests queued across the cluster. */
  pending: number;
  readonly maxPending: number;
  /** Concurrent requests per endpoint: connections (HTTP/1.1) or streams (HTTP/2). */
  readonly slotLimit: number;
}

const NEW = 0;
const QUEUED = 1;
export const RUNNING = 2;
const DONE = 3;

export abstract class Call implements Admittable {
  readonly gate: Gate;
  readonly ep: EndpointState;
  readonly sink: Sink;
  readonly out: Outgoing;
  state = NEW;
  cancelled = false;

  constructor(gate: Gate, ep: EndpointState, sink: Sink, out: Outgoing) {
    this.gate = gate;
    this.ep = ep;
    this.sink = sink;
    this.out = out;
  }

  /** Begin sending on the wire; the gate calls it once a slot is ours. */
  abstract start(): void;
  abstract pause(): void;
  abstract resume(): void;
  /** Cut the wire side of a running call. */
  protected abstract cut(): void;

  /** Stops this try, whatever its state; no sink callback follows. */
  abort(): void {
    if (this.state === QUEUED) {
      this.cancelled = true;
      this.state = DONE;
      this.gate.pending--;
      this.ep.active--;
    } else if (this.state === RUNNING) {
      this.settle();
      this.cut();
    } else {
      this.state = DONE;
    }
  }

  /** Frees the slot, once; the next queued call of the endpoint gets it. */
  settle(): void {
    if (this.state !== RUNNING) return;
    this.state = DONE;
    release(this.gate, this.ep);
  }
}

/** Starts the call now, queues it, or returns false (overflow). */
export function admit(call: Call): boolean {
  const { gate, ep } = call;
  if (ep.running < gate.slotLimit) {
    ep.totalRequests++;
    ep.running++;
    ep.active++;
    call.state = RUNNING;
    call.start();
    return true;
  }
  if (gate.pending < gate.maxPending) {
    ep.totalRequests++;
    gate.pending++;
    ep.active++;
    call.state = QUEUED;
    ep.queue.push(call);
    return true;
  }
  return false;
}

function release(gate: Gate, ep: EndpointState): void {
  ep.running--;
  ep.active--;
  const q = ep.queue;
  while (ep.queueHead < q.length) {
    const next = q[ep.queueHead] as Call;
    ep.queueHead++;
    if (next.cancelled) continue;
    gate.pending--;
    ep.running++;
    next.state = RUNNING;
    // Started on the next tick: a completion callback must not recurse into a chain of starts.
    process.nextTick(startQueued, next);
    break;
  }
  if (ep.queueHead === q.length) {
    q.length = 0;
    ep.queueHead = 0;
  } else if (ep.queueHead > 1024 && ep.queueHead * 2 > q.length) {
    q.splice(0, ep.queueHead);
    ep.queueHead = 0;
  }
}

function startQueued(call: Call): void {
  if (call.state === RUNNING) call.start();
}

// ---------------------------------------------------------------- headers

/**
 * Connection-specific headers never forwarded either way (RFC 9110 §7.6.1; HTTP/2 forbids
 * them). `te` is handled apart: only `te: trailers` may pass (gRPC needs it).
 */
export const HOP_BY_HOP: Readonly<Record<string, 1>> = Object.assign(Object.create(null), {
  connection: 1,
  'keep-alive': 1,
  'proxy-connection': 1,
  'transfer-encoding': 1,
  upgrade: 1,
  'http2-settings': 1,
});

/**
 * Response headers as the downstream gets them: hop-by-hop ones removed, plus any named
 * by the upstream's `Connection` header. Edits the fresh per-response object in place.
 * Unrolled, with a fast path for the usual `Connection: keep-alive`: this runs per response.
 */
export function stripResponseHopByHop(h: HeaderMap): HeaderMap {
  const conn = h.connection;
  if (conn !== undefined) {
    if (conn !== 'keep-alive' && conn !== 'close') {
      for (const token of String(conn).split(',')) {
        const t = token.trim().toLowerCase();
        if (t !== '' && t !== 'close' && t !== 'keep-alive') delete h[t];
      }
    }
    delete h.connection;
  }
  if (h['keep-alive'] !== undefined) delete h['keep-alive'];
  if (h['transfer-encoding'] !== undefined) delete h['transfer-encoding'];
  if (h['proxy-connection'] !== undefined) delete h['proxy-connection'];
  if (h.upgrade !== undefined) delete h.upgrade;
  if (h.te !== undefined) delete h.te;
  return h;
}
