// The lookups translation needs, built once per snapshot so that every later step is a map
// read rather than a scan: 1,000 VirtualServices must not mean 1,000 × 1,000 comparisons.
import type {
  ConfigSnapshot, DestinationRuleResource, GatewayResource, Resource, SecretResource, VirtualServiceResource,
} from '../../api/istio.ts';
import { qualifyHost, hostMatches } from '../../api/hosts.ts';
import { fieldPath, formatProblem, resourceKey } from '../../api/problems.ts';
import type { Problem, ProblemCode, Severity } from '../../api/problems.ts';
import { positionOf } from '../../api/load.ts';
import { buildRegistry } from '../registry.ts';
import type { ServiceRegistry } from '../registry.ts';

export interface Indexes {
  registry: ServiceRegistry;
  /** `ns/name` → Gateway. */
  gateways: Map<string, GatewayResource>;
  /** `ns/name` of a Gateway → the VirtualServices that name it, in snapshot order. */
  vsByGateway: Map<string, VirtualServiceResource[]>;
  /** Qualified exact host → DestinationRules for it, in snapshot order. */
  drExact: Map<string, DestinationRuleResource[]>;
  /** Wildcard DR hosts, most specific (longest) first. */
  drWildcard: { host: string; rules: DestinationRuleResource[] }[];
  /** `ns/name` → Secret. */
  secrets: Map<string, SecretResource>;
}

export const MESH_GATEWAY = 'mesh';

/**
 * `ns/name` of a gateway as a VirtualService names it: `name` (the VS's namespace), `ns/name`,
 * `./name`, or the legacy `name.ns.svc.cluster.local`. `mesh` stays `mesh`.
 */
export function resolveGatewayName(name: string, vsNamespace: string): string {
  if (name === MESH_GATEWAY) return name;
  const slash = name.indexOf('/');
  if (slash >= 0) {
    const ns = name.slice(0, slash);
    return `${ns === '.' ? vsNamespace : ns}/${name.slice(slash + 1)}`;
  }
  const dot = name.indexOf('.');
  if (dot < 0) return `${vsNamespace}/${name}`;
  const rest = name.slice(dot + 1);
  const next = rest.indexOf('.');
  return `${next < 0 ? rest : rest.slice(0, next)}/${name.slice(0, dot)}`;
}

/** The gateways a VirtualService binds to; none given means the mesh only. */
export function vsGateways(vs: VirtualServiceResource): string[] {
  const names = vs.spec.gateways;
  if (!names || names.length === 0) return [MESH_GATEWAY];
  const out: string[] = [];
  for (const n of names) {
    const key = resolveGatewayName(n, vs.metadata.namespace);
    if (!out.includes(key)) out.push(key);
  }
  return out;
}

export function buildIndexes(snapshot: ConfigSnapshot): Indexes {
  const gateways = new Map<string, GatewayResource>();
  for (const g of snapshot.gateways) gateways.set(`${g.metadata.namespace}/${g.metadata.name}`, g);

  const vsByGateway = new Map<string, VirtualServiceResource[]>();
  for (const vs of snapshot.virtualServices) {
    for (const key of vsGateways(vs)) {
      const list = vsByGateway.get(key);
      if (list) list.push(vs);
      else vsByGateway.set(key, [vs]);
    }
  }

  const drExact = new Map<string, DestinationRuleResource[]>();
  const wild = new Map<string, DestinationRuleResource[]>();
  for (const dr of snapshot.destinationRules) {
    const host = qualifyHost(dr.spec.host, dr.metadata.namespace);
    const into = host.startsWith('*') ? wild : drExact;
    const list = into.get(host);
    if (list) list.push(dr);
    else into.set(host, [dr]);
  }
  const drWildcard = [...wild].map(([host, rules]) => ({ host, rules }))
    .sort((a, b) => b.host.length - a.host.length || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));

  const secrets = new Map<string, SecretResource>();
  for (const s of snapshot.secrets) secrets.set(`${s.metadata.namespace}/${s.metadata.name}`, s);

  return { registry: buildRegistry(snapshot), gateways, vsByGateway, drExact, drWildcard, secrets };
}

/**
 * The DestinationRule that applies to `host`: the most specific host (exact, then the
 * longest wildcard), then one in the service's namespace, then the first in snapshot order.
 */
export function findDestinationRule(idx: Indexes, host: string, serviceNamespace: string | null): DestinationRuleResource | null {
  let candidates = idx.drExact.get(host);
  if (!candidates) {
    for (const w of idx.drWildcard) {
      if (hostMatches(w.host, host)) {
        candidates = w.rules;
        break;
      }
    }
  }
  if (!candidates) return null;
  if (serviceNamespace !== null) {
    for (const dr of candidates) if (dr.metadata.namespace === serviceNamespace) return dr;
  }
  return candidates[0];
}

// ---------------------------------------------------------------- problems

/** Collects problems once each (the same broken reference can be reached from many servers). */
export interface ProblemSink {
  add(p: Problem): void;
  list(): Problem[];
}

export function problemSink(): ProblemSink {
  const seen = new Map<string, Problem>();
  return {
    add(p: Problem): void {
      const key = formatProblem(p);
      if (!seen.has(key)) seen.set(key, p);
    },
    list(): Problem[] {
      return [...seen.values()];
    },
  };
}

/** A problem about one field of one resource, pointing at the YAML line when it is known. */
export function problemAt(
  r: Resource, path: readonly (string | number)[], code: ProblemCode, severity: Severity, message: string,
): Problem {
  const pos = positionOf(r, path);
  const p: Problem = {
    code, severity, file: r.source.file, line: pos?.line ?? r.source.line,
    resource: resourceKey(r.kind, r.metadata.namespace, r.metadata.name),
    field: fieldPath(path), message,
  };
  if (pos) p.column = pos.column;
  return p;
}
