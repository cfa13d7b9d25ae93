// Validation of loaded resources: the same structural rules the Kubernetes API server
// applies from Istio's CRDs (schema.ts), then the semantic rules istiod's webhook and
// `istioctl analyze` apply, then warnings for valid Istio fields meshgate ignores so a
// setting is never dropped silently. Errors reject the resource; warnings never do.
//
// Semantic checks run even when the schema already found problems, so one pass shows the
// user everything; they therefore read every value defensively (a field may have the
// wrong type).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { RE2JS } from 're2js';
import { parseDuration } from './duration.ts';
import { isValidHost } from './hosts.ts';
import { SUPPORTED_KINDS } from './istio.ts';
import type {
  AuthorizationPolicyResource, ConfigSnapshot, DestinationRuleResource, GatewayResource, RequestAuthenticationResource,
  RateLimitPolicyResource, Resource, SecretResource, ServiceEntryResource, VirtualServiceResource,
} from './istio.ts';
import { documentKeys, positionOf } from './load.ts';
import { fieldPath, resourceKey } from './problems.ts';
import type { Problem, ProblemCode, Severity } from './problems.ts';
import { suggest, validateSpecSchema } from './schema.ts';
import type { FieldIssue } from './schema.ts';

/** Longest user regex accepted (ISTIO-SECURITY-2026-006: unbounded strings in config). */
export const MAX_REGEX_LENGTH = 1024;
/** Largest directResponse body accepted; it is held in memory by every proxy. */
export const MAX_DIRECT_RESPONSE_BODY = 1024 * 1024;

/** Envoy's retry policy names, as Istio passes `retryOn` through to Envoy. */
export const RETRY_ON_POLICIES: ReadonlySet<string> = new Set([
  '5xx', 'gateway-error', 'reset', 'connect-failure', 'envoy-ratelimited', 'retriable-4xx',
  'refused-stream', 'retriable-status-codes', 'retriable-headers', 'http3-post-connect-failure',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
]);

/** Protocols Istio knows (compared upper-cased), and the subset meshgate serves on a Gateway. */
const ISTIO_PROTOCOLS: ReadonlySet<string> = new Set([
  'HTTP', 'HTTPS', 'HTTP2', 'GRPC', 'GRPC-WEB', 'HTTP_PROXY', 'TCP', 'TLS', 'UDP', 'MONGO', 'REDIS', 'MYSQL',
]);
const GATEWAY_PROTOCOLS: ReadonlySet<string> = new Set(['HTTP', 'HTTPS', 'HTTP2', 'GRPC']);

type Obj = Record<string, unknown>;
type Path = (string | number)[];

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}
function quote(s: string, max = 60): string {
  return JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s);
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Characters no header value, SAN or label may carry (RFC 9110 field-value excludes them). */
const CONTROL_CHARS = /[\u0000-\u0008\u000a-\u001f\u007f]/;
/** Kubernetes label key (optional DNS prefix, then a name of at most 63 characters) and value. */
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export function isLabelKey(k: string): boolean {
  const slash = k.lastIndexOf('/');
  if (slash < 0) return LABEL_NAME.test(k);
  return isDns1123Subdomain(k.slice(0, slash)) && LABEL_NAME.test(k.slice(slash + 1));
}
export function isLabelValue(v: string): boolean {
  return LABEL_VALUE.test(v);
}

/** RFC 9110 token: what an HTTP header name may contain. */
const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function isDns1123Label(s: string): boolean {
  return s.length > 0 && s.length <= 63 && DNS1123_LABEL.test(s);
}
export function isDns1123Subdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
}

/** Collects the problems of one resource, each pointing at its file, line and field. */
class Checker {
  readonly r: Resource;
  readonly id: string;
  readonly out: Problem[] = [];

  constructor(r: Resource) {
    this.r = r;
    const ns = typeof r.metadata?.namespace === 'string' ? r.metadata.namespace : '?';
    const name = typeof r.metadata?.name === 'string' && r.metadata.name !== '' ? r.metadata.name : '?';
    this.id = resourceKey(String(r.kind), ns, name);
  }

  add(code: ProblemCode, severity: Severity, path: Path, message: string): void {
    const pos = positionOf(this.r, path);
    const p: Problem = { code, severity, file: this.r.source?.file, line: pos?.line ?? this.r.source?.line, resource: this.id, message };
    if (pos !== undefined) p.column = pos.column;
    if (path.length > 0) p.field = fieldPath(path);
    this.out.push(p);
  }
  error(code: ProblemCode, path: Path, message: string): void {
    this.add(code, 'error', path, message);
  }
  warn(code: ProblemCode, path: Path, message: string): void {
    this.add(code, 'warning', path, message);
  }
  /** A valid Istio field meshgate does not implement yet: said by name, never dropped silently. */
  unsupported(path: Path, message: string): void {
    this.add('MG_CONFIG_UNSUPPORTED_FIELD', 'warning', path, message);
  }
  issue(i: FieldIssue): void {
    this.add(i.code, i.severity, i.path, i.message);
  }

  // ---- shared value checks

  duration(obj: Obj, key: string, path: Path): void {
    const v = obj[key];
    if (v === undefined) return;
    if (typeof v !== 'string') return; // the schema reports the type
    const ms = parseDuration(v);
    if (ms === null) this.error('MG_CONFIG_DURATION', [...path, key], `${quote(v)} is not a duration (use forms like 500ms, 1s, 1m30s)`);
    else if (ms < 1) this.error('MG_CONFIG_DURATION', [...path, key], `${quote(v)} is too short; a duration here must be at least 1ms`);
  }

  regex(v: unknown, path: Path): void {
    if (typeof v !== 'string') return;
    if (v.length > MAX_REGEX_LENGTH) {
      this.error('MG_CONFIG_REGEX', path, `regex is ${v.length} characters long; the limit is ${MAX_REGEX_LENGTH}`);
      return;
    }
    try {
      RE2JS.compile(v);
    } catch (e) {
      // re2js reports e.g. "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"
      this.error('MG_CONFIG_REGEX', path, `${quote(v)} is not a valid RE2 regex: ${(e as Error).message}`);
    }
  }

  stringMatch(v: unknown, path: Path): void {
    if (isObj(v)) this.regex(v.regex, [...path, 'regex']);
  }

  percent(v: unknown, path: Path): void {
    if (typeof v === 'number' && (v < 0 || v > 100)) this.error('MG_CONFIG_INVALID', path, `${v} is not a percentage; it must be between 0 and 100`);
  }

  port(v: unknown, path: Path): void {
    if (isInt(v) && (v < 1 || v > 65535)) this.error('MG_CONFIG_INVALID', path, `port ${v} is out of range; it must be between 1 and 65535`);
  }

  headerName(name: string, path: Path, allowPseudo = false): void {
    const n = allowPseudo && name.startsWith(':') ? name.slice(1) : name;
    if (!HEADER_TOKEN.test(n)) this.error('MG_CONFIG_INVALID', path, `${quote(name)} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_\`|~ only)`);
  }

  destinationHost(v: unknown, path: Path): void {
    if (typeof v !== 'string') return;
    if (v === '*' || v.startsWith('*')) this.error('MG_CONFIG_HOST', path, `destination host ${quote(v)} cannot be a wildcard; name one service`);
    else if (!isValidHost(v)) this.error('MG_CONFIG_HOST', path, `${quote(v)} is not a valid host name`);
  }

  /** Label selectors (subset labels): bounded, as Kubernetes labels are (ISTIO-SECURITY-2026-006). */
  labels(v: unknown, path: Path): void {
    if (!isObj(v)) return;
    for (const [k, val] of Object.entries(v)) {
      if (!isLabelKey(k)) this.error('MG_CONFIG_INVALID', [...path, k], `${quote(k)} is not a valid label key (letters, digits, '-', '_', '.', at most 63 characters, optional DNS prefix/)`);
      else if (typeof val === 'string' && !isLabelValue(val)) this.error('MG_CONFIG_INVALID', [...path, k], `${quote(val)} is not a valid label value (letters, digits, '-', '_', '.', at most 63 characters)`);
    }
  }

  /** subjectAltNames with NUL or other control bytes could match certificates they should not (CVE-2025-66220). */
  subjectAltNames(v: unknown, path: Path): void {
    arr(v).forEach((san, i) => {
      if (typeof san === 'string' && (san === '' || CONTROL_CHARS.test(san) || san.includes('\t'))) {
        this.error('MG_CONFIG_INVALID', [...path, i], 'a subject alternative name must be non-empty printable text without control characters');
      }
    });
  }

  exportTo(spec: Obj): void {
    if (spec.exportTo !== undefined) this.unsupported(['spec', 'exportTo'], 'exportTo is ignored: every resource is visible everywhere');
  }
}

// ---------------------------------------------------------------- metadata

function checkTypeAndMeta(c: Checker): boolean {
  const r = c.r;
  const served = SUPPORTED_KINDS[r.kind];
  if (served === undefined) {
    c.error('MG_CONFIG_UNKNOWN_KIND', ['kind'], `unknown kind ${quote(String(r.kind))} (meshgate reads ${Object.keys(SUPPORTED_KINDS).join(', ')})`);
    return false;
  }
  if (!served.includes(r.apiVersion)) {
    c.error('MG_CONFIG_BAD_API_VERSION', ['apiVersion'], `apiVersion ${quote(String(r.apiVersion))} is not served for kind ${r.kind}; use ${served.join(' or ')}`);
    return false;
  }
  const name = r.metadata?.name;
  if (typeof name !== 'string' || name === '') {
    c.error('MG_CONFIG_BAD_NAME', ['metadata', 'name'], 'metadata.name is required');
  } else if (!isDns1123Subdomain(name)) {
    c.error('MG_CONFIG_BAD_NAME', ['metadata', 'name'], `${quote(name)} is not a valid name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)`);
  }
  const ns = r.metadata?.namespace;
  if (typeof ns !== 'string' || !isDns1123Label(ns)) {
    c.error('MG_CONFIG_BAD_NAME', ['metadata', 'namespace'], `${quote(String(ns))} is not a valid namespace (lower-case letters, digits and '-', at most 63 characters)`);
  }
  for (const k of Object.keys(r.metadata ?? {})) {
    if (OBJECT_META.has(k)) continue;
    // A misspelt `namespce:` would otherwise put the resource in `default` without a word.
    const hint = suggest(k, [...OBJECT_META]);
    c.error('MG_CONFIG_UNKNOWN_FIELD', ['metadata', k], `unknown field ${quote(k)} in metadata${hint !== null ? `; did you mean ${quote(hint)}?` : ''}`);
  }
  const keys = documentKeys(r);
  if (keys !== undefined) {
    const allowed = r.kind === 'Secret' ? SECRET_TOP_LEVEL : ISTIO_TOP_LEVEL;
    for (const k of keys) {
      if (!allowed.has(k)) c.error('MG_CONFIG_UNKNOWN_FIELD', [k], `unknown top-level field ${quote(k)}; a ${r.kind} has ${[...allowed].join(', ')}`);
    }
  }
  return true;
}

/** Kubernetes ObjectMeta fields (as `kubectl get -o yaml` writes them, so such output loads). */
const OBJECT_META: ReadonlySet<string> = new Set([
  'name', 'namespace', 'labels', 'annotations', 'creationTimestamp', 'generateName', 'uid', 'resourceVersion',
  'generation', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'ownerReferences', 'finalizers', 'managedFields', 'selfLink',
]);
const ISTIO_TOP_LEVEL: ReadonlySet<string> = new Set(['apiVersion', 'kind', 'metadata', 'spec', 'status']);
const SECRET_TOP_LEVEL: ReadonlySet<string> = new Set(['apiVersion', 'kind', 'metadata', 'type', 'data', 'stringData', 'immutable']);

// ---------------------------------------------------------------- Gateway

/** `host`, `ns/host`, `*\/host` or `./host`, as a Gateway server (or Sidecar) names hosts. */
function checkServerHost(c: Checker, h: unknown, path: Path): void {
  if (typeof h !== 'string') return;
  const slash = h.indexOf('/');
  const ns = slash < 0 ? null : h.slice(0, slash);
  const host = slash < 0 ? h : h.slice(slash + 1);
  if (ns !== null && ns !== '*' && ns !== '.' && !isDns1123Label(ns)) {
    c.error('MG_CONFIG_HOST', path, `${quote(h)}: ${quote(ns)} is not a namespace; write ns/host, */host or ./host`);
    return;
  }
  if (!isValidHost(host)) c.error('MG_CONFIG_HOST', path, `${quote(h)}: ${quote(host)} is not a valid host name`);
}

function checkGateway(c: Checker, spec: Obj): void {
  const servers = spec.servers;
  if (!Array.isArray(servers) || servers.length === 0) {
    c.error('MG_CONFIG_INVALID', ['spec', 'servers'], 'a Gateway needs at least one server');
    return;
  }
  servers.forEach((s, i) => {
    const at: Path = ['spec', 'servers', i];
    if (!isObj(s)) return;
    const port = isObj(s.port) ? s.port : {};
    c.port(port.number, [...at, 'port', 'number']);
    c.port(port.targetPort, [...at, 'port', 'targetPort']);
    const protocol = typeof port.protocol === 'string' ? port.protocol.toUpperCase() : '';
    let served = true;
    if (typeof port.protocol === 'string') {
      if (!ISTIO_PROTOCOLS.has(protocol)) {
        c.error('MG_CONFIG_INVALID', [...at, 'port', 'protocol'], `unknown protocol ${quote(port.protocol)}; use one of ${[...ISTIO_PROTOCOLS].join(', ')}`);
        served = false;
      } else if (!GATEWAY_PROTOCOLS.has(protocol)) {
        c.unsupported([...at, 'port', 'protocol'], `protocol ${port.protocol} is not supported yet; server ignored`);
        served = false;
      }
    }
    const hosts = s.hosts;
    if (!Array.isArray(hosts) || hosts.length === 0) {
      c.error('MG_CONFIG_HOST', [...at, 'hosts'], 'a server needs at least one host (use "*" for any)');
    } else {
      hosts.forEach((h, j) => checkServerHost(c, h, [...at, 'hosts', j]));
    }
    if (s.bind !== undefined) c.unsupported([...at, 'bind'], 'bind is not supported yet; the server listens on all addresses');
    if (s.defaultEndpoint !== undefined) c.unsupported([...at, 'defaultEndpoint'], 'defaultEndpoint is a Sidecar setting and is ignored on a Gateway');
    if (served) checkServerTls(c, s.tls, protocol, at);
  });
}

function checkServerTls(c: Checker, tls: unknown, protocol: string, at: Path): void {
  const tlsPath = [...at, 'tls'];
  const terminates = protocol === 'HTTPS';
  if (!isObj(tls)) {
    if (terminates) c.error('MG_CONFIG_INVALID', tlsPath, 'an HTTPS server needs tls settings (mode SIMPLE with a credentialName, for example)');
    return;
  }
  c.subjectAltNames(tls.subjectAltNames, [...tlsPath, 'subjectAltNames']);
  const onlyRedirect = Object.keys(tls).every((k) => k === 'httpsRedirect' || tls[k] === undefined);
  if (!terminates) {
    if (!onlyRedirect) c.error('MG_CONFIG_INVALID', tlsPath, `a ${protocol || 'plain-text'} server cannot have TLS settings other than httpsRedirect; use protocol HTTPS to terminate TLS`);
    return;
  }
  // Istio's default mode is PASSTHROUGH (the enum's zero value), not SIMPLE.
  const mode = typeof tls.mode === 'string' ? tls.mode : 'PASSTHROUGH';
  if (mode !== 'SIMPLE' && mode !== 'MUTUAL') {
    const how = tls.mode === undefined ? 'tls.mode is not set, which Istio reads as PASSTHROUGH; ' : '';
    c.unsupported([...tlsPath, 'mode'], `${how}tls mode ${mode} is not supported yet; server ignored (use SIMPLE or MUTUAL to terminate TLS)`);
    return;
  }
  for (const k of ['credentialNames', 'tlsCertificates']) {
    if (tls[k] !== undefined) c.unsupported([...tlsPath, k], `${k} is not supported yet; use credentialName or serverCertificate and privateKey`);
  }
  const hasCredential = typeof tls.credentialName === 'string' && tls.credentialName !== '';
  const hasFiles = typeof tls.serverCertificate === 'string' && typeof tls.privateKey === 'string';
  if (!hasCredential && !hasFiles) {
    const half = tls.serverCertificate !== undefined ? 'privateKey' : tls.privateKey !== undefined ? 'serverCertificate' : null;
    c.error('MG_CONFIG_INVALID', tlsPath, half !== null
      ? `tls mode ${mode} with file certificates needs both serverCertificate and privateKey; ${half} is missing`
      : `tls mode ${mode} needs a credentialName, or serverCertificate and privateKey`);
  }
  if (mode === 'MUTUAL' && !hasCredential && typeof tls.caCertificates !== 'string') {
    c.error('MG_CONFIG_INVALID', tlsPath, 'tls mode MUTUAL needs caCertificates (or a credentialName whose Secret has ca.crt) to verify clients');
  }
  const order = ['TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'];
  const min = order.indexOf(String(tls.minProtocolVersion));
  const max = order.indexOf(String(tls.maxProtocolVersion));
  if (min >= 0 && max >= 0 && min > max) {
    c.error('MG_CONFIG_INVALID', [...tlsPath, 'minProtocolVersion'], `minProtocolVersion ${String(tls.minProtocolVersion)} is above maxProtocolVersion ${String(tls.maxProtocolVersion)}`);
  }
}

// ---------------------------------------------------------------- VirtualService

const GATEWAY_REF = /^(?:([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function checkVirtualService(c: Checker, spec: Obj): void {
  const hosts = spec.hosts;
  if (!Array.isArray(hosts) || hosts.length === 0) {
    c.error('MG_CONFIG_HOST', ['spec', 'hosts'], 'a VirtualService needs at least one host (delegate VirtualServices without hosts are not supported yet)');
  } else {
    hosts.forEach((h, i) => {
      if (typeof h !== 'string') return;
      if (h.includes('/')) c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `${quote(h)} is not a host; namespaces belong in gateways, not hosts`);
      else if (!isValidHost(h)) c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `${quote(h)} is not a valid host name`);
    });
  }
  arr(spec.gateways).forEach((g, i) => {
    if (typeof g === 'string' && g.length > 0 && (g.length > 317 || !GATEWAY_REF.test(g))) {
      c.error('MG_CONFIG_INVALID', ['spec', 'gateways', i], `${quote(g)} is not a gateway reference; write name, namespace/name or mesh`);
    }
  });
  c.exportTo(spec);
  if (spec.http === undefined && spec.tcp === undefined && spec.tls === undefined) {
    c.error('MG_CONFIG_INVALID', ['spec'], 'a VirtualService needs http routes (or tcp/tls routes, which meshgate does not support yet)');
  }
  if (spec.tcp !== undefined) c.unsupported(['spec', 'tcp'], 'TCP routes are not supported yet; ignored');
  if (spec.tls !== undefined) c.unsupported(['spec', 'tls'], 'TLS (SNI) routes are not supported yet; ignored');
  arr(spec.http).forEach((rule, i) => {
    if (isObj(rule)) checkHttpRoute(c, rule, ['spec', 'http', i]);
  });
}

function checkHttpRoute(c: Checker, rule: Obj, at: Path): void {
  const actions = (['route', 'redirect', 'directResponse', 'delegate'] as const).filter((k) => rule[k] !== undefined && rule[k] !== null);
  if (actions.length === 0) {
    c.error('MG_CONFIG_INVALID', at, 'a rule needs one of route, redirect, directResponse or delegate');
  } else if (actions.length > 1) {
    c.error('MG_CONFIG_INVALID', at, `set only one of route, redirect, directResponse, delegate; this rule sets ${actions.join(' and ')}`);
  }
  if (Array.isArray(rule.route) && rule.route.length === 0) {
    c.error('MG_CONFIG_INVALID', [...at, 'route'], 'route needs at least one destination');
  }
  if (rule.delegate !== undefined) c.unsupported([...at, 'delegate'], 'delegate is not supported yet; rule ignored');
  if (rule.redirect !== undefined && rule.rewrite !== undefined) {
    c.error('MG_CONFIG_INVALID', [...at, 'rewrite'], 'rewrite cannot be combined with redirect');
  }

  arr(rule.match).forEach((m, j) => {
    if (isObj(m)) checkMatch(c, m, [...at, 'match', j]);
  });

  arr(rule.route).forEach((d, k) => {
    if (!isObj(d)) return;
    const dp: Path = [...at, 'route', k];
    if (isObj(d.destination)) checkDestination(c, d.destination, [...dp, 'destination']);
    if (isInt(d.weight) && (d.weight < 0 || d.weight > 100)) {
      c.error('MG_CONFIG_INVALID', [...dp, 'weight'], `weight ${d.weight} is out of range; it must be between 0 and 100`);
    }
    checkHeaderOps(c, d.headers, [...dp, 'headers']);
  });

  if (isObj(rule.redirect)) {
    const code = rule.redirect.redirectCode;
    if (isInt(code) && ![301, 302, 303, 307, 308].includes(code)) {
      c.error('MG_CONFIG_INVALID', [...at, 'redirect', 'redirectCode'], `redirectCode ${code} is not a redirect status; use 301, 302, 303, 307 or 308`);
    }
    c.port(rule.redirect.port, [...at, 'redirect', 'port']);
  }

  if (isObj(rule.directResponse)) {
    const status = rule.directResponse.status;
    if (isInt(status) && (status < 200 || status > 599)) {
      c.error('MG_CONFIG_INVALID', [...at, 'directResponse', 'status'], `status ${status} is out of range; it must be between 200 and 599`);
    }
    const body = rule.directResponse.body;
    if (isObj(body)) {
      for (const k of ['string', 'bytes']) {
        const v = body[k];
        if (typeof v === 'string' && v.length > MAX_DIRECT_RESPONSE_BODY) {
          c.error('MG_CONFIG_INVALID', [...at, 'directResponse', 'body', k], `body is ${v.length} characters; the limit is ${MAX_DIRECT_RESPONSE_BODY}`);
        }
      }
    }
  }

  if (isObj(rule.rewrite)) {
    const rw = rule.rewrite;
    if (rw.uri !== undefined && rw.uriRegexRewrite !== undefined) {
      c.error('MG_CONFIG_INVALID', [...at, 'rewrite'], 'set only one of rewrite.uri and rewrite.uriRegexRewrite');
    }
    if (isObj(rw.uriRegexRewrite)) c.regex(rw.uriRegexRewrite.match, [...at, 'rewrite', 'uriRegexRewrite', 'match']);
  }

  c.duration(rule, 'timeout', at);

  if (isObj(rule.retries)) {
    const rp: Path = [...at, 'retries'];
    const r = rule.retries;
    if (isInt(r.attempts) && r.attempts < 0) c.error('MG_CONFIG_INVALID', [...rp, 'attempts'], `attempts ${r.attempts} cannot be negative`);
    c.duration(r, 'perTryTimeout', rp);
    if (typeof r.retryOn === 'string') {
      const bad = r.retryOn.split(',').map((x) => x.trim()).filter((p) => {
        if (p === '' || RETRY_ON_POLICIES.has(p)) return false;
        const status = /^\d{3}$/.test(p) ? Number(p) : NaN;
        return !(status >= 100 && status <= 599);
      });
      if (bad.length > 0) {
        c.error('MG_CONFIG_INVALID', [...rp, 'retryOn'], `${bad.map((b) => quote(b)).join(', ')} ${bad.length === 1 ? 'is not a retry policy' : 'are not retry policies'}; use Envoy's names (5xx, gateway-error, reset, connect-failure, retriable-4xx, …) or status codes`);
      }
    }
    if (r.retryRemoteLocalities !== undefined) c.unsupported([...rp, 'retryRemoteLocalities'], 'retryRemoteLocalities is not supported yet; ignored');
  }

  if (isObj(rule.fault)) checkFault(c, rule.fault, [...at, 'fault']);

  if (isObj(rule.mirror)) checkDestination(c, rule.mirror, [...at, 'mirror']);
  arr(rule.mirrors).forEach((m, k) => {
    if (!isObj(m)) return;
    if (isObj(m.destination)) checkDestination(c, m.destination, [...at, 'mirrors', k, 'destination']);
    if (isObj(m.percentage)) c.percent(m.percentage.value, [...at, 'mirrors', k, 'percentage', 'value']);
  });
  if (isObj(rule.mirrorPercentage)) c.percent(rule.mirrorPercentage.value, [...at, 'mirrorPercentage', 'value']);
  if (isInt(rule.mirrorPercent)) c.percent(rule.mirrorPercent, [...at, 'mirrorPercent']);

  if (isObj(rule.corsPolicy)) {
    const cp: Path = [...at, 'corsPolicy'];
    arr(rule.corsPolicy.allowOrigins).forEach((o, k) => c.stringMatch(o, [...cp, 'allowOrigins', k]));
    c.duration(rule.corsPolicy, 'maxAge', cp);
    for (const k of ['allowHeaders', 'exposeHeaders']) {
      arr(rule.corsPolicy[k]).forEach((h, n) => {
        if (typeof h === 'string' && h !== '*') c.headerName(h, [...cp, k, n]);
      });
    }
  }

  checkHeaderOps(c, rule.headers, [...at, 'headers']);
}

function checkMatch(c: Checker, m: Obj, at: Path): void {
  for (const k of ['uri', 'scheme', 'method', 'authority']) c.stringMatch(m[k], [...at, k]);
  for (const k of ['headers', 'withoutHeaders']) {
    if (!isObj(m[k])) continue;
    for (const [name, sm] of Object.entries(m[k])) {
      c.headerName(name, [...at, k, name], true);
      c.stringMatch(sm, [...at, k, name]);
    }
  }
  if (isObj(m.queryParams)) {
    for (const [name, sm] of Object.entries(m.queryParams)) c.stringMatch(sm, [...at, 'queryParams', name]);
  }
  c.port(m.port, [...at, 'port']);
  for (const k of ['sourceLabels', 'sourceNamespace', 'statPrefix']) {
    if (m[k] !== undefined) c.unsupported([...at, k], `match.${k} is not supported yet; ignored, so this match applies to every source`);
  }
}

function checkDestination(c: Checker, d: Obj, at: Path): void {
  c.destinationHost(d.host, [...at, 'host']);
  if (typeof d.subset === 'string' && !isDns1123Label(d.subset)) {
    c.error('MG_CONFIG_INVALID', [...at, 'subset'], `${quote(d.subset)} is not a valid subset name (a DNS label)`);
  }
  if (isObj(d.port)) c.port(d.port.number, [...at, 'port', 'number']);
}

function checkHeaderOps(c: Checker, h: unknown, at: Path): void {
  if (!isObj(h)) return;
  for (const dir of ['request', 'response']) {
    const ops = h[dir];
    if (!isObj(ops)) continue;
    for (const op of ['set', 'add']) {
      const m = ops[op];
      if (!isObj(m)) continue;
      for (const [name, value] of Object.entries(m)) {
        c.headerName(name, [...at, dir, op, name]);
        // CR/LF in a value would let config inject headers or split responses (CVE-2023-27493).
        if (typeof value === 'string' && CONTROL_CHARS.test(value)) {
          c.error('MG_CONFIG_INVALID', [...at, dir, op, name], `the value of ${name} contains a control character (CR, LF, NUL…); header values must be printable text`);
        }
      }
    }
    arr(ops.remove).forEach((name, i) => {
      if (typeof name === 'string') c.headerName(name, [...at, dir, 'remove', i]);
    });
  }
}

function checkFault(c: Checker, f: Obj, at: Path): void {
  if (f.delay === undefined && f.abort === undefined) {
    c.error('MG_CONFIG_INVALID', at, 'fault needs delay or abort');
  }
  if (isObj(f.delay)) {
    const dp: Path = [...at, 'delay'];
    if (f.delay.exponentialDelay !== undefined) c.unsupported([...dp, 'exponentialDelay'], 'exponentialDelay is not supported; use fixedDelay');
    if (f.delay.fixedDelay === undefined) c.error('MG_CONFIG_INVALID', dp, 'delay needs fixedDelay');
    c.duration(f.delay, 'fixedDelay', dp);
    if (isObj(f.delay.percentage)) c.percent(f.delay.percentage.value, [...dp, 'percentage', 'value']);
    c.percent(f.delay.percent, [...dp, 'percent']);
  }
  if (isObj(f.abort)) {
    const ap: Path = [...at, 'abort'];
    const a = f.abort;
    if (a.grpcStatus !== undefined) c.unsupported([...ap, 'grpcStatus'], 'abort.grpcStatus is not supported yet; use httpStatus');
    if (a.http2Error !== undefined) c.unsupported([...ap, 'http2Error'], 'abort.http2Error is not supported yet; use httpStatus');
    if (a.httpStatus === undefined && a.grpcStatus === undefined && a.http2Error === undefined) {
      c.error('MG_CONFIG_INVALID', ap, 'abort needs httpStatus');
    }
    if (isInt(a.httpStatus) && (a.httpStatus < 200 || a.httpStatus > 599)) {
      c.error('MG_CONFIG_INVALID', [...ap, 'httpStatus'], `httpStatus ${a.httpStatus} is out of range; it must be between 200 and 599`);
    }
    if (isObj(a.percentage)) c.percent(a.percentage.value, [...ap, 'percentage', 'value']);
  }
}

// ---------------------------------------------------------------- DestinationRule

function checkDestinationRule(c: Checker, spec: Obj): void {
  if (typeof spec.host === 'string') {
    if (spec.host === '*' || !isValidHost(spec.host)) c.error('MG_CONFIG_HOST', ['spec', 'host'], `${quote(spec.host)} is not a valid host name`);
  }
  c.exportTo(spec);
  if (spec.workloadSelector !== undefined) c.unsupported(['spec', 'workloadSelector'], 'workloadSelector is not supported yet; the rule applies to every proxy');
  if (isObj(spec.trafficPolicy)) checkTrafficPolicy(c, spec.trafficPolicy, ['spec', 'trafficPolicy'], true);
  const seen = new Map<string, number>();
  arr(spec.subsets).forEach((s, i) => {
    if (!isObj(s)) return;
    const at: Path = ['spec', 'subsets', i];
    if (typeof s.name === 'string') {
      if (!isDns1123Label(s.name)) c.error('MG_CONFIG_INVALID', [...at, 'name'], `${quote(s.name)} is not a valid subset name (lower-case letters, digits and '-', at most 63 characters)`);
      const first = seen.get(s.name);
      if (first !== undefined) c.error('MG_CONFIG_INVALID', [...at, 'name'], `subset ${quote(s.name)} is already defined at spec.subsets[${first}]`);
      else seen.set(s.name, i);
    }
    c.labels(s.labels, [...at, 'labels']);
    if (isObj(s.trafficPolicy)) checkTrafficPolicy(c, s.trafficPolicy, [...at, 'trafficPolicy'], true);
  });
}

function checkTrafficPolicy(c: Checker, tp: Obj, at: Path, allowPortLevel: boolean): void {
  if (isObj(tp.loadBalancer)) checkLoadBalancer(c, tp.loadBalancer, [...at, 'loadBalancer']);
  if (isObj(tp.connectionPool)) {
    const cp = tp.connectionPool;
    if (isObj(cp.tcp)) {
      for (const k of ['tcpKeepalive', 'maxConnectionDuration']) {
        if (cp.tcp[k] !== undefined) c.unsupported([...at, 'connectionPool', 'tcp', k], `${k} is not supported yet; ignored`);
      }
      c.duration(cp.tcp, 'connectTimeout', [...at, 'connectionPool', 'tcp']);
      c.duration(cp.tcp, 'idleTimeout', [...at, 'connectionPool', 'tcp']);
    }
    if (isObj(cp.http)) {
      for (const k of ['h2UpgradePolicy', 'useClientProtocol']) {
        if (cp.http[k] !== undefined) c.unsupported([...at, 'connectionPool', 'http', k], `${k} is not supported yet; ignored`);
      }
      c.duration(cp.http, 'idleTimeout', [...at, 'connectionPool', 'http']);
    }
  }
  if (isObj(tp.outlierDetection)) {
    const od = tp.outlierDetection;
    const op: Path = [...at, 'outlierDetection'];
    c.percent(od.maxEjectionPercent, [...op, 'maxEjectionPercent']);
    c.percent(od.minHealthPercent, [...op, 'minHealthPercent']);
    c.duration(od, 'interval', op);
    c.duration(od, 'baseEjectionTime', op);
  }
  if (isObj(tp.tls)) checkClientTls(c, tp.tls, [...at, 'tls']);
  if (tp.proxyProtocol !== undefined) c.unsupported([...at, 'proxyProtocol'], 'proxyProtocol is not supported yet; ignored');
  if (tp.tunnel !== undefined) c.unsupported([...at, 'tunnel'], 'tunnel is not supported yet; ignored');
  if (Array.isArray(tp.portLevelSettings)) {
    if (!allowPortLevel) return;
    tp.portLevelSettings.forEach((pl, i) => {
      if (!isObj(pl)) return;
      const pp: Path = [...at, 'portLevelSettings', i];
      if (!isObj(pl.port) || pl.port.number === undefined) c.error('MG_CONFIG_INVALID', [...pp, 'port'], 'portLevelSettings needs port.number');
      else c.port(pl.port.number, [...pp, 'port', 'number']);
      checkTrafficPolicy(c, pl, pp, false);
    });
  }
}

function checkLoadBalancer(c: Checker, lb: Obj, at: Path): void {
  if (lb.simple !== undefined && lb.consistentHash !== undefined) {
    c.error('MG_CONFIG_INVALID', at, 'set only one of simple and consistentHash');
  }
  if (isObj(lb.consistentHash)) {
    const keys = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'].filter((k) => isObj(lb.consistentHash) && lb.consistentHash[k] !== undefined);
    if (keys.length === 0) c.error('MG_CONFIG_INVALID', [...at, 'consistentHash'], 'consistentHash needs one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName');
    else if (keys.length > 1) c.error('MG_CONFIG_INVALID', [...at, 'consistentHash'], `set only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName; found ${keys.join(' and ')}`);
    if (typeof lb.consistentHash.httpHeaderName === 'string') c.headerName(lb.consistentHash.httpHeaderName, [...at, 'consistentHash', 'httpHeaderName']);
    if (isObj(lb.consistentHash.httpCookie)) c.duration(lb.consistentHash.httpCookie, 'ttl', [...at, 'consistentHash', 'httpCookie']);
  }
  if (lb.localityLbSetting !== undefined) c.unsupported([...at, 'localityLbSetting'], 'localityLbSetting is not supported yet; ignored');
  if (lb.warmupDurationSecs !== undefined) c.unsupported([...at, 'warmupDurationSecs'], 'warmupDurationSecs is not supported yet; ignored');
  if (lb.warmup !== undefined) c.unsupported([...at, 'warmup'], 'warmup is not supported yet; ignored');
}

function checkClientTls(c: Checker, tls: Obj, at: Path): void {
  c.subjectAltNames(tls.subjectAltNames, [...at, 'subjectAltNames']);
  const mode = tls.mode;
  if (mode === 'ISTIO_MUTUAL') {
    c.unsupported([...at, 'mode'], 'tls mode ISTIO_MUTUAL is not supported yet; connections use plain text');
  } else if (mode === 'MUTUAL') {
    const hasCredential = typeof tls.credentialName === 'string' && tls.credentialName !== '';
    if (!hasCredential && (typeof tls.clientCertificate !== 'string' || typeof tls.privateKey !== 'string')) {
      c.error('MG_CONFIG_INVALID', at, 'tls mode MUTUAL needs clientCertificate and privateKey, or a credentialName');
    }
  }
}

// ---------------------------------------------------------------- ServiceEntry

function checkServiceEntry(c: Checker, spec: Obj): void {
  const hosts = spec.hosts;
  const resolution = typeof spec.resolution === 'string' ? spec.resolution : 'NONE';
  if (!Array.isArray(hosts) || hosts.length === 0) {
    c.error('MG_CONFIG_HOST', ['spec', 'hosts'], 'a ServiceEntry needs at least one host');
  } else {
    hosts.forEach((h, i) => {
      if (typeof h !== 'string') return;
      if (h === '*') c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], 'a host cannot be "*" alone here; name the hosts');
      else if (h.includes('://')) {
        const bare = h.slice(h.indexOf('://') + 3).split(/[/:]/)[0];
        c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `${quote(h)} has a scheme; write the bare host name ${quote(bare)} and put the port in spec.ports`);
      } else if (!isValidHost(h)) c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `${quote(h)} is not a valid host name`);
      else if (h.startsWith('*') && resolution === 'DNS' && !Array.isArray(spec.endpoints)) {
        c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `wildcard host ${quote(h)} cannot be resolved by DNS; list endpoints or use resolution NONE`);
      }
    });
  }
  c.exportTo(spec);
  c.subjectAltNames(spec.subjectAltNames, ['spec', 'subjectAltNames']);
  if (spec.addresses !== undefined) c.unsupported(['spec', 'addresses'], 'addresses are used only by the egress allowlist (TCP by destination address); routing matches by host name only');
  if (spec.workloadSelector !== undefined) {
    c.unsupported(['spec', 'workloadSelector'], 'workloadSelector is not supported yet; ignored');
    if (spec.endpoints !== undefined) c.error('MG_CONFIG_INVALID', ['spec', 'endpoints'], 'set only one of workloadSelector and endpoints');
  }
  if (resolution === 'NONE') {
    // Istio: the destination was already resolved. A gateway connects to the host itself
    // (named hosts), and the egress allowlist decides on what the client asked for.
    if (spec.endpoints !== undefined) c.error('MG_CONFIG_INVALID', ['spec', 'endpoints'], 'resolution NONE cannot have endpoints; use STATIC or DNS');
  } else if (resolution === 'DNS_ROUND_ROBIN') {
    c.unsupported(['spec', 'resolution'], 'resolution DNS_ROUND_ROBIN is not supported yet; treated as DNS');
    if (arr(spec.endpoints).length > 1) c.error('MG_CONFIG_INVALID', ['spec', 'endpoints'], 'resolution DNS_ROUND_ROBIN allows at most one endpoint');
  }
  if (resolution !== 'NONE' && resolution !== 'STATIC') {
    arr(spec.addresses).forEach((a, i) => {
      if (typeof a === 'string' && a.includes('/')) c.error('MG_CONFIG_INVALID', ['spec', 'addresses', i], `CIDR address ${quote(a)} is allowed only with resolution NONE or STATIC`);
    });
  }

  const portNames = new Map<string, number>();
  const portNumbers = new Map<number, number>();
  arr(spec.ports).forEach((p, i) => {
    if (!isObj(p)) return;
    const at: Path = ['spec', 'ports', i];
    if (isInt(p.number)) {
      const first = portNumbers.get(p.number);
      if (first !== undefined) c.error('MG_CONFIG_INVALID', [...at, 'number'], `port ${p.number} is already declared at spec.ports[${first}]`);
      else portNumbers.set(p.number, i);
    }
    c.port(p.targetPort, [...at, 'targetPort']);
    if (typeof p.name === 'string') {
      const first = portNames.get(p.name);
      if (first !== undefined) c.error('MG_CONFIG_INVALID', [...at, 'name'], `port name ${quote(p.name)} is already used at spec.ports[${first}]`);
      else portNames.set(p.name, i);
    }
    if (typeof p.protocol === 'string' && !ISTIO_PROTOCOLS.has(p.protocol.toUpperCase())) {
      c.error('MG_CONFIG_INVALID', [...at, 'protocol'], `unknown protocol ${quote(p.protocol)}; use one of ${[...ISTIO_PROTOCOLS].join(', ')}`);
    }
  });

  if (resolution === 'STATIC' && arr(spec.endpoints).length === 0 && spec.workloadSelector === undefined) {
    c.error('MG_CONFIG_INVALID', ['spec', 'endpoints'], 'resolution STATIC needs endpoints with IP addresses');
  }
  arr(spec.endpoints).forEach((e, i) => {
    if (isObj(e)) checkEndpoint(c, e, ['spec', 'endpoints', i], resolution, portNames);
  });
}

function checkEndpoint(c: Checker, e: Obj, at: Path, resolution: string, portNames: ReadonlyMap<string, number>): void {
  const address = e.address;
  if (address === undefined && e.network === undefined) {
    c.error('MG_CONFIG_INVALID', [...at, 'address'], 'an endpoint needs an address');
  }
  if (typeof address === 'string') {
    if (address.startsWith('unix://')) {
      c.unsupported([...at, 'address'], 'unix domain socket endpoints are not supported yet; endpoint ignored');
      if (e.ports !== undefined) c.error('MG_CONFIG_INVALID', [...at, 'ports'], 'a unix domain socket endpoint cannot have ports');
    } else if (resolution === 'STATIC') {
      if (isIP(address) === 0) c.error('MG_CONFIG_INVALID', [...at, 'address'], `${quote(address)} is not an IP address; resolution STATIC needs IPs (use resolution DNS for host names)`);
    } else if (isIP(address) === 0 && (address.startsWith('*') || !isValidHost(address))) {
      c.error('MG_CONFIG_HOST', [...at, 'address'], `${quote(address)} is neither an IP address nor a host name`);
    }
  }
  if (isObj(e.ports)) {
    for (const [name, n] of Object.entries(e.ports)) {
      if (!portNames.has(name)) {
        c.error('MG_CONFIG_INVALID', [...at, 'ports', name], `port name ${quote(name)} is not declared in spec.ports${portNames.size > 0 ? ` (declared: ${[...portNames.keys()].join(', ')})` : ''}`);
      }
      c.port(n, [...at, 'ports', name]);
    }
  }
  c.labels(e.labels, [...at, 'labels']);
  if (e.network !== undefined) c.unsupported([...at, 'network'], 'endpoint network is not supported yet; ignored');
  if (e.locality !== undefined) c.unsupported([...at, 'locality'], 'endpoint locality is not supported yet; ignored');
}

// ---------------------------------------------------------------- Secret

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function checkSecret(c: Checker, body: Obj): void {
  const type = body.type === undefined ? 'Opaque' : body.type;
  if (type !== 'kubernetes.io/tls') {
    c.warn('MG_CONFIG_IGNORED_KIND', ['spec', 'type'], `Secret type ${quote(String(type))} is not read; only kubernetes.io/tls Secrets (tls.crt, tls.key, optional ca.crt) are used; ignored`);
    return;
  }
  // Kubernetes merges stringData over data; do the same to see the effective value.
  const values = new Map<string, { text: string; path: Path }>();
  for (const field of ['data', 'stringData'] as const) {
    const m = body[field];
    if (m === undefined || m === null) continue;
    if (!isObj(m)) {
      c.error('MG_CONFIG_SCHEMA', ['spec', field], 'must be a mapping of key to value');
      continue;
    }
    for (const [k, v] of Object.entries(m)) {
      const path: Path = ['spec', field, k];
      if (typeof v !== 'string') {
        c.error('MG_CONFIG_SCHEMA', path, 'must be a string');
        continue;
      }
      if (field === 'data') {
        const compact = v.replace(/\s+/g, '');
        if (!BASE64.test(compact)) {
          c.error('MG_CONFIG_INVALID', path, `${k} is not base64; values under data must be base64 (put plain PEM under stringData)`);
          continue;
        }
        values.set(k, { text: Buffer.from(compact, 'base64').toString('utf8'), path });
      } else {
        values.set(k, { text: v, path });
      }
    }
  }
  const crt = values.get('tls.crt');
  const key = values.get('tls.key');
  const given = (k: string): boolean => [body.data, body.stringData].some((m) => isObj(m) && m[k] !== undefined);
  if (crt === undefined && !given('tls.crt')) c.error('MG_CONFIG_INVALID', ['spec', 'data', 'tls.crt'], 'a kubernetes.io/tls Secret needs tls.crt');
  if (key === undefined && !given('tls.key')) c.error('MG_CONFIG_INVALID', ['spec', 'data', 'tls.key'], 'a kubernetes.io/tls Secret needs tls.key');
  const leaf = crt !== undefined ? parseCertificates(c, crt.text, crt.path, 'tls.crt') : null;
  let privateKey: KeyObject | null = null;
  if (key !== undefined) {
    try {
      privateKey = createPrivateKey(key.text);
    } catch (e) {
      c.error('MG_CONFIG_INVALID', key.path, `tls.key is not a PEM private key: ${(e as Error).message}`);
    }
  }
  if (leaf !== null && privateKey !== null && !leaf.checkPrivateKey(privateKey)) {
    c.error('MG_CONFIG_INVALID', key!.path, 'tls.key does not match the certificate in tls.crt');
  }
  const ca = values.get('ca.crt');
  if (ca !== undefined) parseCertificates(c, ca.text, ca.path, 'ca.crt');
}

/** Parses every certificate of a PEM bundle; returns the first (the leaf), or null after reporting. */
function parseCertificates(c: Checker, pem: string, path: Path, what: string): X509Certificate | null {
  const blocks = pem.match(PEM_CERT);
  if (blocks === null) {
    c.error('MG_CONFIG_INVALID', path, `${what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    return null;
  }
  let first: X509Certificate | null = null;
  for (let i = 0; i < blocks.length; i++) {
    try {
      const cert = new X509Certificate(blocks[i]);
      first ??= cert;
    } catch (e) {
      c.error('MG_CONFIG_INVALID', path, `certificate ${i + 1} in ${what} does not parse: ${(e as Error).message}`);
      return null;
    }
  }
  return first;
}

// ---------------------------------------------------------------- security.istio.io

/** `request.auth.claims[a]`, `request.auth.claims[a][b]`…: claim names in brackets, nothing after. */
const CLAIM_KEY = /^request\.auth\.claims(\[[^\[\]]+\])+$/;
const HEADER_KEY = /^request\.headers\[[!#$%&'*+.^_`|~0-9A-Za-z-]+\]$/;
const PLAIN_KEYS = new Set([
  'source.ip', 'remote.ip', 'source.namespace', 'source.principal', 'request.auth.principal',
  'request.auth.audiences', 'request.auth.presenter', 'destination.ip', 'destination.port', 'connection.sni',
]);
const EXPERIMENTAL_KEYS = /^experimental\.envoy\.filters\./;

/** True for an IP or a CIDR block (v4 or v6) with a prefix length in range. */
export function isIpOrCidr(v: string): boolean {
  const slash = v.indexOf('/');
  const ip = slash < 0 ? v : v.slice(0, slash);
  const family = isIP(ip);
  if (family === 0) return false;
  if (slash < 0) return true;
  const bits = v.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

function checkPolicyBinding(c: Checker, spec: Obj): void {
  const refs = [...(isObj(spec.targetRef) ? [{ ref: spec.targetRef, path: ['spec', 'targetRef'] as Path }] : []),
    ...arr(spec.targetRefs).map((ref, i) => ({ ref, path: ['spec', 'targetRefs', i] as Path }))];
  if (refs.length > 0 && isObj(spec.selector)) c.error('MG_CONFIG_INVALID', ['spec', 'selector'], 'set only one of selector and targetRef(s)');
  for (const { ref, path } of refs) {
    if (!isObj(ref)) continue;
    if (ref.kind !== 'Gateway') c.unsupported([...path, 'kind'], `targetRef kind ${quote(String(ref.kind))} is not supported; only kind Gateway (an Istio Gateway resource, whose selected proxies the policy applies to)`);
  }
}

function checkRequestAuthentication(c: Checker, spec: Obj): void {
  checkPolicyBinding(c, spec);
  const issuers = new Map<string, number>();
  arr(spec.jwtRules).forEach((rule, i) => {
    if (!isObj(rule)) return;
    const at: Path = ['spec', 'jwtRules', i];
    if (typeof rule.issuer === 'string') {
      if (rule.issuer === '') c.error('MG_CONFIG_INVALID', [...at, 'issuer'], 'issuer must not be empty');
      const prev = issuers.get(rule.issuer);
      if (prev !== undefined) c.error('MG_CONFIG_INVALID', [...at, 'issuer'], `issuer ${quote(rule.issuer)} is already used by jwtRules[${prev}]; one rule per issuer`);
      else issuers.set(rule.issuer, i);
    }
    const hasUri = typeof rule.jwksUri === 'string' && rule.jwksUri !== '';
    const hasJwks = typeof rule.jwks === 'string' && rule.jwks !== '';
    if (hasUri && hasJwks) c.error('MG_CONFIG_INVALID', [...at, 'jwks'], 'set only one of jwksUri and jwks');
    if (!hasUri && !hasJwks) c.error('MG_CONFIG_INVALID', at, 'set jwksUri or jwks: meshgate never guesses keys (no OpenID discovery from the issuer)');
    if (hasUri) {
      let u: URL | null = null;
      try { u = new URL(String(rule.jwksUri)); } catch { /* reported below */ }
      if (u === null || (u.protocol !== 'https:' && u.protocol !== 'http:')) c.error('MG_CONFIG_INVALID', [...at, 'jwksUri'], `${quote(String(rule.jwksUri))} is not an http(s) URL`);
      else if (u.username || u.password) c.error('MG_CONFIG_INVALID', [...at, 'jwksUri'], 'jwksUri must not carry credentials');
    }
    if (hasJwks) {
      let keys: unknown = null;
      try { keys = (JSON.parse(String(rule.jwks)) as Obj).keys; } catch { /* reported below */ }
      if (!Array.isArray(keys) || keys.length === 0) c.error('MG_CONFIG_INVALID', [...at, 'jwks'], 'jwks must be a JSON Web Key Set: {"keys": [...]} with at least one key');
    }
    c.duration(rule, 'timeout', at);
    arr(rule.fromHeaders).forEach((h, j) => {
      if (isObj(h) && typeof h.name === 'string' && !HEADER_TOKEN.test(h.name)) c.error('MG_CONFIG_INVALID', [...at, 'fromHeaders', j, 'name'], `${quote(h.name)} is not a valid header name`);
    });
    for (const key of ['outputPayloadToHeader'] as const) {
      const v = rule[key];
      if (typeof v === 'string' && !HEADER_TOKEN.test(v)) c.error('MG_CONFIG_INVALID', [...at, key], `${quote(v)} is not a valid header name`);
    }
    arr(rule.outputClaimToHeaders).forEach((h, j) => {
      if (!isObj(h)) return;
      if (typeof h.header === 'string' && !HEADER_TOKEN.test(h.header)) c.error('MG_CONFIG_INVALID', [...at, 'outputClaimToHeaders', j, 'header'], `${quote(h.header)} is not a valid header name`);
    });
  });
}

function checkAuthorizationPolicy(c: Checker, spec: Obj): void {
  checkPolicyBinding(c, spec);
  const action = typeof spec.action === 'string' ? spec.action : 'ALLOW';
  if (action === 'CUSTOM') c.unsupported(['spec', 'action'], 'action CUSTOM (external authorization) is not supported yet; this policy is ignored');
  if (spec.provider !== undefined && action !== 'CUSTOM') c.error('MG_CONFIG_INVALID', ['spec', 'provider'], 'provider is only for action CUSTOM');
  arr(spec.rules).forEach((rule, i) => {
    if (!isObj(rule)) return;
    const at: Path = ['spec', 'rules', i];
    arr(rule.from).forEach((f, j) => {
      const src = isObj(f) ? f.source : undefined;
      if (!isObj(src)) return;
      for (const field of ['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks']) {
        arr(src[field]).forEach((v, k) => {
          if (typeof v === 'string' && !isIpOrCidr(v)) c.error('MG_CONFIG_INVALID', [...at, 'from', j, 'source', field, k], `${quote(v)} is not an IP address or CIDR block`);
        });
      }
    });
    arr(rule.to).forEach((t, j) => {
      const op = isObj(t) ? t.operation : undefined;
      if (!isObj(op)) return;
      for (const field of ['ports', 'notPorts']) {
        arr(op[field]).forEach((v, k) => {
          if (typeof v === 'string' && !/^\d{1,5}$/.test(v)) c.error('MG_CONFIG_INVALID', [...at, 'to', j, 'operation', field, k], `${quote(v)} is not a port number`);
        });
      }
      for (const field of ['paths', 'notPaths']) {
        arr(op[field]).forEach((v, k) => {
          if (typeof v !== 'string') return;
          const tmpl = v.includes('{');
          if (tmpl && !/^(\/([^{}/]*|\{\*\}))*(\/\{\*\*\})?$/.test(v)) {
            c.error('MG_CONFIG_INVALID', [...at, 'to', j, 'operation', field, k], `${quote(v)} is not a valid path template: {*} matches one whole segment, {**} only at the end`);
          }
        });
      }
    });
    arr(rule.when).forEach((w, j) => {
      if (!isObj(w) || typeof w.key !== 'string') return;
      const key = w.key;
      if (!(PLAIN_KEYS.has(key) || CLAIM_KEY.test(key) || HEADER_KEY.test(key))) {
        const hint = key.startsWith('request.auth.claims') ? ' (claims are written request.auth.claims[name] or request.auth.claims[a][b])'
          : EXPERIMENTAL_KEYS.test(key) ? ' (experimental Envoy keys are not supported)' : '';
        c.error('MG_CONFIG_INVALID', [...at, 'when', j, 'key'], `unknown condition key ${quote(key)}${hint}`);
      }
      if (w.values === undefined && w.notValues === undefined) c.error('MG_CONFIG_INVALID', [...at, 'when', j], 'a condition needs values or notValues');
      if (key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip') {
        for (const field of ['values', 'notValues']) {
          arr(w[field]).forEach((v, k) => {
            if (typeof v === 'string' && !isIpOrCidr(v)) c.error('MG_CONFIG_INVALID', [...at, 'when', j, field, k], `${quote(v)} is not an IP address or CIDR block`);
          });
        }
      }
    });
  });
}

// ---------------------------------------------------------------- meshgate.io RateLimitPolicy

const KEY_PART_NAMES: readonly string[] = ['remoteAddress', 'path', 'method', 'host'];
const KEY_PART_FIELDS: readonly string[] = ['header', 'claim'];
const WHEN_FIELDS: readonly string[] = ['claim', 'header', 'path', 'method', 'host', 'remoteAddress'];
/** Header and claim names are not bounded by the schema (key parts are free-form there). */
const MAX_PART_NAME = 256;
/** Rule names go into Redis keys (`…:<rule>:…`), metric labels and logs: no `:`, spaces or controls. */
const RULE_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const FULL_ROUTE_NAME = /^virtualservice\/[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/http\/\d{1,5}$/;

function checkRateLimitPolicy(c: Checker, spec: Obj): void {
  checkPolicyBinding(c, spec);
  const bound = spec.selector !== undefined || spec.targetRef !== undefined || arr(spec.targetRefs).length > 0;
  // Without either, a policy outside the root namespace would silently cover every gateway
  // of its namespace (and in istio-system, every gateway): say which gateways you mean.
  if (!bound) c.error('MG_CONFIG_INVALID', ['spec', 'selector'], 'a RateLimitPolicy needs a selector (gateway labels, e.g. istio: ingressgateway) or a targetRef naming a Gateway');
  c.labels(spec.selector, ['spec', 'selector']);

  arr(spec.hosts).forEach((h, i) => {
    if (typeof h !== 'string') return;
    if (h.includes('/')) c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `${quote(h)}: hosts here are request hosts (exact or *.suffix), not ns/host`);
    else if (!isValidHost(h)) c.error('MG_CONFIG_HOST', ['spec', 'hosts', i], `${quote(h)} is not a valid host name (exact name or *.suffix)`);
  });
  arr(spec.routes).forEach((r, i) => {
    if (typeof r !== 'string') return;
    const at: Path = ['spec', 'routes', i];
    if (r.trim() === '' || CONTROL_CHARS.test(r) || r.includes('\t')) c.error('MG_CONFIG_INVALID', at, 'a route name must be non-empty printable text');
    else if (/^virtualservice\//i.test(r) && !FULL_ROUTE_NAME.test(r.toLowerCase())) {
      c.error('MG_CONFIG_INVALID', at, `${quote(r)} is not a route's full name; write virtualservice/<namespace>/<name>/http/<index>, or the route's own name`);
    }
  });

  const names = new Map<string, number>();
  arr(spec.rules).forEach((rule, i) => {
    if (!isObj(rule)) return;
    const at: Path = ['spec', 'rules', i];
    if (typeof rule.name === 'string') {
      if (!RULE_NAME.test(rule.name)) {
        c.error('MG_CONFIG_INVALID', [...at, 'name'], `${quote(rule.name)} is not a valid rule name (letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters)`);
      }
      const prev = names.get(rule.name);
      if (prev !== undefined) c.error('MG_CONFIG_INVALID', [...at, 'name'], `rule name ${quote(rule.name)} is already used by rules[${prev}]; names must be unique in a policy (they name the counters)`);
      else names.set(rule.name, i);
    }
    checkRateLimitAmount(c, rule.limit, [...at, 'limit']);
    arr(rule.key).forEach((part, j) => checkKeyPart(c, part, [...at, 'key', j]));
    // An override may test a part the rule's key does not use (docs/ratelimit.md: key by
    // `sub`, override for `plan: gold`): the override picks the limit, the key still picks
    // the counter, so both halves are meaningful on their own.
    arr(rule.overrides).forEach((o, j) => {
      if (!isObj(o)) return;
      checkWhen(c, o.when, [...at, 'overrides', j, 'when']);
      checkRateLimitAmount(c, o.limit, [...at, 'overrides', j, 'limit']);
    });
  });
}

function checkRateLimitAmount(c: Checker, v: unknown, path: Path): void {
  if (!isObj(v)) return;
  // Types, units and ranges are the schema's; what remains is a combination it cannot see.
  if (v.requests === 0 && isInt(v.burst) && v.burst > 0) c.warn('MG_CONFIG_INVALID', [...path, 'burst'], 'burst has no effect when requests is 0: the limit refuses every request');
}

function checkKeyPart(c: Checker, part: unknown, path: Path): void {
  if (typeof part === 'string') {
    if (KEY_PART_NAMES.includes(part)) return;
    const hint = suggest(part, [...KEY_PART_NAMES, ...KEY_PART_FIELDS]);
    c.error('MG_CONFIG_INVALID', path, `unknown key part ${quote(part)}${hint !== null ? `; did you mean ${quote(hint)}?` : ''} (use ${KEY_PART_NAMES.join(', ')}, {header: NAME} or {claim: NAME})`);
    return;
  }
  if (!isObj(part)) {
    c.error('MG_CONFIG_SCHEMA', path, `must be one of ${KEY_PART_NAMES.join(', ')}, or a mapping {header: NAME} or {claim: NAME}`);
    return;
  }
  const fields = Object.keys(part);
  if (fields.length !== 1) {
    c.error('MG_CONFIG_INVALID', path, `a key part names one header or one claim ({header: NAME} or {claim: NAME}); this one has ${fields.length === 0 ? 'none' : fields.join(', ')}`);
  }
  for (const f of fields) {
    if (!KEY_PART_FIELDS.includes(f)) {
      const hint = suggest(f, [...KEY_PART_FIELDS, ...KEY_PART_NAMES]);
      c.error('MG_CONFIG_INVALID', [...path, f], `unknown key part ${quote(f)}${hint !== null ? `; did you mean ${quote(hint)}?` : ''} (a mapping key part is {header: NAME} or {claim: NAME})`);
      continue;
    }
    partName(c, f, part[f], [...path, f]);
  }
}

/** The NAME of a `{header: NAME}` / `{claim: NAME}`, or of a `when.header` / `when.claim` entry. */
function partName(c: Checker, kind: string, name: unknown, path: Path): void {
  if (typeof name !== 'string') {
    c.error('MG_CONFIG_SCHEMA', path, `must be a ${kind} name (a string)`);
    return;
  }
  if (name.length > MAX_PART_NAME) c.error('MG_CONFIG_INVALID', path, `${kind} name is ${name.length} characters long; the limit is ${MAX_PART_NAME}`);
  else if (kind === 'header') c.headerName(name, path);
  else if (name === '' || CONTROL_CHARS.test(name)) c.error('MG_CONFIG_INVALID', path, 'a claim name must be non-empty printable text');
}

/** A path the data plane's normalisation would rewrite can never equal a request's path. */
function pathNeverMatches(p: string): string | null {
  if (!p.startsWith('/')) return 'must start with /';
  if (p.includes('?') || p.includes('#')) return 'is compared without query or fragment, so a ? or # can never match';
  if (p.includes('\0') || /%00/.test(p)) return 'contains a NUL byte; such requests are refused';
  if (/\/\/|\/\.\.?(\/|$)/.test(p)) return 'is compared after normalisation (no // or . or .. segments), so this can never match';
  if (/%2e|%2f|%5c/i.test(p)) return 'is compared after normalisation, which decodes %2E, %2F and %5C; write the decoded path';
  return null;
}

function checkWhen(c: Checker, when: unknown, path: Path): void {
  if (!isObj(when)) return;
  const present = WHEN_FIELDS.filter((f) => when[f] !== undefined && when[f] !== null);
  if (present.length === 0) {
    c.error('MG_CONFIG_INVALID', path, 'an override needs at least one condition; one without would always apply (change the rule\'s limit instead)');
    return;
  }
  for (const f of ['claim', 'header'] as const) {
    const m = when[f];
    if (!isObj(m)) continue;
    const entries = Object.entries(m);
    if (entries.length === 0) c.error('MG_CONFIG_INVALID', [...path, f], `name at least one ${f}: {${f}: {NAME: VALUE}}`);
    for (const [name, value] of entries) {
      partName(c, f, name, [...path, f, name]);
      if (typeof value === 'string' && CONTROL_CHARS.test(value)) c.error('MG_CONFIG_INVALID', [...path, f, name], `a ${f} value cannot contain control characters`);
    }
  }
  const v = (f: string): string | null => (typeof when[f] === 'string' ? when[f] : null);
  const p = v('path');
  if (p !== null) {
    const why = pathNeverMatches(p);
    if (why !== null) c.error('MG_CONFIG_INVALID', [...path, 'path'], `${quote(p)} ${why}`);
  }
  const method = v('method');
  if (method !== null && !HEADER_TOKEN.test(method)) c.error('MG_CONFIG_INVALID', [...path, 'method'], `${quote(method)} is not an HTTP method`);
  const host = v('host');
  if (host !== null) {
    if (host.includes('*')) c.error('MG_CONFIG_HOST', [...path, 'host'], `${quote(host)}: an override compares the host exactly; wildcards belong in spec.hosts`);
    else if (!isValidHost(host)) c.error('MG_CONFIG_HOST', [...path, 'host'], `${quote(host)} is not a valid host name`);
  }
  const addr = v('remoteAddress');
  if (addr !== null && isIP(addr) === 0) {
    c.error('MG_CONFIG_INVALID', [...path, 'remoteAddress'], `${quote(addr)} is not an IP address${addr.includes('/') ? ' (CIDR blocks are not supported here; the address is compared exactly)' : ''}`);
  }
}

// ---------------------------------------------------------------- entry points

const SEMANTIC: Readonly<Record<string, (c: Checker, spec: Obj) => void>> = {
  Gateway: checkGateway,
  VirtualService: checkVirtualService,
  DestinationRule: checkDestinationRule,
  ServiceEntry: checkServiceEntry,
  Secret: checkSecret,
  RequestAuthentication: checkRequestAuthentication,
  AuthorizationPolicy: checkAuthorizationPolicy,
  RateLimitPolicy: checkRateLimitPolicy,
};

/** Every problem of one resource: type and name, schema, then the kind's semantic rules. */
export function validateResource(r: Resource): Problem[] {
  const c = new Checker(r);
  if (!checkTypeAndMeta(c)) return c.out;
  if (r.kind !== 'Secret') {
    const issues = validateSpecSchema(r.kind, r.apiVersion, r.spec);
    if (issues === null) {
      c.error('MG_CONFIG_BAD_API_VERSION', ['apiVersion'], `no schema for ${r.kind} ${r.apiVersion} in the CRD files`);
      return c.out;
    }
    for (const i of issues) c.issue(i);
  }
  if (isObj(r.spec)) SEMANTIC[r.kind]?.(c, r.spec);
  return dedupe(c.out);
}

/** Schema CEL rules and semantic checks can see the same fault; say it once. */
function dedupe(ps: Problem[]): Problem[] {
  if (ps.length < 2) return ps;
  const seen = new Set<string>();
  return ps.filter((p) => {
    const k = `${p.code}\u0000${p.field ?? ''}\u0000${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * Validates a whole set in load order. Resources with an error are dropped; warnings keep
 * them. When two documents define the same kind/namespace/name the first one is kept and
 * every later one is dropped with MG_CONFIG_DUPLICATE naming both places.
 */
export function validateResources(resources: readonly Resource[]): { accepted: Resource[]; problems: Problem[] } {
  const accepted: Resource[] = [];
  const problems: Problem[] = [];
  const firstSeen = new Map<string, Resource>();
  for (const r of resources) {
    const ps = validateResource(r);
    const key = resourceKey(String(r.kind), String(r.metadata?.namespace), String(r.metadata?.name));
    const first = firstSeen.get(key);
    if (first !== undefined) {
      const pos = positionOf(r, ['metadata', 'name']);
      ps.push({
        code: 'MG_CONFIG_DUPLICATE', severity: 'error', file: r.source?.file, line: pos?.line ?? r.source?.line,
        ...(pos ? { column: pos.column } : {}), resource: key, field: 'metadata.name',
        message: `${key} is already defined in ${first.source.file}:${first.source.line}; this definition in ${r.source.file}:${r.source.line} is ignored`,
      });
    } else {
      firstSeen.set(key, r);
    }
    problems.push(...ps);
    if (!ps.some((p) => p.severity === 'error')) accepted.push(r);
  }
  return { accepted, problems };
}

function compareResources(a: Resource, b: Resource): number {
  const ta = String(a.metadata.creationTimestamp ?? '');
  const tb = String(b.metadata.creationTimestamp ?? '');
  if (ta !== tb) return ta < tb ? -1 : 1;
  if (a.metadata.namespace !== b.metadata.namespace) return a.metadata.namespace < b.metadata.namespace ? -1 : 1;
  if (a.metadata.name !== b.metadata.name) return a.metadata.name < b.metadata.name ? -1 : 1;
  return 0;
}

/**
 * Groups accepted resources by kind, each list sorted by (creationTimestamp, namespace,
 * name): Istio's precedence for conflicting config is oldest first, and a fixed order
 * keeps translation deterministic whatever order files were read in.
 */
export function toSnapshot(accepted: readonly Resource[]): ConfigSnapshot {
  const snap: ConfigSnapshot = {
    gateways: [], virtualServices: [], destinationRules: [], serviceEntries: [], secrets: [], requestAuthentications: [], authorizationPolicies: [], rateLimitPolicies: [],
  };
  for (const r of accepted) {
    switch (r.kind) {
      case 'Gateway': snap.gateways.push(r as GatewayResource); break;
      case 'VirtualService': snap.virtualServices.push(r as VirtualServiceResource); break;
      case 'DestinationRule': snap.destinationRules.push(r as DestinationRuleResource); break;
      case 'ServiceEntry': snap.serviceEntries.push(r as ServiceEntryResource); break;
      case 'Secret': snap.secrets.push(r as SecretResource); break;
      case 'RequestAuthentication': snap.requestAuthentications.push(r as RequestAuthenticationResource); break;
      case 'AuthorizationPolicy': snap.authorizationPolicies.push(r as AuthorizationPolicyResource); break;
      case 'RateLimitPolicy': snap.rateLimitPolicies.push(r as RateLimitPolicyResource); break;
      default: break;
    }
  }
  snap.gateways.sort(compareResources);
  snap.virtualServices.sort(compareResources);
  snap.destinationRules.sort(compareResources);
  snap.requestAuthentications.sort(compareResources);
  snap.authorizationPolicies.sort(compareResources);
  snap.rateLimitPolicies.sort(compareResources);
  snap.serviceEntries.sort(compareResources);
  snap.secrets.sort(compareResources);
  return snap;
}
