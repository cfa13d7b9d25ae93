// What the egress forward proxy serves at one config version, compiled at apply time: the
// allowlist (policies/egress.ts) and one ListenerRuntime per destination port, so an
// allowed plain HTTP request runs the same pipeline as a request to a Gateway listener
// (routes, policies, upstreams, metrics). Swapped whole on apply, like a PortListener's
// runtime: a request or tunnel reads it once and finishes on the version it started with.
import type { EgressProxyConfig, Listener } from '../../api/proxyconfig.ts';
import { passthroughVirtualHost } from '../../api/proxyconfig.ts';
import { compileEgress, type EgressPolicy } from '../../policies/egress.ts';
import type { ListenerRuntime } from '../pipeline.ts';
import type { Resolver } from '../resolver.ts';
import type { DestinationGuard } from './guard.ts';
import { compileRouteTable, type RouteTable } from '../router.ts';

/** The parts every outbound runtime shares with the Gateway listeners of the same version. */
export type SharedRuntime = Omit<ListenerRuntime, 'table' | 'port' | 'scheme'>;

export interface EgressRuntime {
  policy: EgressPolicy;
  /** By destination port: the `outbound_<port>` route tables pilot compiled. */
  outbound: Map<number, ListenerRuntime>;
  /** Ports without an outbound listener: everything to PASSTHROUGH_CLUSTER (made per port on first use). */
  passthrough: RouteTable;
  passthroughByPort: Map<number, ListenerRuntime>;
  shared: SharedRuntime;
  resolver: Resolver;
  /** Refuses link-local/unspecified destinations and this proxy's own ports (guard.ts). */
  guard: DestinationGuard;
}

/**
 * The route table of a destination port that has no outbound listener: one `*` virtual
 * host whose only route sends the request to the host:port it names (Istio's
 * PassthroughCluster). Plain data like a pushed Listener, so it compiles and dumps the same.
 */
export function passthroughListener(): Listener {
  return {
    name: 'egress_passthrough',
    address: '0.0.0.0',
    port: 0,
    protocol: 'HTTP',
    tls: null,
    virtualHosts: [passthroughVirtualHost('allow_any')],
    sources: ['egress/passthrough'],
  };
}

/** Throws an Error naming `egress.policy` or the outbound listener that cannot be compiled. */
export function buildEgressRuntime(cfg: EgressProxyConfig, shared: SharedRuntime, resolver: Resolver, guard: DestinationGuard): EgressRuntime {
  let policy: EgressPolicy;
  try {
    policy = compileEgress(cfg.policy);
  } catch (e) {
    throw new Error(`egress.policy: ${(e as Error).message}`);
  }
  const outbound = new Map<number, ListenerRuntime>();
  const listeners = Array.isArray(cfg.outbound) ? cfg.outbound : [];
  for (const l of listeners) {
    if (outbound.has(l.port)) throw new Error(`egress.outbound: listener ${l.name}: port ${l.port} has another outbound listener`);
    let table: RouteTable;
    try {
      table = compileRouteTable(l);
    } catch (e) {
      throw new Error(`egress.outbound: ${(e as Error).message}`);
    }
    outbound.set(l.port, { ...shared, table, port: l.port, scheme: 'http' });
  }
  return { policy, outbound, passthrough: compileRouteTable(passthroughListener()), passthroughByPort: new Map(), shared, resolver, guard };
}

/** The runtime that routes an allowed plain HTTP request to `port`. */
export function outboundRuntime(rt: EgressRuntime, port: number): ListenerRuntime {
  const o = rt.outbound.get(port);
  if (o !== undefined) return o;
  let p = rt.passthroughByPort.get(port);
  if (p === undefined) {
    // At most one per port number (65535), each a handful of references.
    p = { ...rt.shared, table: rt.passthrough, port, scheme: 'http' };
    rt.passthroughByPort.set(port, p);
  }
  return p;
}
