// The egress allowlist: may a workload reach host:port? The same decision runs in the egress
// gateway (forward proxy: absolute-form HTTP and CONNECT) and, later, in the sidecar, so it
// lives here as a pure function of (compiled config, request) with no I/O and no clock.
//
// Semantics follow Istio's outboundTrafficPolicy REGISTRY_ONLY, where the registry is the set
// of ServiceEntries, tightened where Istio leaves a hole a security team would not want:
//   - HTTP is matched by Host, TLS by the CONNECT host and the ClientHello SNI, opaque TCP by
//     destination address when the entry lists `addresses` (its hosts are then "not used",
//     as the github.yaml sample says).
//   - A TCP port without `addresses` matches its hosts only. (Istio would send all traffic on
//     that port to the service whatever the host; an allowlist cannot be that loose.)
//   - The SNI must be the CONNECT host or a host of the same ServiceEntry: a tunnel opened to
//     an allowed name must not carry a ClientHello for another one (domain fronting).
//   - IP literals are never matched by host patterns, only by `addresses`; numeric names that
//     some resolvers read as addresses (`127.1`, `2130706433`, `0x7f.1`) are refused outright.
//   - Most specific host first (exact, then the longest `*.suffix`), per port: an exact entry
//     without port 443 does not hide a wildcard entry that has it, as in Envoy's per-port
//     route tables.
//
// Lookup cost does not grow with the number of entries: exact hosts are one Map probe;
// wildcards are one Map probe per label of the requested host (a reversed-label trie
// flattened into a Map keyed by the whole suffix, so `a.b.example.com` probes
// `b.example.com`, `example.com`, `com`, longest first); addresses walk a binary prefix trie
// (at most 32 steps for IPv4, 128 for IPv6).
import type { EgressConfig, EgressEntry } from '../api/policy.ts';
import type { Problem } from '../api/problems.ts';
import { parseCidr, parseIp, IpAddr } from './cidr.ts';

// ---------------------------------------------------------------- public API

export interface EgressRequest {
  /** Lower-case, no port; '' for an IP-only TCP destination. Trailing dot and case are normalised anyway. */
  host: string;
  port: number;
  /** HTTP: a plain request (absolute-form); HTTPS/TLS: TLS bytes (CONNECT, passthrough); TCP: opaque bytes. */
  protocol: 'HTTP' | 'HTTPS' | 'TLS' | 'TCP';
  /**
   * The ClientHello SNI, null when not known yet or absent. A CONNECT is decided twice: with
   * null when the CONNECT line arrives (answer 200 or refuse), then with the SNI once the
   * ClientHello has been peeked, before any byte is forwarded.
   */
  sni: string | null;
  /** The IP the proxy will connect to (for `addresses`), or null when not resolved. */
  address: string | null;
}

export interface EgressDecision {
  allowed: boolean;
  /** True when audit mode let through what REGISTRY_ONLY would have blocked: log and count it. */
  audited: boolean;
  /** `serviceentry/<ns>/<name>` that allows the destination, or null. */
  entry: string | null;
  /** One sentence naming the host, the port and why. */
  reason: string;
  /** Of the matching entry: how the proxy finds the upstream (NONE: the requested destination itself). */
  resolution: EgressEntry['resolution'] | null;
  location: EgressEntry['location'] | null;
  /**
   * A STATIC entry's endpoints for the matched port (the endpoint's port mapped by the
   * port's name): where a tunnel connects instead of the named host. Null otherwise.
   */
  targets?: readonly EgressTarget[] | null;
}

export interface EgressTarget { address: string; port: number }

export interface EgressPolicy {
  readonly mode: EgressConfig['mode'];
  readonly audit: boolean;
  /** Number of entries compiled. */
  readonly size: number;
  decide(req: EgressRequest): EgressDecision;
  /**
   * Some entry allows this port by `addresses` (TCP): only then can the address of a name
   * the hosts refuse change the answer. The proxy looks names up for nothing else, so a
   * refused name never becomes a DNS query (which would itself carry data out).
   */
  allowsByAddress(port: number): boolean;
}

/** An entry that cannot be compiled. `field` is the ServiceEntry path, e.g. `spec.ports[0].protocol`. */
export class EgressConfigError extends Error {
  readonly source: string;
  readonly field: string;
  readonly reason: string;

  constructor(source: string, field: string, reason: string) {
    super(`${source} ${field}: ${reason}`);
    this.name = 'EgressConfigError';
    this.source = source;
    this.field = field;
    this.reason = reason;
  }
}

/** The same problem in the form `analyze` and the admin port print. */
export function egressProblem(e: EgressConfigError): Problem {
  const [, ns, name] = e.source.split('/');
  return {
    code: e.field.startsWith('spec.hosts') ? 'MG_CONFIG_HOST' : 'MG_CONFIG_INVALID',
    severity: 'error',
    resource: ns !== undefined && name !== undefined ? `ServiceEntry/${ns}/${name}` : e.source,
    field: e.field,
    message: e.reason,
  };
}

/**
 * Every problem in the config, so pilot can report them all and drop only the bad entries
 * (the rest of the allowlist keeps working).
 */
export function validateEgress(cfg: EgressConfig): EgressConfigError[] {
  const errors: EgressConfigError[] = [];
  if (cfg.mode !== 'REGISTRY_ONLY' && cfg.mode !== 'ALLOW_ANY') {
    errors.push(new EgressConfigError('meshConfig', 'outboundTrafficPolicy.mode', `${JSON.stringify(cfg.mode)} is not a mode; use REGISTRY_ONLY or ALLOW_ANY`));
  }
  if (typeof cfg.audit !== 'boolean') {
    errors.push(new EgressConfigError('meshConfig', 'audit', 'must be true or false'));
  }
  if (!Array.isArray(cfg.entries)) {
    errors.push(new EgressConfigError('meshConfig', 'entries', 'must be a list of ServiceEntries'));
    return errors;
  }
  for (let i = 0; i < cfg.entries.length; i++) compileEntry(cfg.entries[i], i, errors);
  return errors;
}

/** Compiles the allowlist once per config version; throws the first EgressConfigError. */
export function compileEgress(cfg: EgressConfig): EgressPolicy {
  const errors = validateEgress(cfg);
  if (errors.length > 0) {
    const first = errors[0];
    if (errors.length > 1) first.message += ` (and ${errors.length - 1} more problem${errors.length > 2 ? 's' : ''})`;
    throw first;
  }
  const policy = new CompiledEgress(cfg.mode, cfg.audit, cfg.entries.length);
  for (let i = 0; i < cfg.entries.length; i++) {
    const ce = compileEntry(cfg.entries[i], i, errors);
    if (ce !== null) indexEntry(policy, ce, cfg.entries[i]);
  }
  return policy;
}

// ---------------------------------------------------------------- compiled form

// Port kinds: what bytes a declared port carries.
const K_HTTP = 0;
const K_TLS = 1;
const K_TCP = 2;

// A Map, not an object literal: a protocol spelled `__proto__` or `constructor` must not
// find Object's prototype.
const PORT_KINDS: ReadonlyMap<string, number> = new Map([
  ['HTTP', K_HTTP], ['HTTP2', K_HTTP], ['GRPC', K_HTTP], ['GRPC-WEB', K_HTTP],
  ['HTTPS', K_TLS], ['TLS', K_TLS],
  ['TCP', K_TCP], ['MONGO', K_TCP], ['MYSQL', K_TCP], ['REDIS', K_TCP],
]);
const KIND_NAMES = ['HTTP', 'HTTPS/TLS', 'TCP'];

// Request kinds: what the proxy sees the client send.
const R_HTTP = 0;
const R_TLS = 1;
const R_TCP = 2;

interface CompiledPort {
  number: number;
  name: string;
  /** Upper-case, as declared. */
  protocol: string;
  kind: number;
  /** STATIC endpoints for this port (built once: decisions hand out the same array). */
  targets: readonly EgressTarget[] | null;
}

interface CompiledEntry {
  source: string;
  location: EgressEntry['location'];
  resolution: EgressEntry['resolution'];
  exact: Set<string>;
  /** `.example.com` for `*.example.com`. */
  suffixes: string[];
  /** TCP ports of an entry with addresses match by address, never by host. */
  byAddress: boolean;
  ports: Map<number, CompiledPort>;
  /** `80, 443`, for messages. */
  portList: string;
}

interface Binding {
  entry: CompiledEntry;
  port: CompiledPort;
}

/** Everything declared for one host pattern or one address block, merged over entries in order. */
class Rule {
  readonly label: string;
  readonly byPort = new Map<number, Binding[]>();
  readonly sources: string[] = [];
  ports: number[] = [];

  constructor(label: string) {
    this.label = label;
  }

  add(entry: CompiledEntry): void {
    if (!this.sources.includes(entry.source)) this.sources.push(entry.source);
    for (const port of entry.ports.values()) {
      let list = this.byPort.get(port.number);
      if (list === undefined) {
        list = [];
        this.byPort.set(port.number, list);
        this.ports.push(port.number);
      }
      if (!list.some((b) => b.entry === entry)) list.push({ entry, port });
    }
    this.ports.sort((a, b) => a - b);
  }
}

class TrieNode {
  zero: TrieNode | null = null;
  one: TrieNode | null = null;
  rule: Rule | null = null;
}

class CompiledEgress implements EgressPolicy {
  readonly mode: EgressConfig['mode'];
  readonly audit: boolean;
  readonly size: number;
  readonly exact = new Map<string, Rule>();
  /** Keyed by the suffix after `*.`. */
  readonly wildcards = new Map<string, Rule>();
  readonly v4 = new TrieNode();
  readonly v6 = new TrieNode();
  hasAddresses = false;
  /** Ports that TCP entries with `addresses` declare. */
  readonly addressPorts = new Set<number>();

  constructor(mode: EgressConfig['mode'], audit: boolean, size: number) {
    this.mode = mode;
    this.audit = audit;
    this.size = size;
  }

  decide(req: EgressRequest): EgressDecision {
    return decideEgress(this, req);
  }

  allowsByAddress(port: number): boolean {
    return this.addressPorts.has(port);
  }
}

// ---------------------------------------------------------------- compile

const MAX_HOST = 253;

/** Checks a ServiceEntry host; returns the normalised host or a reason it is refused. */
function checkEntryHost(raw: unknown): { host: string } | { why: string } {
  if (typeof raw !== 'string' || raw === '') return { why: 'must be a non-empty host name' };
  const scheme = raw.indexOf('://');
  if (scheme >= 0) {
    const bare = raw.slice(scheme + 3).split(/[/:]/)[0];
    return { why: `${JSON.stringify(raw)} has a scheme; write the bare host name ${JSON.stringify(bare)} and put the port in spec.ports` };
  }
  if (raw.includes('/')) return { why: `${JSON.stringify(raw)} has a "/"; write only the host name (no path, no namespace)` };
  let h = raw.toLowerCase();
  if (h.startsWith('[') || (h.includes(':') && parseIp(h, scratchIp))) {
    return { why: `${JSON.stringify(raw)} is an IP address; IP destinations are allowed by spec.addresses, not by hosts` };
  }
  if (h.includes(':')) return { why: `${JSON.stringify(raw)} has a port; write the host name alone and list ports in spec.ports` };
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (h === '*') return { why: '"*" would allow every host (Istio rejects it too); set outboundTrafficPolicy mode ALLOW_ANY instead' };
  let name = h;
  if (h.startsWith('*')) {
    if (!h.startsWith('*.')) return { why: `${JSON.stringify(raw)}: only whole-label wildcards like "*.example.com" are allowed ("*foo.com" would also match "evilfoo.com")` };
    name = h.slice(2);
  }
  if (name.includes('*')) return { why: `${JSON.stringify(raw)}: a wildcard may only be the first label ("*.example.com")` };
  if (!h.startsWith('*') && parseIp(name, scratchIp)) {
    return { why: `${JSON.stringify(raw)} is an IP address; IP destinations are allowed by spec.addresses, not by hosts` };
  }
  const bad = dnsNameProblem(name);
  if (bad !== null) return { why: `${JSON.stringify(raw)} ${bad}` };
  return { host: h };
}

function compileEntry(e: EgressEntry, index: number, errors: EgressConfigError[]): CompiledEntry | null {
  const before = errors.length;
  const source = e !== null && typeof e === 'object' && typeof e.source === 'string' && e.source !== '' ? e.source : `entries[${index}]`;
  const fail = (field: string, why: string): void => { errors.push(new EgressConfigError(source, field, why)); };
  if (e === null || typeof e !== 'object') {
    fail('spec', 'must be a ServiceEntry');
    return null;
  }
  if (source !== e.source) fail('source', 'must name the ServiceEntry (serviceentry/<namespace>/<name>)');

  const exact = new Set<string>();
  const suffixes: string[] = [];
  if (!Array.isArray(e.hosts) || e.hosts.length === 0) {
    fail('spec.hosts', 'at least one host is required');
  } else {
    for (let i = 0; i < e.hosts.length; i++) {
      const r = checkEntryHost(e.hosts[i]);
      if ('why' in r) { fail(`spec.hosts[${i}]`, r.why); continue; }
      if (r.host.startsWith('*.')) { if (!suffixes.includes(r.host.slice(1))) suffixes.push(r.host.slice(1)); }
      else exact.add(r.host);
    }
  }

  const addresses = Array.isArray(e.addresses) ? e.addresses : [];
  if (e.addresses !== undefined && !Array.isArray(e.addresses)) fail('spec.addresses', 'must be a list of CIDR blocks or addresses');
  for (let i = 0; i < addresses.length; i++) {
    const a = addresses[i];
    if (typeof a !== 'string' || parseCidr(a) === null) {
      fail(`spec.addresses[${i}]`, `${JSON.stringify(a)} is not an IP address or CIDR block (forms: 140.82.112.0/20, 13.229.188.59, 2001:db8::/32; a "/" needs a prefix length within the family)`);
    }
  }

  const ports = new Map<number, CompiledPort>();
  if (!Array.isArray(e.ports) || e.ports.length === 0) {
    fail('spec.ports', 'at least one port is required: an entry without ports would allow nothing');
  } else {
    for (let i = 0; i < e.ports.length; i++) {
      const p = e.ports[i];
      if (p === null || typeof p !== 'object') { fail(`spec.ports[${i}]`, 'must be {number, protocol, name}'); continue; }
      const n = p.number;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
        fail(`spec.ports[${i}].number`, `${JSON.stringify(n)} is not a port number (1-65535)`);
        continue;
      }
      if (typeof p.protocol !== 'string' || p.protocol === '') {
        // Istio would guess from the port name; an allowlist must not guess which bytes it lets out.
        fail(`spec.ports[${i}].protocol`, `port ${n} has no protocol; set one of ${[...PORT_KINDS.keys()].join(', ')}`);
        continue;
      }
      const protocol = p.protocol.toUpperCase();
      const kind = PORT_KINDS.get(protocol);
      if (kind === undefined) {
        fail(`spec.ports[${i}].protocol`, `${JSON.stringify(p.protocol)} is not a protocol the egress allowlist supports; use one of ${[...PORT_KINDS.keys()].join(', ')}`);
        continue;
      }
      if (ports.has(n)) { fail(`spec.ports[${i}].number`, `port ${n} is listed twice`); continue; }
      ports.set(n, { number: n, name: typeof p.name === 'string' ? p.name : '', protocol, kind, targets: null });
    }
  }

  // STATIC endpoints: where tunnels go. Istio requires IP addresses for STATIC.
  const endpoints = Array.isArray(e.endpoints) ? e.endpoints : [];
  const scratch = new IpAddr();
  for (let i = 0; i < endpoints.length; i++) {
    const ep = endpoints[i];
    if (typeof ep?.address !== 'string' || !parseIp(ep.address, scratch)) {
      fail(`spec.endpoints[${i}].address`, `${JSON.stringify(ep?.address)} is not an IP address (resolution STATIC connects to its endpoints' addresses)`);
      continue;
    }
    for (const [name, n] of Object.entries(ep.ports ?? {})) {
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) fail(`spec.endpoints[${i}].ports.${name}`, `${JSON.stringify(n)} is not a port number (1-65535)`);
    }
  }
  if (e.resolution === 'STATIC' && endpoints.length > 0) {
    for (const port of ports.values()) {
      port.targets = endpoints.map((ep) => ({ address: ep.address, port: ep.ports?.[port.name] ?? port.number }));
    }
  }

  if (e.location !== 'MESH_EXTERNAL' && e.location !== 'MESH_INTERNAL') {
    fail('spec.location', `${JSON.stringify(e.location)} is not MESH_EXTERNAL or MESH_INTERNAL`);
  }
  if (e.resolution !== 'NONE' && e.resolution !== 'STATIC' && e.resolution !== 'DNS' && e.resolution !== 'DNS_ROUND_ROBIN') {
    fail('spec.resolution', `${JSON.stringify(e.resolution)} is not NONE, STATIC, DNS or DNS_ROUND_ROBIN`);
  }
  if (errors.length > before) return null;
  return {
    source, location: e.location, resolution: e.resolution, exact, suffixes,
    byAddress: addresses.length > 0, ports,
    portList: [...ports.keys()].sort((a, b) => a - b).join(', '),
  };
}

function ruleIn(map: Map<string, Rule>, key: string, label: string): Rule {
  let r = map.get(key);
  if (r === undefined) {
    r = new Rule(label);
    map.set(key, r);
  }
  return r;
}

function indexEntry(p: CompiledEgress, ce: CompiledEntry, e: EgressEntry): void {
  for (const h of ce.exact) ruleIn(p.exact, h, h).add(ce);
  for (const s of ce.suffixes) ruleIn(p.wildcards, s.slice(1), `*${s}`).add(ce);
  for (const text of e.addresses ?? []) {
    const c = parseCidr(text)!;
    let node = c.family === 4 ? p.v4 : p.v6;
    const words = [c.w0, c.w1, c.w2, c.w3];
    for (let i = 0; i < c.prefix; i++) {
      const bit = (words[i >>> 5] >>> (31 - (i & 31))) & 1;
      if (bit === 0) node = node.zero ??= new TrieNode();
      else node = node.one ??= new TrieNode();
    }
    node.rule ??= new Rule(text);
    node.rule.add(ce);
    p.hasAddresses = true;
  }
  if (ce.byAddress) {
    for (const port of ce.ports.values()) if (port.kind === K_TCP) p.addressPorts.add(port.number);
  }
}

// ---------------------------------------------------------------- names

/** Null when `name` (lower-case, no trailing dot, no wildcard) is a usable DNS name, else why not. */
function dnsNameProblem(name: string): string | null {
  const len = name.length;
  if (len === 0) return 'is empty';
  if (len > MAX_HOST) return `is longer than ${MAX_HOST} characters`;
  let labelStart = 0;
  let digitsOnly = true;
  for (let i = 0; i <= len; i++) {
    const c = i < len ? name.charCodeAt(i) : 46;
    if (c === 46) {
      const l = i - labelStart;
      if (l === 0) return 'has an empty label';
      if (l > 63) return 'has a label longer than 63 characters';
      if (name.charCodeAt(labelStart) === 45 || name.charCodeAt(i - 1) === 45) return 'has a label that starts or ends with "-"';
      if (i === len && (digitsOnly || (l > 2 && name.charCodeAt(labelStart) === 48 && name.charCodeAt(labelStart + 1) === 120))) {
        // A numeric last label makes the name an address to some resolvers (127.1, 2130706433, 0x7f.1).
        return 'is numeric but not a dotted-quad IPv4 address; resolvers disagree on what it means';
      }
      labelStart = i + 1;
      digitsOnly = true;
      continue;
    }
    if (c >= 48 && c <= 57) continue;
    digitsOnly = false;
    // Underscores are not valid in host names but occur in real ones (service records, some CDNs).
    if ((c >= 97 && c <= 122) || c === 45 || c === 95) continue;
    return 'contains characters not allowed in a host name';
  }
  return null;
}

// ---------------------------------------------------------------- decide

// Per-call scratch: decide() is synchronous and never re-entered, so one copy serves every
// call without allocating.
const scratchIp = new IpAddr();
const destIp = new IpAddr();

// Why the most useful refusal so far refuses; a later, more specific reason replaces it.
const W_NONE = 0;
const W_PORT = 1;
const W_ADDRESS = 2;
const W_PROTOCOL = 3;
const W_SNI = 4;
/** Not a destination at all (bad port, bad host): refused in every mode. */
const W_MALFORMED = 9;
let whyRank = W_NONE;
let why = '';

function refuseMalformed(reason: string): EgressDecision {
  whyRank = W_MALFORMED;
  return { allowed: false, audited: false, entry: null, reason, resolution: null, location: null };
}

function requestKind(protocol: string): number {
  if (protocol === 'HTTP') return R_HTTP;
  if (protocol === 'HTTPS' || protocol === 'TLS') return R_TLS;
  if (protocol === 'TCP') return R_TCP;
  return -1;
}

/** An opaque TCP port carries anything; HTTP and TLS ports carry only their own protocol. */
function kindAllows(portKind: number, reqKind: number): boolean {
  return portKind === K_TCP || portKind === reqKind;
}

function entryCoversName(entry: CompiledEntry, name: string): boolean {
  if (entry.exact.has(name)) return true;
  const suffixes = entry.suffixes;
  for (let i = 0; i < suffixes.length; i++) if (name.endsWith(suffixes[i])) return true;
  return false;
}

/** A name as compared: lower-case, one trailing dot and IPv6 brackets removed. */
function normaliseName(raw: string): string {
  let h = raw;
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (c >= 65 && c <= 90) { h = h.toLowerCase(); break; }
  }
  if (h.length > 1 && h.charCodeAt(h.length - 1) === 46) h = h.slice(0, -1);
  if (h.length > 2 && h.charCodeAt(0) === 91 && h.charCodeAt(h.length - 1) === 93) h = h.slice(1, -1);
  return h;
}

/** A binding of `rule` on `port` that lets this request through by host, or null (noting why not). */
function matchByHost(rule: Rule, host: string, port: number, kind: number, sni: string | null): Binding | null {
  const list = rule.byPort.get(port);
  if (list === undefined) {
    if (whyRank < W_PORT) {
      whyRank = W_PORT;
      const by = rule.label === host ? rule.sources.join(', ') : `${rule.label} in ${rule.sources.join(', ')}`;
      why = `host ${host} is declared by ${by} but not on port ${port} (ports: ${rule.ports.join(', ')})`;
    }
    return null;
  }
  for (let i = 0; i < list.length; i++) {
    const b = list[i];
    const portKind = b.port.kind;
    if (!kindAllows(portKind, kind)) {
      if (whyRank < W_PROTOCOL) {
        whyRank = W_PROTOCOL;
        why = `port ${port} of host ${host} is declared ${b.port.protocol} by ${b.entry.source}; ${KIND_NAMES[kind]} traffic needs a port declared ${kind === R_HTTP ? 'HTTP' : kind === R_TLS ? 'HTTPS or TLS' : 'TCP'}`;
      }
      continue;
    }
    if (portKind === K_TCP && b.entry.byAddress) {
      if (whyRank < W_ADDRESS) {
        whyRank = W_ADDRESS;
        why = `port ${port} of host ${host} is TCP in ${b.entry.source}, which lists addresses, so it is matched by destination address`;
      }
      continue;
    }
    if (kind === R_TLS && sni !== null && sni !== host && !entryCoversName(b.entry, sni)) {
      if (whyRank < W_SNI) {
        whyRank = W_SNI;
        why = `SNI ${sni} does not match the CONNECT host ${host} (port ${port}) nor any host of ${b.entry.source}`;
      }
      continue;
    }
    return b;
  }
  return null;
}

/** The most specific address block with a binding on `port` that carries this request, or null. */
function matchByAddress(p: CompiledEgress, ip: IpAddr, port: number, kind: number, hostIsIp: boolean): Binding | null {
  let node: TrieNode | null = ip.family === 4 ? p.v4 : p.v6;
  const bits = ip.family === 4 ? 32 : 128;
  let best: Binding | null = null;
  for (let i = 0; node !== null; i++) {
    const rule = node.rule;
    if (rule !== null) {
      const list = rule.byPort.get(port);
      if (list === undefined) {
        if (whyRank < W_PORT) {
          whyRank = W_PORT;
          why = `address block ${rule.label} is declared by ${rule.sources.join(', ')} but not on port ${port} (ports: ${rule.ports.join(', ')})`;
        }
      } else {
        for (let j = 0; j < list.length; j++) {
          const b = list[j];
          // TCP ports match by address; an HTTP port only for a request addressed to the IP
          // itself (Istio lists a service's addresses among its HTTP domains). TLS ports never:
          // their check is the SNI.
          if (b.port.kind === K_TCP || (b.port.kind === K_HTTP && kind === R_HTTP && hostIsIp)) {
            best = b;
            break;
          }
          if (whyRank < W_PROTOCOL) {
            whyRank = W_PROTOCOL;
            why = `port ${port} of address block ${rule.label} is declared ${b.port.protocol} by ${b.entry.source}, which is not matched by address for ${KIND_NAMES[kind]} traffic`;
          }
        }
      }
    }
    if (i >= bits) break;
    const w = i < 32 ? ip.w0 : i < 64 ? ip.w1 : i < 96 ? ip.w2 : ip.w3;
    node = ((w >>> (31 - (i & 31))) & 1) === 0 ? node.zero : node.one;
  }
  return best;
}

function allowedBy(b: Binding, reason: string): EgressDecision {
  return { allowed: true, audited: false, entry: b.entry.source, reason, resolution: b.entry.resolution, location: b.entry.location, targets: b.port.targets };
}

/** The REGISTRY_ONLY answer. */
function decideRegistry(p: CompiledEgress, req: EgressRequest): EgressDecision {
  whyRank = W_NONE;
  why = '';
  const port = req.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    return refuseMalformed(`port ${String(port)} is not a valid port`);
  }
  const kind = requestKind(req.protocol);
  if (kind < 0) return refuseMalformed(`protocol ${String(req.protocol)} on port ${port} is not HTTP, HTTPS, TLS or TCP`);

  let host = typeof req.host === 'string' ? normaliseName(req.host) : '';
  const sni = kind === R_TLS && typeof req.sni === 'string' && req.sni !== '' ? normaliseName(req.sni) : null;
  const hostIsIp = host !== '' && parseIp(host, scratchIp);
  if (host === '' && sni !== null) {
    // TLS seen without a CONNECT (passthrough): the SNI is the only name; the proxy must then
    // dial that name, not the original destination address.
    host = sni;
  }
  if (sni !== null && sni !== host) {
    const bad = parseIp(sni, scratchIp) ? 'is an IP address (SNI carries names only)' : dnsNameProblem(sni);
    if (bad !== null) return refuseMalformed(`SNI ${JSON.stringify(req.sni)} for port ${port} ${bad}`);
  }

  // Where the proxy will connect: the resolved address when given, else an IP literal host.
  let haveIp = false;
  if (typeof req.address === 'string' && req.address !== '') {
    if (!parseIp(req.address, destIp)) return refuseMalformed(`destination address ${JSON.stringify(req.address)} (port ${port}) is not an IP address`);
    haveIp = true;
  } else if (hostIsIp) {
    haveIp = parseIp(host, destIp);
  }

  // The name is checked only where it matters: an exact hit is a name the config already
  // validated, so the common case skips the scan; anything else is checked before it can
  // pass or be reported.
  let hostChecked = host === '' || hostIsIp;
  if (host !== '' && !hostIsIp) {
    const exact = p.exact.get(host);
    if (exact !== undefined) {
      hostChecked = true;
      const b = matchByHost(exact, host, port, kind, sni);
      if (b !== null) return allowedBy(b, `host ${host} port ${port} (${req.protocol}) is allowed by ${b.entry.source}`);
    }
    if (p.wildcards.size > 0) {
      // Longest suffix first: the most specific wildcard that has this port wins.
      for (let dot = host.indexOf('.'); dot >= 0; dot = host.indexOf('.', dot + 1)) {
        const rule = p.wildcards.get(host.slice(dot + 1));
        if (rule === undefined) continue;
        if (!hostChecked) {
          const bad = dnsNameProblem(host);
          if (bad !== null) return refuseMalformed(`host ${JSON.stringify(req.host)} (port ${port}) ${bad}`);
          hostChecked = true;
        }
        const b = matchByHost(rule, host, port, kind, sni);
        if (b !== null) return allowedBy(b, `host ${host} port ${port} (${req.protocol}) is allowed by ${rule.label} in ${b.entry.source}`);
      }
    }
  }
  if (!hostChecked) {
    const bad = dnsNameProblem(host);
    if (bad !== null) return refuseMalformed(`host ${JSON.stringify(req.host)} (port ${port}) ${bad}`);
  }

  if (haveIp && p.hasAddresses) {
    const b = matchByAddress(p, destIp, port, kind, hostIsIp);
    if (b !== null) {
      const shown = req.address ?? host;
      return allowedBy(b, `address ${shown} port ${port} (${req.protocol}) is allowed by the addresses of ${b.entry.source}`);
    }
  }

  const shownHost = host !== '' ? host : null;
  const shownIp = typeof req.address === 'string' && req.address !== '' ? req.address : hostIsIp ? host : null;
  let reason: string;
  if (whyRank !== W_NONE) {
    reason = whyRank !== W_ADDRESS ? why
      : shownIp === null ? `${why}; the destination address is not known (resolve the host, then decide)`
      : `${why}; ${shownIp} is not among them`;
  } else if (hostIsIp || shownHost === null) {
    reason = shownIp === null
      ? `protocol ${req.protocol} on port ${port} needs addresses (CIDR) in the ServiceEntry, and the destination has neither a host name nor an address`
      : kind === R_TCP || shownHost === null
      ? `protocol ${req.protocol} on port ${port} to ${shownIp} needs addresses (CIDR) in the ServiceEntry; no ServiceEntry's addresses cover it`
      : `host ${host} is an IP address; IP destinations are allowed only by a ServiceEntry's addresses, and none covers ${host} on port ${port}`;
  } else {
    reason = `no ServiceEntry declares host ${host} (port ${port})`;
  }
  return { allowed: false, audited: false, entry: null, reason, resolution: null, location: null };
}

/** The decision for the configured mode; a named function so the request path is plain calls. */
function decideEgress(p: CompiledEgress, req: EgressRequest): EgressDecision {
  const d = decideRegistry(p, req);
  if (d.allowed || whyRank === W_MALFORMED) return d;
  if (p.audit) {
    // Keep REGISTRY_ONLY's reason: it is what the operator needs to read before enforcing.
    // Audit marks these under ALLOW_ANY too, so a mesh still open can measure what closing it breaks.
    // Malformed requests (above) are refused even here: they name no destination to audit.
    d.allowed = true;
    d.audited = true;
    return d;
  }
  if (p.mode === 'ALLOW_ANY') {
    d.allowed = true;
    d.reason = `ALLOW_ANY lets this through; REGISTRY_ONLY would refuse it: ${d.reason}`;
  }
  return d;
}
