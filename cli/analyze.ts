// `meshgate analyze`: everything pilot would say about a config, without serving it.
// The lines are the ones pilot logs and the admin port shows for the same problems.
import { readFile, stat } from 'node:fs/promises';
import type { Command } from './main.ts';
import { UsageError } from './args.ts';
import { loadConfigDir, parseConfigText, displayPath } from '../api/load.ts';
import { validateResources, toSnapshot } from '../api/validate.ts';
import { formatProblem, type Problem } from '../api/problems.ts';
import type { ConfigSnapshot, Resource } from '../api/istio.ts';
import { loadMeshConfig } from '../api/meshconfig.ts';
import { checkReferences } from '../pilot/translate/references.ts';
import { egressEntries } from '../pilot/translate/egress.ts';
import { translate } from '../pilot/translate/index.ts';

export interface AnalyzeResult {
  problems: Problem[];
  errors: number;
  warnings: number;
}

export interface AnalyzeOptions {
  /** A mesh config file to check as `pilot --mesh-config` would read it. */
  meshConfig?: string | null;
}

export async function analyzePaths(paths: string[], opts: AnalyzeOptions = {}): Promise<AnalyzeResult> {
  const resources: Resource[] = [];
  const problems: Problem[] = [];
  if (opts.meshConfig) {
    const st = await stat(opts.meshConfig).catch(() => null);
    if (!st?.isFile()) throw new UsageError(`--mesh-config: ${opts.meshConfig} is not a file`);
    problems.push(...(await loadMeshConfig(opts.meshConfig, displayPath(opts.meshConfig, opts.meshConfig))).problems);
  }
  for (const p of paths) {
    const st = await stat(p).catch(() => null);
    if (!st) throw new UsageError(`${p}: no such file or directory`);
    if (st.isDirectory()) {
      const r = await loadConfigDir(p);
      resources.push(...r.resources);
      problems.push(...r.problems);
    } else {
      const r = parseConfigText(displayPath(p, p), await readFile(p, 'utf8'));
      resources.push(...r.resources);
      problems.push(...r.problems);
    }
  }
  const { accepted, problems: validation } = validateResources(resources);
  problems.push(...validation);
  const snapshot = toSnapshot(accepted);
  problems.push(...checkReferences(snapshot));
  problems.push(...gatewayProblems(snapshot));
  // What the egress allowlist cannot use: errors where Istio refuses the same thing,
  // warnings where Istio accepts it (a port without a protocol) but the allowlist does not guess.
  problems.push(...egressEntries(snapshot).problems);
  const unique = dedupe(problems);
  return {
    problems: unique,
    errors: unique.filter((p) => p.severity === 'error').length,
    warnings: unique.filter((p) => p.severity === 'warning').length,
  };
}

/** Port conflicts and the like only show when a gateway's servers are put together: do so for every selector in the config. */
function gatewayProblems(snapshot: ConfigSnapshot): Problem[] {
  const out: Problem[] = [];
  const seen = new Set<string>();
  for (const g of snapshot.gateways) {
    const labels = g.spec.selector ?? {};
    const key = JSON.stringify(Object.entries(labels).sort());
    if (seen.has(key)) continue;
    seen.add(key);
    const { problems } = translate(snapshot, { id: 'analyze', namespace: g.metadata.namespace, labels });
    out.push(...problems.filter((p) => p.code.startsWith('MG_GATEWAY_')));
  }
  return out;
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const k = formatProblem(p);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export const analyzeCommand: Command = {
  summary: 'Validate Istio YAML (folders or files) without applying it. Exit 0 when there is no error, 1 otherwise; warnings do not fail.',
  options: {
    quiet: { type: 'boolean', default: false },
    'mesh-config': { type: 'string' },
  },
  allowPositionals: true,
  async run(v, positionals) {
    if (positionals.length === 0 && typeof v['mesh-config'] !== 'string') throw new UsageError('name at least one folder or file to analyze (or --mesh-config FILE)');
    const r = await analyzePaths(positionals, { meshConfig: typeof v['mesh-config'] === 'string' ? v['mesh-config'] : null });
    for (const p of r.problems) {
      if (v.quiet && p.severity !== 'error') continue;
      console.log(formatProblem(p));
    }
    console.error(r.errors + r.warnings === 0 ? 'no problems found' : `${r.errors} error(s), ${r.warnings} warning(s)`);
    return r.errors > 0 ? 1 : 0;
  },
};
