// HTTP/1.1 to an endpoint through an undici Pool: keep-alive connections reused across
// requests, no pipelining (one request per connection at a time, as Envoy), at most
// maxConnections of them (the gate in pool.ts never hands undici more than that, so undici
// never queues), retired after maxRequestsPerConnection, closed when idle.
//
// The Call is undici's dispatch handler itself (methods on the prototype): no closures per
// request. Errors before undici hands us the connection (onRequestStart) are connect
// failures; after it, resets.
import type { LookupFunction } from 'node:net';
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';
import type { ConnectionPool } from '../../api/proxyconfig.ts';
import type { EndpointState, Transport } from './endpoint.ts';
import { Call, HOP_BY_HOP, RUNNING } from './pool.ts';
import type { Gate, Outgoing, Sink } from './pool.ts';
import type { TlsSetup } from './tls.ts';
import type { HeaderMap } from './types.ts';

/** Envoy's default max_request_headers_kb is 60; the response side gets the same room. */
const MAX_HEADER_BYTES = 64 * 1024;
/** Used when the upstream gives no keep-alive hint (undici's own default). */
const DEFAULT_KEEPALIVE_MS = 4000;

export class H1Transport implements Transport {
  readonly pool: Pool;
  readonly servername: string | undefined;

  constructor(ep: EndpointState, cp: ConnectionPool, tls: TlsSetup | null, lookup?: LookupFunction) {
    const idle = Math.max(1, cp.idleTimeoutMs);
    const origin = `${tls === null ? 'http' : 'https'}://${ep.hostPort}`;
    this.servername = tls !== null && tls.servername !== '' ? tls.servername : undefined;
    this.pool = new Pool(origin, {
      connections: Math.max(1, cp.maxConnections),
      pipelining: 1,
      keepAliveTimeout: Math.min(idle, DEFAULT_KEEPALIVE_MS),
      keepAliveMaxTimeout: idle,
      keepAliveTimeoutThreshold: Math.min(1000, Math.floor(idle / 2)),
      ...(cp.maxRequestsPerConnection > 0 ? { maxRequestsPerClient: cp.maxRequestsPerConnection } : {}),
      // Our timeouts (route, per try) govern; undici's own would cut long responses.
      headersTimeout: 0,
      bodyTimeout: 0,
      maxHeaderSize: MAX_HEADER_BYTES,
      connect: {
        timeout: cp.connectTimeoutMs,
        // undici hands the rest of these options to net/tls.connect: host names resolve
        // through the process's resolver (its --resolve overrides), IP literals skip it.
        ...(lookup !== undefined ? { lookup } : {}),
        ...(tls !== null ? {
          secureContext: tls.secureContext,
          rejectUnauthorized: tls.rejectUnauthorized,
          checkServerIdentity: tls.checkServerIdentity,
          ...(this.servername !== undefined ? { servername: this.servername } : {}),
        } : {}),
      },
    });
    // Errors reach each request's handler; the pool-level event must not crash the process.
    this.pool.on('connectionError', ignore);
  }

  close(): Promise<void> { return this.pool.close(); }
  destroy(): void { void this.pool.destroy().catch(ignore); }
}

function ignore(): void {}

const ABORTED = new Error('aborted by the gateway');

export class H1Call extends Call implements Dispatcher.DispatchHandler {
  readonly transport: H1Transport;
  controller: Dispatcher.DispatchController | null = null;
  connected = false;

  constructor(transport: H1Transport, gate: Gate, ep: EndpointState, sink: Sink, out: Outgoing) {
    super(gate, ep, sink, out);
    this.transport = transport;
  }

  start(): void {
    const out = this.out;
    this.transport.pool.dispatch({
      path: out.path,
      method: out.method,
      headers: flattenHeaders(out),
      body: out.body,
      // Pins the TLS SNI: undici would otherwise derive it from each request's Host and
      // drop the connection whenever it changes.
      servername: this.transport.servername,
    } as Dispatcher.DispatchOptions, this);
  }

  pause(): void { this.controller?.pause(); }
  resume(): void { this.controller?.resume(); }
  protected cut(): void {
    // Still connecting: onRequestStart aborts it.
    this.controller?.abort(ABORTED);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.state !== RUNNING) { controller.abort(ABORTED); return; }
    this.connected = true;
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    // 1xx informational heads (100 Continue) are not the response.
    if (status < 200 || this.state !== RUNNING) return;
    this.sink.upstreamHeaders(this, status, headers as HeaderMap, false);
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.state === RUNNING) this.sink.upstreamData(this, chunk);
  }

  onResponseEnd(_c: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    if (this.state !== RUNNING) return;
    this.settle();
    let t: HeaderMap | null = null;
    for (const _k in trailers) { t = trailers as HeaderMap; break; }
    this.sink.upstreamEnd(this, t);
  }

  onResponseError(_c: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.state !== RUNNING) return;
    this.settle();
    this.sink.upstreamError(this, classify(err, this.connected), err);
  }
}

function classify(err: Error, connected: boolean): 'connect' | 'reset' | 'invalid' | 'downstream' {
  const code = (err as { code?: string }).code;
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') return 'invalid';
  // The downstream body ended short of its Content-Length: the client went away.
  if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') return 'downstream';
  return connected ? 'reset' : 'connect';
}

/**
 * undici's flat header list: Host first (the route's authority, not the pool's origin),
 * then the route's headers. Content-Length is left to undici for whole bodies (it knows the
 * length); `expect` is dropped because the gateway, not the upstream, answers 100-continue.
 */
export function flattenHeaders(out: Outgoing): string[] {
  const list = ['host', out.authority];
  const h = out.headers;
  const wholeBody = out.body === null || Buffer.isBuffer(out.body);
  for (const k in h) {
    if (HOP_BY_HOP[k] === 1 || k === 'host' || k === 'expect' || k.charCodeAt(0) === 58 /* ':' */) continue;
    if (wholeBody && k === 'content-length') continue;
    const v = h[k];
    if (k === 'te' && v !== 'trailers') continue;
    if (typeof v === 'string') list.push(k, v);
    else for (let i = 0; i < v.length; i++) list.push(k, v[i]);
  }
  return list;
}
