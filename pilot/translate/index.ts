// translate(snapshot, proxy) → the config one proxy runs. A pure function: no clock, no I/O,
// no globals, no randomness; the same input gives a deep-equal output, and every list in
// it has a defined order, so a config's content hash only changes when its meaning does.
import type { ConfigSnapshot } from '../../api/istio.ts';
import type { EgressProxyConfig, ProxyConfig, ProxyIdentity } from '../../api/proxyconfig.ts';
import { defaultMeshConfig } from '../../api/meshconfig.ts';
import type { Problem } from '../../api/problems.ts';
import { buildIndexes, problemSink } from './indexes.ts';
import { buildListeners, selectGateways } from './gateway.ts';
import { buildVirtualHosts } from './route.ts';
import type { RouteContext } from './route.ts';
import { buildClusters } from './cluster.ts';
import { buildPolicies } from './policy.ts';
import type { DestinationRef } from './references.ts';
import { buildOutbound, egressEntries, passthroughCluster } from './egress.ts';

export interface TranslateResult {
  config: Omit<ProxyConfig, 'version'>;
  /** Problems in what this proxy serves (broken references, port conflicts), each once. */
  problems: Problem[];
}

export function translate(snapshot: ConfigSnapshot, proxy: ProxyIdentity): TranslateResult {
  // 1. Indexes: maps by gateway, host and name, so later steps never scan the snapshot.
  const idx = buildIndexes(snapshot);
  const sink = problemSink();

  // 2. The Gateways whose selector matches this proxy, in snapshot order (it decides which
  //    server keeps a contested port).
  const gateways = selectGateways(snapshot.gateways, proxy);

  // 3. Listeners: servers grouped by port, conflicting and unservable servers dropped.
  const plans = buildListeners(idx, gateways, sink);

  // 4. Virtual hosts and routes per listener; routes record every cluster they refer to.
  const clusters = new Map<string, DestinationRef>();
  const ctx: RouteContext = { idx, sink, clusters };
  for (const plan of plans) plan.listener.virtualHosts = buildVirtualHosts(ctx, plan);

  // 5. Egress proxies only: the allowlist (every ServiceEntry that compiles, mode and audit
  //    from the mesh config) and the mesh's outbound routes, whose clusters join the
  //    gateway routes' before step 6 builds them.
  let egress: EgressProxyConfig | null = null;
  if (proxy.egress === true) {
    const mesh = snapshot.mesh ?? defaultMeshConfig();
    const allow = egressEntries(snapshot);
    for (const p of allow.problems) sink.add(p);
    egress = {
      policy: { mode: mesh.outboundTrafficPolicy.mode, audit: mesh.egressAudit, entries: allow.entries },
      outbound: buildOutbound(ctx),
    };
  }

  // 6. Clusters: only what the routes above refer to, sorted by name (PassthroughCluster,
  //    for what egress proxies let through unrouted, among them).
  const built = buildClusters(idx, clusters, sink);
  if (egress !== null) {
    built.push(passthroughCluster());
    built.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  // 7. Policies that bind to this proxy (authentication, authorization, rate limits).
  const config: Omit<ProxyConfig, 'version'> = {
    proxy: { id: proxy.id, namespace: proxy.namespace, labels: { ...proxy.labels }, ...(proxy.egress === true ? { egress: true } : {}) },
    listeners: plans.map((p) => p.listener),
    clusters: built,
    policies: buildPolicies(idx, snapshot, proxy),
  };
  // Only egress proxies have the key at all, so other proxies' configs (and versions) are unchanged.
  if (egress !== null) config.egress = egress;
  return { config, problems: sink.list() };
}

export { checkReferences } from './references.ts';
