// Gateways → listeners. Which Gateways apply to the proxy, how their servers share ports,
// and the certificates an HTTPS port offers.
import type { GatewayResource, Server, TLSVersion } from '../../api/istio.ts';
import type { Listener, ListenerProtocol, ProxyIdentity, ServerCertificate } from '../../api/proxyconfig.ts';
import { splitNamespacedHost } from '../../api/hosts.ts';
import { problemAt } from './indexes.ts';
import type { Indexes, ProblemSink } from './indexes.ts';
import { serverCredential } from './references.ts';

/** One Gateway server that made it into a listener. */
export interface ServerRef {
  gateway: GatewayResource;
  /** `ns/name` of the Gateway, as VirtualServices name it. */
  gatewayKey: string;
  index: number;
  server: Server;
  /** `gateway/<ns>/<name>/server/<i>` */
  source: string;
  /**
   * The hosts this server still answers for (`ns/` prefix kept for binding checks); an
   * HTTPS server loses hosts that an earlier server on the port already claimed.
   */
  hosts: string[];
}

/** A listener under construction: its virtual hosts are filled in by route.ts. */
export interface ListenerPlan {
  listener: Listener;
  servers: ServerRef[];
}

/**
 * Istio: a Gateway applies to every proxy whose labels include all of its selector's
 * key/values, in any namespace; an empty or absent selector selects every proxy.
 */
export function selectGateways(gateways: readonly GatewayResource[], proxy: ProxyIdentity): GatewayResource[] {
  return gateways.filter((g) => {
    const sel = g.spec.selector ?? {};
    for (const k of Object.keys(sel)) if (proxy.labels[k] !== sel[k]) return false;
    return true;
  });
}

// Which servers may share a port: plaintext HTTP flavours together, TLS-terminating ones together.
const PLAINTEXT: ReadonlySet<string> = new Set(['HTTP', 'HTTP2', 'GRPC']);

function tlsVersion(v: TLSVersion | undefined, ref: ServerRef, field: string, sink: ProblemSink): 'TLSv1.2' | 'TLSv1.3' | null {
  switch (v) {
    case 'TLSV1_2': return 'TLSv1.2';
    case 'TLSV1_3': return 'TLSv1.3';
    case 'TLSV1_0':
    case 'TLSV1_1':
      // Node's TLS stack no longer negotiates below 1.2 by default; say so rather than pretend.
      sink.add(problemAt(ref.gateway, ['spec', 'servers', ref.index, 'tls', field], 'MG_CONFIG_UNSUPPORTED_FIELD', 'warning',
        `${v} is not offered by meshgate; TLS 1.2 is used instead`));
      return 'TLSv1.2';
    default: return null;
  }
}

/** The certificate entry for an HTTPS server, or null (reported) when it cannot be served. */
function serverCertificate(idx: Indexes, ref: ServerRef, sink: ProblemSink): ServerCertificate | null {
  const { gateway: gw, index: i, server } = ref;
  const tls = server.tls;
  if (!tls) {
    sink.add(problemAt(gw, ['spec', 'servers', i], 'MG_CONFIG_INVALID', 'error', 'an HTTPS server needs tls settings (mode and credentialName or certificate files); this server is not served'));
    return null;
  }
  const mode = tls.mode;
  if (mode !== 'SIMPLE' && mode !== 'MUTUAL') {
    // An absent mode is PASSTHROUGH in Istio's API, a frequent surprise: say it.
    const what = mode === undefined ? 'tls.mode is not set, which Istio reads as PASSTHROUGH' : `tls.mode ${mode}`;
    sink.add(problemAt(gw, ['spec', 'servers', i, 'tls', 'mode'], 'MG_CONFIG_UNSUPPORTED_FIELD', 'warning',
      `${what}: meshgate terminates HTTPS with SIMPLE or MUTUAL only; this server is not served`));
    return null;
  }
  const cert: ServerCertificate = {
    source: ref.source,
    sniHosts: [],
    mode,
    certPem: null, keyPem: null, certFile: null, keyFile: null, caPem: null, caFile: null,
    subjectAltNames: mode === 'MUTUAL' ? [...(tls.subjectAltNames ?? [])] : [],
    minVersion: tlsVersion(tls.minProtocolVersion, ref, 'minProtocolVersion', sink),
    maxVersion: tlsVersion(tls.maxProtocolVersion, ref, 'maxProtocolVersion', sink),
    cipherSuites: [...(tls.cipherSuites ?? [])],
    alpn: ['h2', 'http/1.1'],
  };
  if (tls.credentialName) {
    const m = serverCredential(idx, gw, i, sink);
    if (m === null) return null;
    cert.certPem = m.certPem;
    cert.keyPem = m.keyPem;
    if (mode === 'MUTUAL') cert.caPem = m.caPem;
    return cert;
  }
  // File paths name files on the proxy's filesystem; the data plane reads them at apply time.
  if (!tls.serverCertificate || !tls.privateKey) {
    sink.add(problemAt(gw, ['spec', 'servers', i, 'tls'], 'MG_CONFIG_INVALID', 'error',
      `tls.mode ${mode} needs credentialName or both serverCertificate and privateKey; this server is not served`));
    return null;
  }
  if (mode === 'MUTUAL' && !tls.caCertificates) {
    sink.add(problemAt(gw, ['spec', 'servers', i, 'tls'], 'MG_CONFIG_INVALID', 'error',
      'tls.mode MUTUAL needs caCertificates (or a credentialName Secret with ca.crt); this server is not served'));
    return null;
  }
  cert.certFile = tls.serverCertificate;
  cert.keyFile = tls.privateKey;
  if (mode === 'MUTUAL') cert.caFile = tls.caCertificates!;
  return cert;
}

interface PortGroup {
  plan: ListenerPlan;
  /** Set by the first server kept on the port. */
  tls: boolean;
  first: ServerRef;
  /** SNI host → source of the server that claimed it first. */
  sni: Map<string, string>;
}

/**
 * Servers grouped into one listener per (bind address, port), in Gateway then server order.
 * A server whose protocol or TLS disagrees with the port's first server is dropped with an
 * error; the first keeps working.
 */
export function buildListeners(idx: Indexes, gateways: readonly GatewayResource[], sink: ProblemSink): ListenerPlan[] {
  const groups = new Map<string, PortGroup>();
  for (const gw of gateways) {
    const gatewayKey = `${gw.metadata.namespace}/${gw.metadata.name}`;
    (gw.spec.servers ?? []).forEach((server, index) => {
      const protocol = (server.port.protocol ?? '').toUpperCase();
      const isTls = protocol === 'HTTPS';
      // TCP, TLS, MONGO…: not served by this gateway (validation already warned about them).
      if (!isTls && !PLAINTEXT.has(protocol)) return;
      const ref: ServerRef = {
        gateway: gw, gatewayKey, index, server,
        source: `gateway/${gw.metadata.namespace}/${gw.metadata.name}/server/${index}`,
        hosts: [...server.hosts],
      };
      const address = server.bind ?? '0.0.0.0';
      const port = server.port.number;
      const name = `${address}_${port}`;
      const group = groups.get(name);
      if (group && group.tls !== isTls) {
        const was = group.first.server.port.protocol.toUpperCase();
        sink.add(problemAt(gw, ['spec', 'servers', index, 'port'], 'MG_GATEWAY_PORT_CONFLICT', 'error',
          `port ${port} is already served as ${was} by ${group.first.source}; this ${protocol} server (${ref.source}) cannot share it and is not served`));
        return;
      }
      let cert: ServerCertificate | null = null;
      if (isTls) {
        cert = serverCertificate(idx, ref, sink);
        if (cert === null) return;
        const sniHosts: string[] = [];
        const kept: string[] = [];
        for (const h of ref.hosts) {
          const host = splitNamespacedHost(h).host;
          const owner = group?.sni.get(host);
          if (owner !== undefined) {
            sink.add(problemAt(gw, ['spec', 'servers', index, 'hosts'], 'MG_GATEWAY_DUPLICATE_HOST', 'warning',
              `host ${host} on port ${port} is already served by ${owner}; this server does not get it`));
            continue;
          }
          kept.push(h);
          if (!sniHosts.includes(host)) sniHosts.push(host);
        }
        if (kept.length === 0) return;
        ref.hosts = kept;
        cert.sniHosts = sniHosts;
      }
      let g = group;
      if (!g) {
        const listener: Listener = {
          name, address, port, protocol: protocol as ListenerProtocol,
          tls: isTls ? { certificates: [] } : null,
          virtualHosts: [], sources: [],
        };
        g = { plan: { listener, servers: [] }, tls: isTls, first: ref, sni: new Map() };
        groups.set(name, g);
      }
      if (cert) {
        g.plan.listener.tls!.certificates.push(cert);
        for (const h of cert.sniHosts) g.sni.set(h, ref.source);
      }
      g.plan.servers.push(ref);
      g.plan.listener.sources.push(ref.source);
    });
  }
  return [...groups.values()].map((g) => g.plan).sort((a, b) =>
    a.listener.port - b.listener.port || (a.listener.address < b.listener.address ? -1 : a.listener.address > b.listener.address ? 1 : 0));
}
