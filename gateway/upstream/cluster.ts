// A cluster compiled for the request path: endpoint state, the load balancer, outlier
// detection, TLS and one transport per endpoint (created on first use). Built when a config
// version is applied; `key` (the cluster's JSON) tells the next version whether it can be
// kept as is, pools and ejections included.
import type { LookupFunction, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Cluster } from '../../api/proxyconfig.ts';
import { EndpointState } from './endpoint.ts';
import { H1Call, H1Transport } from './http1.ts';
import { H2Call, H2Transport } from './http2.ts';
import { FastH1Call, FastH1Transport } from '../h1/client.ts';
import { h1FastPathEnabled } from '../h1/enabled.ts';
import { Candidates, createPicker, hashCookieAttributes } from './lb.ts';
import type { Picker } from './lb.ts';
import { OutlierDetector } from './outlier.ts';
import type { Call, Gate, Outgoing, Sink } from './pool.ts';
import { buildTls } from './tls.ts';
import type { TlsSetup } from './tls.ts';

export class ClusterRuntime implements Gate {
  readonly name: string;
  readonly def: Cluster;
  readonly key: string;
  readonly endpoints: EndpointState[];
  readonly candidates: Candidates;
  readonly picker: Picker;
  readonly outlier: OutlierDetector | null;
  readonly tls: TlsSetup | null;
  readonly http2: boolean;
  /** Plaintext HTTP/1.1 through meshgate's own keep-alive client (h1/client.ts) instead of undici. */
  readonly fastH1: boolean;
  /** Set-Cookie attributes for generated hash cookies, or null. */
  readonly cookieAttributes: string | null;
  /**
   * The process's resolver, for every connection to an endpoint named by host name (DNS
   * clusters, passthrough destinations); undefined: node's own dns.lookup.
   */
  readonly lookup: LookupFunction | undefined;

  // Gate
  pending = 0;
  readonly maxPending: number;
  readonly slotLimit: number;

  /** Requests (and tunnels, mirrors) using this cluster; a removed cluster closes at 0. */
  inflight = 0;
  draining = false;
  closed = false;
  mirrorsSent = 0;
  mirrorErrors = 0;
  overflows = 0;

  /** Open WebSocket tunnels to this cluster's endpoints (cut by destroy()). */
  readonly tunnels = new Set<Socket>();
  readonly log: Logger | null;

  constructor(def: Cluster, key: string, log: Logger | null = null, lookup?: LookupFunction) {
    this.log = log;
    this.lookup = lookup;
    this.name = def.name;
    this.def = def;
    this.key = key;
    this.tls = buildTls(def);
    this.http2 = def.protocol === 'http2';
    this.fastH1 = !this.http2 && this.tls === null && h1FastPathEnabled();
    this.endpoints = def.endpoints.map((e, i) => new EndpointState(e, i));
    this.candidates = new Candidates(this.endpoints);
    this.picker = createPicker(def.lb, this.candidates);
    const od = def.outlierDetection;
    this.outlier = od !== null && (od.consecutive5xx > 0 || od.consecutiveGatewayErrors > 0)
      ? new OutlierDetector(od, this.candidates) : null;
    if (od !== null) this.candidates.refresh(od.minHealthPercent);
    const cp = def.connectionPool;
    this.maxPending = Math.max(0, cp.maxPendingRequests);
    this.slotLimit = Math.max(1, this.http2 ? cp.http2MaxRequests : cp.maxConnections);
    this.cookieAttributes = hashCookieAttributes(def.lb);
    // Transports hold no sockets until used; building them now makes a bad endpoint fail
    // the update (NACK) instead of a request, and keeps a null check off the request path.
    for (const ep of this.endpoints) {
      try {
        ep.transport = this.http2 ? new H2Transport(ep, cp, this.tls, lookup)
          : this.fastH1 ? new FastH1Transport(ep, cp, lookup) : new H1Transport(ep, cp, this.tls, lookup);
      } catch (err) {
        for (const e of this.endpoints) e.transport?.destroy();
        this.outlier?.close();
        throw new Error(`cluster ${def.name}: endpoint ${ep.hostPort} cannot be used: ${(err as Error).message}`);
      }
    }
  }

  /** A try to `ep`, over the endpoint's transport. */
  newCall(ep: EndpointState, sink: Sink, out: Outgoing): Call {
    return this.http2
      ? new H2Call(ep.transport as H2Transport, this, ep, sink, out)
      : this.fastH1 ? new FastH1Call(ep.transport as FastH1Transport, this, ep, sink, out)
      : new H1Call(ep.transport as H1Transport, this, ep, sink, out);
  }

  /** A connect failure, reset or timeout on `ep`. */
  recordLocalFailure(ep: EndpointState): void {
    ep.totalFailures++;
    this.outlier?.recordLocalFailure(ep);
  }

  recordStatus(ep: EndpointState, status: number): void {
    if (status >= 500) ep.totalFailures++;
    this.outlier?.recordStatus(ep, status);
  }

  /** Removed from the config: close once nothing uses it any more. */
  drain(): void {
    this.draining = true;
    if (this.inflight === 0) void this.close();
  }

  /** One user of the cluster is done. */
  done(): void {
    if (--this.inflight === 0 && this.draining) void this.close();
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.outlier?.close();
    return Promise.all(this.endpoints.map((ep) => ep.transport?.close())).then(() => undefined, () => undefined);
  }

  destroy(): void {
    this.closed = true;
    this.outlier?.close();
    for (const ep of this.endpoints) ep.transport?.destroy();
    this.cutTunnels();
  }

  cutTunnels(): void {
    for (const s of this.tunnels) s.destroy();
    this.tunnels.clear();
  }

  snapshot(): unknown {
    return {
      service: this.def.service,
      port: this.def.port,
      subset: this.def.subset,
      protocol: this.def.protocol,
      lb: this.def.lb.kind,
      panic: this.candidates.panic,
      pendingRequests: this.pending,
      overflows: this.overflows,
      mirrorsSent: this.mirrorsSent,
      mirrorErrors: this.mirrorErrors,
      draining: this.draining,
      endpoints: this.endpoints.map((ep) => ({
        address: ep.hostPort,
        weight: ep.weight,
        healthy: !ep.ejected,
        ejected: ep.ejected,
        ejectedUntil: ep.ejected ? new Date(ep.ejectedUntil).toISOString() : null,
        ejections: ep.ejections,
        activeRequests: ep.active,
        totalRequests: ep.totalRequests,
        totalFailures: ep.totalFailures,
      })),
    };
  }
}
