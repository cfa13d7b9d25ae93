// Turns YAML text into resources. Each document becomes one Resource that remembers its
// file and line; every problem found here names the file, line and column. Validation of
// the resource's fields happens in validate.ts.
import { parseAllDocuments, LineCounter, isMap, isSeq, isPair, isScalar } from 'yaml';
import type { Node as YamlNode, Pair } from 'yaml';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Resource } from './istio.ts';
import { SUPPORTED_KINDS } from './istio.ts';
import type { Problem } from './problems.ts';

/** Kinds that are valid Kubernetes or Istio objects but that meshgate does not read (yet). */
export const IGNORED_KINDS: ReadonlySet<string> = new Set([
  'Deployment', 'Service', 'ServiceAccount', 'ConfigMap', 'Namespace', 'Pod', 'StatefulSet', 'DaemonSet',
  'Endpoints', 'EndpointSlice', 'Job', 'CronJob', 'Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding',
  'CustomResourceDefinition', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Ingress', 'NetworkPolicy',
  'EnvoyFilter', 'Sidecar', 'WorkloadEntry', 'WorkloadGroup', 'ProxyConfig', 'WasmPlugin', 'Telemetry',
  'TrafficExtension', 'PeerAuthentication',
]);

export interface LoadResult {
  resources: Resource[];
  problems: Problem[];
}

export const DEFAULT_NAMESPACE = 'default';

/**
 * Where each loaded resource's YAML came from, kept beside the resource rather than on it so
 * the Resource shape stays plain data. Positions are resolved only when a problem asks for
 * one, so loading stays cheap; the WeakMap lets the syntax tree go with its resource.
 */
interface DocOrigin {
  root: YamlNode;
  lc: LineCounter;
  keys: readonly string[];
}
const origins = new WeakMap<object, DocOrigin>();

export interface Position { line: number; column: number }

/** Splits `spec.http[0].match[1]["x-y"]` (the form fieldPath writes) back into segments. */
export function parseFieldPath(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]|\.?([^.[\]]+)/y;
  let at = 0;
  while (at < path.length) {
    re.lastIndex = at;
    const m = re.exec(path);
    if (m === null) break;
    if (m[1] !== undefined) out.push(Number(m[1]));
    else if (m[2] !== undefined) out.push(JSON.parse(m[2]) as string);
    else out.push(m[3]);
    at = re.lastIndex;
  }
  return out;
}

/**
 * The 1-based line and column of a field of a loaded resource: the key for a mapping entry,
 * the item for a sequence entry. When the field is absent (a missing required field) it is
 * the nearest ancestor that exists. Undefined for resources that were not loaded from text.
 */
export function positionOf(r: object, path: string | readonly (string | number)[]): Position | undefined {
  const origin = origins.get(r);
  if (origin === undefined) return undefined;
  const segs = typeof path === 'string' ? parseFieldPath(path) : [...path];
  // For Secrets the loader lifted type/data/stringData into `spec`; they sit at the top.
  if ((r as { kind?: unknown }).kind === 'Secret' && segs[0] === 'spec') segs.shift();
  let node: YamlNode | null = origin.root;
  let at = node.range ? node.range[0] : 0;
  for (const seg of segs) {
    if (node === null) break;
    if (isMap(node)) {
      const pair: Pair<unknown, unknown> | undefined = node.items.find((p: Pair<unknown, unknown>) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair === undefined) break;
      const key = pair.key as YamlNode;
      if (key.range) at = key.range[0];
      node = (pair.value as YamlNode | null) ?? null;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as YamlNode | undefined;
      if (item === undefined || item === null) break;
      if (item.range) at = item.range[0];
      node = item;
    } else break;
  }
  const p = origin.lc.linePos(at);
  return { line: p.line, column: p.col };
}

/** Top-level keys of the document a resource was loaded from (to spot typos like `spc:`). */
export function documentKeys(r: object): readonly string[] | undefined {
  return origins.get(r)?.keys;
}

export function parseConfigText(file: string, text: string): LoadResult {
  const resources: Resource[] = [];
  const problems: Problem[] = [];
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const pos = lc.linePos(e.pos[0]);
        problems.push({
          code: 'MG_CONFIG_YAML', severity: 'error', file, line: pos.line, column: pos.col,
          message: e.message.split('\n')[0],
        });
      }
      return;
    }
    // Empty document (`---` alone, comments only, a trailing `---`): yaml gives null or a null scalar.
    if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return;
    const startLine = lc.linePos(doc.contents.range[0]).line;
    if (!isMap(doc.contents)) {
      problems.push({ code: 'MG_CONFIG_NOT_OBJECT', severity: 'error', file, line: startLine, column: 1, message: 'a document must be a mapping with apiVersion, kind, metadata and spec' });
      return;
    }
    let obj: Record<string, unknown>;
    try {
      obj = doc.toJS({ maxAliasCount: 100 }) as Record<string, unknown>;
    } catch (e) {
      // An alias bomb (billion laughs) ends here instead of exhausting memory.
      problems.push({ code: 'MG_CONFIG_YAML', severity: 'error', file, line: startLine, column: 1, message: (e as Error).message.split('\n')[0] });
      return;
    }
    const kind = obj.kind;
    const apiVersion = obj.apiVersion;
    if (kind === undefined && apiVersion === undefined && obj.metadata === undefined && obj.spec === undefined) {
      // A data file that shares the folder (a JWKS, Helm values): not an attempt at a resource.
      problems.push({ code: 'MG_CONFIG_MISSING_TYPE', severity: 'warning', file, line: startLine, column: 1, message: 'document has no apiVersion, kind, metadata or spec; it is not a resource and is skipped' });
      return;
    }
    if (typeof kind !== 'string' || typeof apiVersion !== 'string') {
      problems.push({ code: 'MG_CONFIG_MISSING_TYPE', severity: 'error', file, line: startLine, column: 1, message: 'document has no apiVersion and kind; every resource needs both' });
      return;
    }
    if (kind === 'List' && Array.isArray(obj.items)) {
      problems.push({ code: 'MG_CONFIG_IGNORED_KIND', severity: 'warning', file, line: startLine, column: 1, message: 'kind List is not read; write one document per resource, separated by ---' });
      return;
    }
    const meta = (obj.metadata !== null && typeof obj.metadata === 'object' && !Array.isArray(obj.metadata) ? obj.metadata : {}) as Record<string, unknown>;
    const name = typeof meta.name === 'string' ? meta.name : '';
    const namespace = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : DEFAULT_NAMESPACE;
    const id = `${kind}/${namespace}/${name || '?'}`;
    if (!(kind in SUPPORTED_KINDS)) {
      if (IGNORED_KINDS.has(kind)) {
        problems.push({ code: 'MG_CONFIG_IGNORED_KIND', severity: 'warning', file, line: startLine, column: 1, resource: id, message: `kind ${kind} is not read by meshgate yet; ignored` });
      } else {
        problems.push({ code: 'MG_CONFIG_UNKNOWN_KIND', severity: 'error', file, line: startLine, column: 1, resource: id, message: `unknown kind ${JSON.stringify(kind)} (meshgate reads ${Object.keys(SUPPORTED_KINDS).join(', ')})` });
      }
      return;
    }
    const spec = kind === 'Secret'
      ? { type: obj.type, data: obj.data, stringData: obj.stringData }
      : obj.spec;
    const resource: Resource = {
      apiVersion,
      kind,
      metadata: { ...meta, name, namespace } as Resource['metadata'],
      spec: spec ?? {},
      source: { file, line: startLine, doc: index },
    };
    origins.set(resource, { root: doc.contents, lc, keys: Object.keys(obj) });
    resources.push(resource);
  });
  return { resources, problems };
}

const CONFIG_FILE = /\.(ya?ml|json)$/i;

/** Lists config files under `dir` (recursively, sorted, hidden entries skipped); the folders walked go to `dirsOut`. */
export async function listConfigFiles(dir: string, dirsOut?: string[]): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    dirsOut?.push(d);
    const entries = await readdir(d, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && CONFIG_FILE.test(e.name)) out.push(p);
    }
  }
  await walk(dir);
  return out;
}

/** Loads every config file under `dir`. Paths in results are relative to `dir`'s parent as given. */
export async function loadConfigDir(dir: string): Promise<LoadResult & { files: string[] }> {
  const files = await listConfigFiles(dir);
  const resources: Resource[] = [];
  const problems: Problem[] = [];
  for (const f of files) {
    const text = await readFile(f, 'utf8');
    const r = parseConfigText(displayPath(dir, f), text);
    resources.push(...r.resources);
    problems.push(...r.problems);
  }
  return { resources, problems, files };
}

export function displayPath(dir: string, file: string): string {
  const rel = relative(process.cwd(), file);
  return rel.startsWith('..') ? file : rel || relative(dir, file);
}
