// Per-endpoint runtime state: counters the load balancer and outlier detector read, the
// admission gate (Envoy's circuit breaker on connections / pending requests) and the
// endpoint's transport (an undici Pool or an HTTP/2 session), created on first use.
import type { Endpoint } from '../../api/proxyconfig.ts';

/** One request as the admission gate sees it: started now, or later when a slot frees up. */
export interface Admittable {
  /** Called once when the request may use a connection/stream. */
  start(): void;
  /** True once the request gave up while queued; the gate skips it. */
  cancelled: boolean;
}

export interface Transport {
  /** Graceful: in-flight requests finish, then connections close. */
  close(): Promise<void>;
  /** Immediate: connections are cut. */
  destroy(): void;
}

export class EndpointState {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** `address:port` (IPv6 in brackets), as access logs show upstream hosts. */
  readonly hostPort: string;
  readonly index: number;

  /** Requests assigned to this endpoint, queued or running (LEAST_REQUEST reads it). */
  active = 0;
  /** Requests holding a connection (HTTP/1.1) or a stream (HTTP/2). */
  running = 0;
  /** Requests waiting for a slot, FIFO; `queueHead` avoids Array#shift on a hot queue. */
  queue: Admittable[] = [];
  queueHead = 0;

  totalRequests = 0;
  totalFailures = 0;

  // Outlier detection state (outlier.ts).
  ejected = false;
  ejectedUntil = 0;
  /** Times ejected; multiplies the ejection time and decays while healthy. */
  ejections = 0;
  consecutive5xx = 0;
  consecutiveGatewayErrors = 0;

  transport: Transport | null = null;

  constructor(ep: Endpoint, index: number) {
    this.address = ep.address;
    this.port = ep.port;
    this.weight = ep.weight > 0 ? ep.weight : 1;
    this.hostPort = ep.address.includes(':') ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
    this.index = index;
  }
}
