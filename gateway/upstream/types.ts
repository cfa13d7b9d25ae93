// The seam between the downstream half of the data plane (listeners, virtual hosts, route
// match, rewrites, faults, CORS, header edits — gateway/*.ts) and the upstream half
// (clusters, endpoints, load balancing, outlier detection, connection pools, retries,
// timeouts, mirroring, WebSocket tunnels — gateway/upstream/*.ts).
//
// The downstream half decides *what* to send *where*; the upstream half sends it and
// writes the response (or Envoy's local reply when it cannot).
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Cluster, RetryPolicy } from '../../api/proxyconfig.ts';

export type DownstreamReq = IncomingMessage | Http2ServerRequest;
export type DownstreamRes = ServerResponse | Http2ServerResponse;

/** Header map as sent upstream / downstream: lower-case names. */
export type HeaderMap = Record<string, string | string[]>;

export interface UpstreamRequest {
  method: string;
  /** Path and query to send, after rewrites. */
  path: string;
  /** Host (HTTP/1.1) or :authority (HTTP/2) to send. */
  authority: string;
  /**
   * Headers to send: lower-case names; already edited by the route; hop-by-hop headers
   * (connection, keep-alive, te except `te: trailers`, transfer-encoding, upgrade,
   * proxy-connection), `host` and HTTP/2 pseudo-headers already removed.
   */
  headers: HeaderMap;
  /**
   * Null: stream the downstream request body as it arrives (no retry once bytes were sent).
   * A Buffer: the whole body, read by the downstream half because the route retries or
   * mirrors (it can be sent more than once). Bodies with no content: an empty Buffer.
   */
  body: Buffer | null;
  /** Whole-request timeout including retries; null = none. 504 `upstream request timeout`. */
  timeoutMs: number | null;
  retries: RetryPolicy | null;
  /** Inputs for consistent-hash load balancing: the downstream request headers, client IP, query string. */
  hashHeaders: IncomingHttpHeaders;
  sourceIp: string;
  query: string;
  /** `true` for gRPC requests (content-type application/grpc*): errors become grpc-status trailers-only replies. */
  grpc: boolean;
}

/** Envoy's response flags, as access logs and `explain` show them. */
export type ResponseFlag =
  | 'UH'   // no healthy upstream
  | 'UF'   // upstream connection failure
  | 'UT'   // upstream request timeout
  | 'UO'   // upstream overflow (pool's pending queue full)
  | 'URX'  // retries exhausted (retry limit reached)
  | 'UC'   // upstream connection termination
  | 'UR'   // upstream remote reset
  | 'DC'   // downstream connection termination
  | 'NC';  // no cluster of that name

export interface ForwardResult {
  /** Status written downstream (0 when the downstream went away first). */
  status: number;
  /** `address:port` of the last endpoint tried, or null when none was picked. */
  upstreamHost: string | null;
  /** Tries made (1 + retries). */
  attempts: number;
  flags: ResponseFlag[];
  /** Bytes of response body written downstream. */
  bytesSent: number;
}

export type ForwardDone<T> = (arg: T, r: ForwardResult) => void;

export interface ResponseHooks {
  /**
   * Called once, before the upstream response head is written downstream, with the status
   * and headers (lower-case names, hop-by-hop removed). Edit `headers` in place (route and
   * per-destination response header ops, CORS headers). Also called for local replies.
   */
  onHeaders(status: number, headers: HeaderMap): void;
  /** True when onHeaders never changes anything: the response head may pass through as bytes. */
  readonly noop?: boolean;
  /**
   * Set when all onHeaders does is set these headers (Object.assign: replace or append):
   * the response head may still pass through as bytes, with these lines added.
   */
  readonly setOnly?: Readonly<Record<string, string>>;
}

export interface Upstreams {
  /**
   * Swaps in the clusters of a new config version. Pools and outlier state of clusters
   * whose definition did not change are kept; removed clusters are drained and closed.
   * Throws (before changing anything) when the clusters cannot be used, e.g. a TLS file
   * that cannot be read; the caller NACKs with that message.
   */
  update(clusters: Cluster[]): void;
  /** Sends the request to `cluster` and writes the response (or a local reply) to `res`. */
  forward(cluster: string, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks): Promise<ForwardResult>;
  /**
   * `forward` for the request path: `done(arg, result)` is called once, when the response is
   * complete or abandoned, possibly before this returns. No Promise, no closure per request.
   */
  forwardThen<T>(cluster: string, req: DownstreamReq, res: DownstreamRes, up: UpstreamRequest, hooks: ResponseHooks, done: ForwardDone<T>, arg: T): void;
  /** Fire-and-forget copy of a request (mirroring); the response is discarded. `up.body` is a Buffer. */
  mirror(cluster: string, up: UpstreamRequest): void;
  /**
   * Tunnels an HTTP/1.1 `Upgrade` (WebSocket) request: sends `up` (with its `connection` and
   * `upgrade` headers) to an endpoint of `cluster` and, on `101`, pipes the two sockets.
   * Any other answer is written back to the client socket and the socket closed.
   */
  upgrade(cluster: string, req: IncomingMessage, socket: Duplex, head: Buffer, up: UpstreamRequest): Promise<ForwardResult>;
  /** Per-cluster health for the admin port: endpoints, ejected ones, active requests. */
  snapshot(): unknown;
  close(): Promise<void>;
}
