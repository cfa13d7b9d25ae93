// Cross-resource references: a route's destination host, port and subset; a VirtualService's
// gateways; a credentialName's Secret. `analyze` prints these for the whole snapshot
// (checkReferences); translate() resolves the same references with the same functions for
// what one proxy serves, so the two can never disagree.
import type {
  ClientTLSSettings, ConfigSnapshot, Destination, DestinationRuleResource, GatewayResource, Resource,
  SecretResource, TrafficPolicy, VirtualServiceResource,
} from '../../api/istio.ts';
import type { Problem } from '../../api/problems.ts';
import { qualifyHost } from '../../api/hosts.ts';
import {
  buildIndexes, findDestinationRule, problemAt, problemSink, resolveGatewayName, MESH_GATEWAY,
} from './indexes.ts';
import type { Indexes, ProblemSink } from './indexes.ts';

export type Path = (string | number)[];

// ---------------------------------------------------------------- destinations

export interface DestinationRef {
  /** Qualified, lower-cased. */
  host: string;
  /** 0 when it cannot be known (several service ports and none named). */
  port: number;
  subset: string | null;
  /** `outbound|<port>|<subset>|<host>` */
  cluster: string;
}

export function clusterName(host: string, port: number, subset: string | null): string {
  return `outbound|${port}|${subset ?? ''}|${host}`;
}

/**
 * Resolves a route or mirror destination written in `vs`. Broken references are reported
 * to `sink`; the destination still gets a cluster name, so the route answers 503 (no
 * healthy upstream) instead of disappearing and letting a later route catch the traffic.
 */
export function resolveDestination(idx: Indexes, vs: VirtualServiceResource, dest: Destination, path: Path, sink: ProblemSink): DestinationRef {
  const host = qualifyHost(dest.host, vs.metadata.namespace);
  const service = idx.registry.lookup(host);
  const explicitPort = dest.port?.number;
  let port = explicitPort ?? 0;
  if (service === null) {
    sink.add(problemAt(vs, [...path, 'host'], 'MG_REF_HOST', 'warning',
      `host ${host} is not in the service registry (no ServiceEntry declares it); requests routed to it get 503 no healthy upstream`));
  } else {
    const numbers = service.ports.map((p) => p.number);
    if (explicitPort !== undefined) {
      if (!numbers.includes(explicitPort)) {
        sink.add(problemAt(vs, [...path, 'port', 'number'], 'MG_REF_PORT', 'error',
          `service ${host} has no port ${explicitPort} (ports: ${numbers.join(', ') || 'none'}); requests routed to it get 503`));
      }
    } else if (numbers.length === 1) {
      port = numbers[0];
    } else {
      sink.add(problemAt(vs, path, 'MG_REF_PORT', 'error', numbers.length === 0
        ? `service ${host} declares no ports; set port.number on the destination and in the ServiceEntry`
        : `service ${host} has several ports (${numbers.join(', ')}); set port.number to choose one (requests routed here get 503 until then)`));
    }
  }
  const subset = dest.subset ?? null;
  if (subset !== null) {
    const dr = findDestinationRule(idx, host, service?.namespace ?? null);
    const defined = (dr?.spec.subsets ?? []).map((s) => s.name);
    if (!defined.includes(subset)) {
      sink.add(problemAt(vs, [...path, 'subset'], 'MG_REF_SUBSET', 'error',
        `subset ${subset} is not defined by any DestinationRule for host ${host} ` +
        (dr ? `(defined: ${defined.join(', ') || 'none'})` : '(no DestinationRule for this host)') +
        '; requests routed to it get 503'));
    }
  }
  return { host, port, subset, cluster: clusterName(host, port, subset) };
}

// ---------------------------------------------------------------- secrets

export interface TlsMaterial {
  certPem: string | null;
  keyPem: string | null;
  caPem: string | null;
}

function secretValue(s: SecretResource, keys: readonly string[]): string | null {
  for (const k of keys) {
    const plain = s.spec.stringData?.[k];
    if (typeof plain === 'string') return plain;
    const encoded = s.spec.data?.[k];
    if (typeof encoded === 'string') return Buffer.from(encoded, 'base64').toString('utf8');
  }
  return null;
}

// Both layouts Istio reads: a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) and a
// generic one (cert, key, cacert).
function readTls(s: SecretResource): TlsMaterial {
  return {
    certPem: secretValue(s, ['tls.crt', 'cert']),
    keyPem: secretValue(s, ['tls.key', 'key']),
    caPem: secretValue(s, ['ca.crt', 'cacert']),
  };
}

const isPem = (v: string | null): v is string => v !== null && v.includes('-----BEGIN ');

/**
 * Key material named by a credentialName, looked up only in `namespace` — the namespace of
 * the resource that names it. A name that tries to reach another namespace is refused
 * (CVE-2021-34824: credentials of one namespace usable from another). Returns a reason
 * when it cannot be used.
 */
export function loadCredential(
  idx: Indexes, namespace: string, name: string, need: { certAndKey: boolean; ca: boolean },
): TlsMaterial | string {
  if (name.includes('/') || name.includes(':')) {
    return `credentialName ${JSON.stringify(name)} must be the plain name of a Secret in namespace ${namespace}; Secrets of other namespaces are never used`;
  }
  const s = idx.secrets.get(`${namespace}/${name}`);
  if (!s) return `Secret ${namespace}/${name} does not exist (credentialName is looked up in the resource's own namespace, ${namespace})`;
  const m = readTls(s);
  if (need.certAndKey) {
    if (m.certPem === null || m.keyPem === null) return `Secret ${namespace}/${name} has no tls.crt and tls.key (or cert and key) entries`;
    if (!isPem(m.certPem) || !isPem(m.keyPem)) return `Secret ${namespace}/${name} does not hold PEM data in tls.crt/tls.key`;
  }
  if (need.ca && m.caPem === null) {
    // Istio's convention: the CA may sit in a companion Secret `<name>-cacert`.
    const companion = idx.secrets.get(`${namespace}/${name}-cacert`);
    if (companion) m.caPem = readTls(companion).caPem;
    if (m.caPem === null) return `no CA certificate: Secret ${namespace}/${name} has no ca.crt (or cacert) entry and Secret ${namespace}/${name}-cacert does not exist`;
  }
  if (m.caPem !== null && !isPem(m.caPem)) return `Secret ${namespace}/${name}: the CA certificate is not PEM data`;
  return m;
}

/** Certificates for Gateway server `i` (SIMPLE or MUTUAL with a credentialName), or null after reporting why not. */
export function serverCredential(idx: Indexes, gw: GatewayResource, i: number, sink: ProblemSink): TlsMaterial | null {
  const tls = gw.spec.servers![i].tls!;
  const got = loadCredential(idx, gw.metadata.namespace, tls.credentialName!, { certAndKey: true, ca: tls.mode === 'MUTUAL' });
  if (typeof got === 'string') {
    sink.add(problemAt(gw, ['spec', 'servers', i, 'tls', 'credentialName'], 'MG_REF_SECRET', 'error', `${got}; this server is not served`));
    return null;
  }
  return got;
}

/**
 * Client key material for a DestinationRule's tls settings at `path`: MUTUAL needs a
 * certificate and key, SIMPLE a CA to verify the server with. Null after reporting why not.
 */
export function clientCredential(idx: Indexes, dr: DestinationRuleResource, tls: ClientTLSSettings, path: Path, sink: ProblemSink): TlsMaterial | null {
  const got = loadCredential(idx, dr.metadata.namespace, tls.credentialName!, { certAndKey: tls.mode === 'MUTUAL', ca: tls.mode !== 'MUTUAL' });
  if (typeof got === 'string') {
    sink.add(problemAt(dr, [...path, 'credentialName'], 'MG_REF_SECRET', 'error', `${got}; connections using it fail (503)`));
    return null;
  }
  return got;
}

// ---------------------------------------------------------------- whole snapshot

function checkGatewayRef(idx: Indexes, vs: Resource, name: string, namespace: string, path: Path, sink: ProblemSink): void {
  const key = resolveGatewayName(name, namespace);
  if (key === MESH_GATEWAY || idx.gateways.has(key)) return;
  sink.add(problemAt(vs, path, 'MG_REF_GATEWAY', 'error', `Gateway ${key} does not exist; no gateway serves these routes through it`));
}

function checkVirtualService(idx: Indexes, vs: VirtualServiceResource, sink: ProblemSink): void {
  const ns = vs.metadata.namespace;
  (vs.spec.gateways ?? []).forEach((g, i) => checkGatewayRef(idx, vs, g, ns, ['spec', 'gateways', i], sink));
  (vs.spec.http ?? []).forEach((r, i) => {
    (r.match ?? []).forEach((m, j) => {
      (m.gateways ?? []).forEach((g, k) => checkGatewayRef(idx, vs, g, ns, ['spec', 'http', i, 'match', j, 'gateways', k], sink));
    });
    (r.route ?? []).forEach((d, j) => resolveDestination(idx, vs, d.destination, ['spec', 'http', i, 'route', j, 'destination'], sink));
    if (r.mirror) resolveDestination(idx, vs, r.mirror, ['spec', 'http', i, 'mirror'], sink);
    (r.mirrors ?? []).forEach((m, j) => resolveDestination(idx, vs, m.destination, ['spec', 'http', i, 'mirrors', j, 'destination'], sink));
  });
}

function checkPolicyCredentials(idx: Indexes, dr: DestinationRuleResource, tp: TrafficPolicy | undefined, path: Path, sink: ProblemSink): void {
  if (!tp) return;
  if (tp.tls?.credentialName && (tp.tls.mode === 'SIMPLE' || tp.tls.mode === 'MUTUAL')) {
    clientCredential(idx, dr, tp.tls, [...path, 'tls'], sink);
  }
  (tp.portLevelSettings ?? []).forEach((pl, k) => {
    if (pl.tls?.credentialName && (pl.tls.mode === 'SIMPLE' || pl.tls.mode === 'MUTUAL')) {
      clientCredential(idx, dr, pl.tls, [...path, 'portLevelSettings', k, 'tls'], sink);
    }
  });
}

/** Every broken cross-resource reference in the snapshot, independent of any proxy. */
export function checkReferences(snapshot: ConfigSnapshot): Problem[] {
  const idx = buildIndexes(snapshot);
  const sink = problemSink();
  for (const vs of snapshot.virtualServices) checkVirtualService(idx, vs, sink);
  for (const gw of snapshot.gateways) {
    (gw.spec.servers ?? []).forEach((s, i) => {
      if (s.tls?.credentialName && (s.tls.mode === 'SIMPLE' || s.tls.mode === 'MUTUAL')) serverCredential(idx, gw, i, sink);
    });
  }
  for (const dr of snapshot.destinationRules) {
    checkPolicyCredentials(idx, dr, dr.spec.trafficPolicy, ['spec', 'trafficPolicy'], sink);
    (dr.spec.subsets ?? []).forEach((s, i) => checkPolicyCredentials(idx, dr, s.trafficPolicy, ['spec', 'subsets', i, 'trafficPolicy'], sink));
  }
  return sink.list();
}
