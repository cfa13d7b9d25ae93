// The service registry of file mode: every host a ServiceEntry declares, with its ports and
// endpoints. Translation asks it "what is behind this host?" when it builds clusters and
// when it checks that a route's destination exists. In Kubernetes mode the same shape is
// filled from Services and EndpointSlices as well.
import type { ConfigSnapshot, ServiceEntryResource, ServiceEntrySpec } from '../api/istio.ts';
import { qualifyHost, hostMatches } from '../api/hosts.ts';

export type Resolution = NonNullable<ServiceEntrySpec['resolution']>;
export type Location = NonNullable<ServiceEntrySpec['location']>;

export interface ServicePortInfo {
  number: number;
  name: string;
  /** Upper-case: HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP… */
  protocol: string;
  targetPort: number | null;
}

export interface ServiceEndpoint {
  /** IP address, or a DNS name for DNS resolution. */
  address: string;
  /** Per port name overrides of the port to connect to. */
  ports: Record<string, number>;
  labels: Record<string, string>;
  weight: number;
}

export interface Service {
  /** Qualified and lower-cased; may be a `*.suffix` wildcard. */
  hostname: string;
  namespace: string;
  ports: ServicePortInfo[];
  location: Location;
  resolution: Resolution;
  endpoints: ServiceEndpoint[];
  /** The first ServiceEntry that declared this host: `serviceentry/<ns>/<name>`. */
  source: string;
  /** Every ServiceEntry merged into this service, in snapshot order. */
  sources: string[];
}

export interface ServiceRegistry {
  /** Sorted by hostname. */
  readonly services: readonly Service[];
  /** The service for an exact host, else the most specific wildcard ServiceEntry host covering it. */
  lookup(host: string): Service | null;
}

/** The port an endpoint listens on for service port `port`. */
export function endpointPort(ep: ServiceEndpoint, port: ServicePortInfo): number {
  // Own keys only: a port named `__proto__` or `constructor` must not read Object's prototype.
  const own = Object.hasOwn(ep.ports, port.name) ? ep.ports[port.name] : undefined;
  return own ?? port.targetPort ?? port.number;
}

// Istio reads a port's protocol from its name prefix when `protocol` is not given
// (`http-web`, `grpc`, `tcp-db`).
const NAMED_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'HTTPS', 'GRPC', 'GRPC-WEB', 'TLS', 'TCP', 'MONGO', 'REDIS', 'MYSQL', 'UDP']);

function portProtocol(protocol: string | undefined, name: string): string {
  if (protocol) return protocol.toUpperCase();
  const lower = name.toLowerCase();
  if (lower.startsWith('grpc-web')) return 'GRPC-WEB';
  const prefix = lower.split('-')[0].toUpperCase();
  return NAMED_PROTOCOLS.has(prefix) ? prefix : 'TCP';
}

function servicesOf(se: ServiceEntryResource): Service[] {
  const spec = se.spec;
  const ns = se.metadata.namespace;
  const source = `serviceentry/${ns}/${se.metadata.name}`;
  const ports: ServicePortInfo[] = (spec.ports ?? []).map((p) => ({
    number: p.number,
    name: p.name,
    protocol: portProtocol(p.protocol, p.name),
    targetPort: p.targetPort ?? null,
  }));
  const resolution: Resolution = spec.resolution ?? 'NONE';
  const declared: ServiceEndpoint[] = (spec.endpoints ?? [])
    .filter((e) => typeof e.address === 'string' && e.address !== '')
    .map((e) => ({ address: e.address!, ports: { ...(e.ports ?? {}) }, labels: { ...(e.labels ?? {}) }, weight: e.weight ?? 1 }));
  // NONE is Istio's "connect to the destination the client asked for"; for a named host that
  // is the host itself, so it resolves like DNS (validation says so too). Only a wildcard
  // host names no one destination.
  const dns = resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN' || resolution === 'NONE';
  return spec.hosts.map((h) => {
    const hostname = qualifyHost(h, ns);
    let endpoints = declared;
    // DNS without endpoints means "resolve the host itself"; a wildcard cannot be resolved.
    if (dns && declared.length === 0 && !hostname.startsWith('*')) {
      endpoints = [{ address: hostname, ports: {}, labels: {}, weight: 1 }];
    }
    return {
      hostname, namespace: ns, ports: ports.map((p) => ({ ...p })), location: spec.location ?? 'MESH_EXTERNAL',
      resolution, endpoints: endpoints.map((e) => ({ ...e, ports: { ...e.ports }, labels: { ...e.labels } })),
      source, sources: [source],
    };
  });
}

/** Folds a later ServiceEntry's view of a host into the first one's; the first wins on conflicts. */
function mergeInto(into: Service, later: Service): void {
  const numbers = new Set(into.ports.map((p) => p.number));
  for (const p of later.ports) if (!numbers.has(p.number)) into.ports.push(p);
  const addresses = new Set(into.endpoints.map((e) => e.address));
  for (const e of later.endpoints) {
    if (addresses.has(e.address)) continue;
    addresses.add(e.address);
    into.endpoints.push(e);
  }
  if (!into.sources.includes(later.source)) into.sources.push(later.source);
}

function byHostname(a: Service, b: Service): number {
  return a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0;
}

export function buildRegistry(snapshot: ConfigSnapshot): ServiceRegistry {
  const exact = new Map<string, Service>();
  for (const se of snapshot.serviceEntries) {
    for (const svc of servicesOf(se)) {
      const prev = exact.get(svc.hostname);
      if (prev) mergeInto(prev, svc);
      else exact.set(svc.hostname, svc);
    }
  }
  const services = [...exact.values()].sort(byHostname);
  // Most specific first, so the first wildcard that covers a host is the one Istio would pick.
  const wildcards = services
    .filter((s) => s.hostname.startsWith('*'))
    .sort((a, b) => b.hostname.length - a.hostname.length || byHostname(a, b));
  return {
    services,
    lookup(host: string): Service | null {
      const h = host.toLowerCase();
      const found = exact.get(h);
      if (found) return found;
      for (const w of wildcards) if (hostMatches(w.hostname, h)) return w;
      return null;
    },
  };
}
