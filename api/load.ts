// Turns YAML text into resources. Each document becomes one Resource that remembers its
// file and line; every problem found here names the file, line and column. Validation of
// the resource's fields happens in validate.ts.
import { parseAllDocuments, LineCounter, isMap } from 'yaml';
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
  'TrafficExtension', 'RequestAuthentication', 'AuthorizationPolicy', 'PeerAuthentication',
]);

export interface LoadResult {
  resources: Resource[];
  problems: Problem[];
}

export const DEFAULT_NAMESPACE = 'default';

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
    if (doc.contents === null) return; // empty document (`---` alone, comments only)
    const startLine = lc.linePos(doc.contents.range[0]).line;
    if (!isMap(doc.contents)) {
      problems.push({ code: 'MG_CONFIG_NOT_OBJECT', severity: 'error', file, line: startLine, column: 1, message: 'a document must be a mapping with apiVersion, kind, metadata and spec' });
      return;
    }
    const obj = doc.toJS({ maxAliasCount: 100 }) as Record<string, unknown>;
    const kind = obj.kind;
    const apiVersion = obj.apiVersion;
    if (typeof kind !== 'string' || typeof apiVersion !== 'string') {
      problems.push({ code: 'MG_CONFIG_MISSING_TYPE', severity: 'error', file, line: startLine, column: 1, message: 'document has no apiVersion and kind; every resource needs both' });
      return;
    }
    if (kind === 'List' && Array.isArray(obj.items)) {
      problems.push({ code: 'MG_CONFIG_IGNORED_KIND', severity: 'warning', file, line: startLine, column: 1, message: 'kind List is not read; write one document per resource, separated by ---' });
      return;
    }
    const meta = (obj.metadata ?? {}) as Record<string, unknown>;
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
    resources.push({
      apiVersion,
      kind,
      metadata: { ...(meta as object), name, namespace } as Resource['metadata'],
      spec: spec ?? {},
      source: { file, line: startLine, doc: index },
    });
  });
  return { resources, problems };
}

const CONFIG_FILE = /\.(ya?ml|json)$/i;

/** Lists config files under `dir` (recursively, sorted, hidden entries skipped). */
export async function listConfigFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
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
