// The mesh config file (`--mesh-config FILE`): Istio's MeshConfig, the mesh-wide settings
// istiod reads from the `istio` ConfigMap. meshgate implements the part the egress proxy
// needs, `outboundTrafficPolicy.mode`, plus one setting of its own kept under a separate
// top-level `meshgate:` key so the Istio part stays exactly Istio's:
//
//   outboundTrafficPolicy:
//     mode: REGISTRY_ONLY        # or ALLOW_ANY
//   meshgate:
//     egressAudit: true          # allow everything, but log and count what REGISTRY_ONLY would block
//
// The file is either that document or Istio's ConfigMap (`kind: ConfigMap`, the same YAML as
// text under `data.mesh`), so the ConfigMap an Istio installation already has works as is.
// Every other Istio field is accepted with a warning that names it (never an error: a mesh
// config is shared with istiod and full of settings meshgate has no use for). Wrong types and
// unknown modes are errors naming the file, line, field and reason; the caller then keeps the
// last good mesh config (at start, the defaults).
import { parseAllDocuments, LineCounter, isMap, isSeq, isPair, isScalar, Scalar } from 'yaml';
import type { Node as YamlNode, Pair } from 'yaml';
import { readFile } from 'node:fs/promises';
import type { Problem, ProblemCode, Severity } from './problems.ts';
import { fieldPath } from './problems.ts';
import { suggest } from './schema.ts';

export type OutboundTrafficMode = 'REGISTRY_ONLY' | 'ALLOW_ANY';

export interface MeshConfig {
  outboundTrafficPolicy: { mode: OutboundTrafficMode };
  /** `meshgate.egressAudit`: audit mode of the egress allowlist. */
  egressAudit: boolean;
}

/**
 * No mesh config file, or a field left out. REGISTRY_ONLY differs from Istio's default for
 * sidecars (ALLOW_ANY): the egress proxy exists to lock egress down, so it starts closed.
 */
export function defaultMeshConfig(): MeshConfig {
  return { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' }, egressAudit: false };
}

export function sameMeshConfig(a: MeshConfig, b: MeshConfig): boolean {
  return a.outboundTrafficPolicy.mode === b.outboundTrafficPolicy.mode && a.egressAudit === b.egressAudit;
}

export interface MeshConfigResult {
  /** The file as shown in problems. */
  file: string;
  /** Null when the file has an error: keep the last good mesh config (at start, the defaults). */
  config: MeshConfig | null;
  /** Errors and warnings, each naming the file, line, field and reason. */
  problems: Problem[];
}

const MODES: readonly OutboundTrafficMode[] = ['REGISTRY_ONLY', 'ALLOW_ANY'];

/**
 * Istio's MeshConfig fields (mesh.proto, current and recently deprecated) that meshgate does
 * not implement: accepted with a warning naming them.
 */
const ISTIO_MESH_FIELDS: readonly string[] = [
  'proxyListenPort', 'proxyInboundListenPort', 'proxyHttpPort', 'connectTimeout', 'protocolDetectionTimeout',
  'tcpKeepalive', 'ingressClass', 'ingressService', 'ingressControllerMode', 'ingressSelector', 'enableTracing',
  'accessLogFile', 'accessLogFormat', 'accessLogEncoding', 'enableEnvoyAccessLogService', 'disableEnvoyListenerLog',
  'defaultConfig', 'inboundTrafficPolicy', 'configSources', 'enableAutoMtls', 'trustDomain', 'trustDomainAliases',
  'caCertificates', 'defaultServiceExportTo', 'defaultVirtualServiceExportTo', 'defaultDestinationRuleExportTo',
  'rootNamespace', 'localityLbSetting', 'dnsRefreshRate', 'h2UpgradePolicy', 'inboundClusterStatName',
  'outboundClusterStatName', 'certificates', 'thriftConfig', 'serviceSettings', 'enablePrometheusMerge',
  'verifyCertificateAtClient', 'ca', 'extensionProviders', 'defaultProviders', 'discoverySelectors',
  'pathNormalization', 'defaultHttpRetryPolicy', 'meshMTLS', 'tlsDefaults', 'serviceScopeConfigs',
  'mixerCheckServer', 'mixerReportServer', 'disablePolicyChecks', 'policyCheckFailOpen',
  'sidecarToTelemetrySessionAffinity', 'sdsUdsPath', 'sdsRefreshDelay', 'enableSdsTokenMount', 'authPolicy',
  'rdsRefreshDelay', 'mixerAddress', 'outboundTrafficPolicy',
];
const OUTBOUND_FIELDS: readonly string[] = ['mode', 'egressProxy'];
const MESHGATE_FIELDS: readonly string[] = ['egressAudit'];
const TOP_FIELDS: readonly string[] = [...ISTIO_MESH_FIELDS, 'meshgate'];

type Path = (string | number)[];

/** Where a document's nodes are in the file: the ConfigMap form maps lines of `data.mesh` back to the file. */
interface Locator {
  root: YamlNode;
  lc: LineCounter;
  /** Added to the lines and columns of `lc` (0 for a document of its own). */
  lineOffset: number;
  columnOffset: number;
  /** Used when `lc` cannot be mapped back (a quoted `data.mesh` string). */
  fixed: { line: number; column: number } | null;
}

/** The offset of the field at `path` (its key, or the nearest ancestor present) and its value node. */
function nodeAt(root: YamlNode, path: Path): { at: number; node: YamlNode | null } {
  let node: YamlNode | null = root;
  let at = node.range ? node.range[0] : 0;
  for (const seg of path) {
    if (node === null) break;
    if (isMap(node)) {
      const pair: Pair<unknown, unknown> | undefined = node.items.find((p: Pair<unknown, unknown>) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair === undefined) { node = null; break; }
      const key = pair.key as YamlNode;
      if (key.range) at = key.range[0];
      node = (pair.value as YamlNode | null) ?? null;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as YamlNode | undefined;
      if (item === undefined || item === null) { node = null; break; }
      if (item.range) at = item.range[0];
      node = item;
    } else {
      node = null;
      break;
    }
  }
  return { at, node };
}

function positionIn(loc: Locator, path: Path): { line: number; column: number } {
  if (loc.fixed !== null) return loc.fixed;
  const p = loc.lc.linePos(nodeAt(loc.root, path).at);
  return { line: p.line + loc.lineOffset, column: p.col + loc.columnOffset };
}

class Collector {
  readonly file: string;
  readonly resource: string;
  readonly problems: Problem[] = [];
  loc: Locator | null = null;
  errors = 0;

  constructor(file: string, resource: string) {
    this.file = file;
    this.resource = resource;
  }

  add(code: ProblemCode, severity: Severity, path: Path, message: string, at?: { line: number; column: number }): void {
    const pos = at ?? (this.loc !== null ? positionIn(this.loc, path) : undefined);
    const p: Problem = { code, severity, file: this.file, resource: this.resource, message };
    if (pos !== undefined) {
      p.line = pos.line;
      p.column = pos.column;
    }
    if (path.length > 0) p.field = fieldPath(path);
    if (severity === 'error') this.errors++;
    this.problems.push(p);
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}

function unknownField(c: Collector, path: Path, key: string, known: readonly string[], where: string): void {
  const near = suggest(key, known);
  c.add('MG_CONFIG_UNKNOWN_FIELD', 'warning', path,
    `unknown field ${JSON.stringify(key)} in ${where}${near !== null ? ` (did you mean ${JSON.stringify(near)}?)` : ''}; ignored`);
}

/** Reads a MeshConfig object (already plain data) into `out`, reporting through `c`. */
function readMesh(c: Collector, mesh: Record<string, unknown>, base: Path, out: MeshConfig): void {
  for (const [key, value] of Object.entries(mesh)) {
    const at = [...base, key];
    if (key === 'outboundTrafficPolicy') {
      if (value === null || value === undefined) continue;
      if (!isObj(value)) {
        c.add('MG_CONFIG_SCHEMA', 'error', at, `must be a mapping like {mode: REGISTRY_ONLY}, not ${typeName(value)}`);
        continue;
      }
      for (const [k, v] of Object.entries(value)) {
        if (k === 'mode') {
          if (v === null || v === undefined) continue;
          if (typeof v === 'string' && (MODES as readonly string[]).includes(v)) {
            out.outboundTrafficPolicy.mode = v as OutboundTrafficMode;
            continue;
          }
          // No guessing on what decides whether egress is open: `registry_only`, `1` and
          // `ALLOW-ANY` are errors, not "probably meant".
          const near = typeof v === 'string' ? suggest(v, MODES) : null;
          c.add('MG_CONFIG_SCHEMA', 'error', [...at, k],
            `${typeName(v)} is not a mode; use REGISTRY_ONLY or ALLOW_ANY${near !== null ? ` (did you mean ${near}?)` : ''}`);
        } else if (k === 'egressProxy') {
          c.add('MG_CONFIG_UNSUPPORTED_FIELD', 'warning', [...at, k],
            'outboundTrafficPolicy.egressProxy is not supported yet; ignored (point workloads at the egress proxy with HTTP_PROXY/HTTPS_PROXY)');
        } else {
          unknownField(c, [...at, k], k, OUTBOUND_FIELDS, 'outboundTrafficPolicy');
        }
      }
    } else if (key === 'meshgate') {
      if (value === null || value === undefined) continue;
      if (!isObj(value)) {
        c.add('MG_CONFIG_SCHEMA', 'error', at, `must be a mapping like {egressAudit: true}, not ${typeName(value)}`);
        continue;
      }
      for (const [k, v] of Object.entries(value)) {
        if (k === 'egressAudit') {
          if (v === null || v === undefined) continue;
          if (typeof v === 'boolean') out.egressAudit = v;
          else c.add('MG_CONFIG_SCHEMA', 'error', [...at, k], `must be true or false, not ${typeName(v)}`);
        } else {
          unknownField(c, [...at, k], k, MESHGATE_FIELDS, 'meshgate');
        }
      }
    } else if (ISTIO_MESH_FIELDS.includes(key)) {
      c.add('MG_CONFIG_UNSUPPORTED_FIELD', 'warning', at, `mesh config field ${key} is not implemented by meshgate; ignored`);
    } else {
      unknownField(c, at, key, TOP_FIELDS, 'the mesh config');
    }
  }
}

/** Maps lines of a `|` block's text back to the file; any other string maps to its key. */
function embeddedLocator(outer: Locator, outerText: string, scalarNode: YamlNode | null, innerLc: LineCounter, innerRoot: YamlNode): Locator {
  const s = scalarNode as Scalar | null;
  if (s !== null && s.type === Scalar.BLOCK_LITERAL && s.range) {
    // A literal block keeps its lines (blank ones too) and strips the indentation of its
    // first non-empty line: line N of the text is line N after the `|` header.
    const header = outer.lc.linePos(s.range[0]).line;
    const body = outerText.slice(outerText.indexOf('\n', s.range[0]) + 1, s.range[1]);
    const first = body.split('\n').find((l) => l.trim() !== '') ?? '';
    const indent = first.length - first.trimStart().length;
    return { root: innerRoot, lc: innerLc, lineOffset: header, columnOffset: indent, fixed: null };
  }
  return { root: innerRoot, lc: innerLc, lineOffset: 0, columnOffset: 0, fixed: positionIn(outer, ['data', 'mesh']) };
}

interface ParsedDoc { root: YamlNode; lc: LineCounter; value: unknown }

/** One YAML document, or problems (then null). */
function parseOne(c: Collector, text: string, at: { line: number; column: number } | null): ParsedDoc | null {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const list = (Array.isArray(docs) ? docs : [docs]).filter((d) => d.errors.length > 0 || !(d.contents === null || (isScalar(d.contents) && d.contents.value === null)));
  for (const d of list) {
    for (const e of d.errors) {
      const p = lc.linePos(e.pos[0]);
      c.add('MG_CONFIG_YAML', 'error', [], e.message.split('\n')[0], at ?? { line: p.line, column: p.col });
    }
  }
  if (c.errors > 0) return null;
  if (list.length === 0) return { root: new Scalar(null) as unknown as YamlNode, lc, value: null };
  if (list.length > 1) {
    const p = lc.linePos(list[1].contents!.range[0]);
    c.add('MG_CONFIG_INVALID', 'error', [], `a mesh config file holds one document; found ${list.length}`, at ?? { line: p.line, column: p.col });
    return null;
  }
  const doc = list[0];
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    c.add('MG_CONFIG_YAML', 'error', [], (e as Error).message.split('\n')[0], at ?? { line: 1, column: 1 });
    return null;
  }
  return { root: doc.contents as YamlNode, lc, value };
}

/** Parses the text of a mesh config file (either form). */
export function parseMeshConfig(file: string, text: string): MeshConfigResult {
  const out = defaultMeshConfig();
  const top = new Collector(file, 'MeshConfig');
  const parsed = parseOne(top, text, null);
  if (parsed === null) return { file, config: null, problems: top.problems };
  const value = parsed.value;
  if (value === null || value === undefined) return { file, config: out, problems: [] };
  const outer: Locator = { root: parsed.root, lc: parsed.lc, lineOffset: 0, columnOffset: 0, fixed: null };
  top.loc = outer;
  if (!isObj(value)) {
    top.add('MG_CONFIG_NOT_OBJECT', 'error', [], `a mesh config must be a mapping (outboundTrafficPolicy: …) or Istio's ConfigMap, not ${typeName(value)}`);
    return { file, config: null, problems: top.problems };
  }
  if (value.kind === undefined) {
    readMesh(top, value, [], out);
    return { file, config: top.errors > 0 ? null : out, problems: top.problems };
  }

  if (value.kind !== 'ConfigMap') {
    top.add('MG_CONFIG_UNKNOWN_KIND', 'error', ['kind'],
      `kind ${JSON.stringify(value.kind)} is not a mesh config; use a MeshConfig document (outboundTrafficPolicy: …) or Istio's ConfigMap with the MeshConfig under data.mesh`);
    return { file, config: null, problems: top.problems };
  }
  const meta = isObj(value.metadata) ? value.metadata : {};
  const name = typeof meta.name === 'string' && meta.name !== '' ? meta.name : '?';
  const ns = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  const cm = new Collector(file, `ConfigMap/${ns}/${name}`);
  cm.loc = outer;
  const data = value.data;
  if (!isObj(data) || data.mesh === undefined || data.mesh === null) {
    cm.add('MG_CONFIG_SCHEMA', 'error', ['data', 'mesh'], 'is required: Istio\'s mesh ConfigMap holds the MeshConfig as YAML text under data.mesh');
    return { file, config: null, problems: cm.problems };
  }
  for (const k of Object.keys(data)) {
    if (k === 'mesh') continue;
    cm.add('MG_CONFIG_UNSUPPORTED_FIELD', 'warning', ['data', k], `data.${k} is not read by meshgate (only data.mesh is); ignored`);
  }
  if (typeof data.mesh !== 'string') {
    cm.add('MG_CONFIG_SCHEMA', 'error', ['data', 'mesh'], `must be the MeshConfig as YAML text (mesh: |), not ${typeName(data.mesh)}`);
    return { file, config: null, problems: cm.problems };
  }
  const keyPos = positionIn(outer, ['data', 'mesh']);
  const inner = parseOne(cm, data.mesh, keyPos);
  if (inner === null) return { file, config: null, problems: cm.problems };
  if (inner.value === null || inner.value === undefined) return { file, config: out, problems: cm.problems };
  cm.loc = embeddedLocator(outer, text, nodeAt(parsed.root, ['data', 'mesh']).node, inner.lc, inner.root);
  if (!isObj(inner.value)) {
    cm.add('MG_CONFIG_NOT_OBJECT', 'error', [], `data.mesh must hold a mapping (outboundTrafficPolicy: …), not ${typeName(inner.value)}`);
    return { file, config: null, problems: cm.problems };
  }
  readMesh(cm, inner.value, [], out);
  return { file, config: cm.errors > 0 ? null : out, problems: cm.problems };
}

/** The result for a mesh config file that cannot be read (`code`: ENOENT, EACCES…). */
export function unreadableMeshConfig(file: string, code: string): MeshConfigResult {
  return {
    file, config: null,
    problems: [{ code: 'MG_CONFIG_FILE', severity: 'error', file, resource: 'MeshConfig', message: `the mesh config file cannot be read (${code})` }],
  };
}

/** Reads and parses a mesh config file; an unreadable file is an MG_CONFIG_FILE error. */
export async function loadMeshConfig(path: string, shownAs: string = path): Promise<MeshConfigResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return unreadableMeshConfig(shownAs, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  return parseMeshConfig(shownAs, text);
}
