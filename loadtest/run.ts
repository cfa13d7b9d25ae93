// `npm run loadtest [-- flags]`: meshgate against nginx and against the upstream directly,
// same machine, same load generator, one run. See `--help` and README's Performance section.
//
// Order of work, and why:
//   1. tools: nginx / wrk (and h2load for h2) or loadtest/setup.sh installs them;
//   2. one upstream process for the whole run (its own process: its CPU is measured apart);
//   3. per scenario: nginx and meshgate started on the same routing, each target probed for
//      correct answers, warmed up (node's JIT and both proxies' upstream pools), then rounds
//      of direct / nginx / meshgate interleaved with the order rotating, so drift on a shared
//      machine hits all three alike;
//   4. config-apply (control plane) last: it starts the biggest processes;
//   5. table to stdout, JSON + SVG to loadtest/results/, README section on --write-readme.
import { parseArgs } from 'node:util';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile, readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir, cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { startUpstream } from './upstream-process.ts';
import { SCENARIOS, PENDING, CONFIG_APPLY, HOST, type Scenario, type Ctx, type UpstreamPorts } from './scenarios.ts';
import { selfSigned } from './certs.ts';
import { startNginx, nginxVersion } from './nginx.ts';
import { startMeshgate, writeConfig, hasConcurrencyFlag, ROOT } from './meshgate.ts';
import { runLoad, killGenerators, type Kind, type RunSpec } from './drivers.ts';
import { probe, probeProblem } from './probe.ts';
import { configApply } from './config-apply.ts';
import { freePort, captureTail } from './util.ts';
import {
  summarize, ratios, warnings, goals, markdown, svgChart, replacePerfSection, summaryTable, ratioTable, configApplyTable,
  TARGETS, type Report, type RunRecord, type Settings, type Machine, type ConfigApplyRow, type TargetName,
} from './report.ts';

const HELP = `usage: npm run loadtest -- [flags]

  --scenario NAMES     comma-separated, or repeat the flag (default: all)
                       ${[...SCENARIOS.map((s) => s.name), CONFIG_APPLY].join(', ')}
                       measured elsewhere: ${PENDING.map((p) => p.name).join(', ')}
  --duration 2s        length of each measured run (whole seconds or minutes)
  --rounds 2           interleaved rounds per target and load
  --connections 50     connections for closed-loop runs (also fixed-rate)
  --rate 1000          requests/s for fixed-rate runs
  --kind both          closed (throughput), fixed (latency at --rate) or both
  --workers 1          nginx worker_processes and meshgate --concurrency
  --warmup 1s          unmeasured closed-loop load per target before the rounds
  --fixed-gen wrk      fixed-rate generator for HTTP/1.1: wrk (paced, Poisson arrivals) or hey
                       (bursty: its workers fire in step); h2 always uses h2load --rps
  --apply-sizes 100,1000,10000   VirtualService counts for config-apply
  --apply-edits 3      edits timed per size
  --write-readme       replace README.md's Performance section with this run
  --readme-from FILE   replace it with an earlier run's JSON (loadtest/results/…), no new run
  --no-setup           never run loadtest/setup.sh (fail if tools are missing)
`;

// Whole seconds: wrk and h2load take their durations in whole seconds.
function seconds(flag: string, v: string): number {
  const m = /^(\d+)(s|m)?$/.exec(v.trim());
  if (!m) throw new Error(`${flag}: "${v}" is not a whole number of seconds or minutes (10s, 1m)`);
  const s = Number(m[1]) * (m[2] === 'm' ? 60 : 1);
  if (s < 1 || s > 600) throw new Error(`${flag}: ${v} is out of range (1s to 10m)`);
  return s;
}

function positiveInt(flag: string, v: string, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${flag}: "${v}" is not a whole number from 1 to ${max}`);
  return n;
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function log(line: string): void {
  process.stderr.write(`[loadtest] ${line}\n`);
}

function machineInfo(): Machine {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1].trim() ?? cpus()[0]?.model ?? 'unknown';
  const git = (args: string[]) => {
    try { return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return ''; }
  };
  let wrk = 'wrk';
  try { wrk = (spawnSync('wrk', ['--version'], { encoding: 'utf8' }).stdout ?? '').split('\n')[0].replace(/ Copyright.*$/, '').trim() || 'wrk'; } catch { /* missing */ }
  return {
    nproc: cpus().length,
    cpuModel: model,
    node: process.version,
    nginx: has('nginx') ? nginxVersion().replace(/^nginx\//, '') : 'missing',
    wrk,
    kernel: release(),
    commit: git(['rev-parse', 'HEAD']) || 'unknown',
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
    loadavgStart: loadavg(),
    loadavgEnd: [],
  };
}

interface Target { name: TargetName; port: number; pid: number | null }

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', multiple: true },
      duration: { type: 'string', default: '2s' },
      rounds: { type: 'string', default: '2' },
      connections: { type: 'string', default: '50' },
      rate: { type: 'string', default: '1000' },
      kind: { type: 'string', default: 'both' },
      workers: { type: 'string', default: '1' },
      warmup: { type: 'string', default: '1s' },
      'fixed-gen': { type: 'string', default: 'wrk' },
      'apply-sizes': { type: 'string', default: '100,1000,10000' },
      'apply-edits': { type: 'string', default: '3' },
      'write-readme': { type: 'boolean', default: false },
      'readme-from': { type: 'string' },
      'no-setup': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values['readme-from'] !== undefined) {
    const report = JSON.parse(await readFile(values['readme-from'], 'utf8')) as Report;
    await writeReadme(report);
    return 0;
  }
  const known = [...SCENARIOS.map((s) => s.name), CONFIG_APPLY];
  const asked = (values.scenario ?? ['all']).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  const names = asked.includes('all') ? known : asked;
  const skipped: Report['skipped'] = [];
  for (const n of names) {
    const p = PENDING.find((x) => x.name === n);
    if (p) { log(`scenario ${n} is not run by this harness: ${p.pending}`); skipped.push({ scenario: n, reason: p.pending }); continue; }
    if (!known.includes(n)) throw new Error(`--scenario: unknown scenario "${n}" (known: ${known.join(', ')}; measured elsewhere: ${PENDING.map((x) => x.name).join(', ')})`);
  }
  const kindFlag = String(values.kind);
  if (!['both', 'closed', 'fixed'].includes(kindFlag)) throw new Error(`--kind: "${kindFlag}" is not closed, fixed or both`);
  const kinds: Kind[] = kindFlag === 'both' ? ['closed', 'fixed'] : [kindFlag as Kind];
  const fixedGen = String(values['fixed-gen']);
  if (fixedGen !== 'wrk' && fixedGen !== 'hey') throw new Error(`--fixed-gen: "${fixedGen}" is not wrk or hey`);
  const workers = positiveInt('--workers', String(values.workers), 64);
  const scenarios = SCENARIOS.filter((s) => names.includes(s.name));
  const settings: Settings = {
    scenarios: names,
    seconds: seconds('--duration', String(values.duration)),
    rounds: positiveInt('--rounds', String(values.rounds), 100),
    connections: positiveInt('--connections', String(values.connections), 10_000),
    rate: positiveInt('--rate', String(values.rate), 1_000_000),
    workers,
    meshgateConcurrency: null,
    kinds,
    fixedGen,
    warmupSeconds: seconds('--warmup', String(values.warmup)),
  };
  const applySizes = String(values['apply-sizes']).split(',').map((x) => positiveInt('--apply-sizes', x.trim(), 100_000));
  const applyEdits = positiveInt('--apply-edits', String(values['apply-edits']), 50);

  // 1. tools
  const needH2 = scenarios.some((s) => s.protocol === 'h2');
  const needs = () => [...(scenarios.length ? ['nginx', 'wrk'] : []), ...(needH2 ? ['h2load'] : []), ...(fixedGen === 'hey' && kinds.includes('fixed') ? ['hey'] : [])].filter((c) => !has(c));
  if (needs().length && !values['no-setup']) {
    log(`missing ${needs().join(', ')}: running loadtest/setup.sh`);
    const r = spawnSync('sh', [join(ROOT, 'loadtest', 'setup.sh')], { stdio: 'inherit', timeout: 600_000 });
    if (r.status !== 0) log('loadtest/setup.sh failed');
  }
  const still = needs();
  if (still.includes('nginx') || still.includes('wrk') || still.includes('hey')) throw new Error(`missing ${still.join(', ')}; install them (loadtest/setup.sh does, with apt-get) and run again`);
  let runnable = scenarios;
  if (still.includes('h2load')) {
    const reason = 'h2load (Debian package nghttp2-client) is not installed and could not be installed; wrk and hey cannot drive HTTP/2 closed-loop load';
    log(`skipping h2: ${reason}`);
    skipped.push({ scenario: 'h2', reason });
    runnable = scenarios.filter((s) => s.protocol !== 'h2');
  }
  if (!runnable.length && !names.includes(CONFIG_APPLY)) {
    log('nothing to run');
    return 2;
  }
  settings.meshgateConcurrency = hasConcurrencyFlag() ? workers : null;
  if (settings.meshgateConcurrency === null) log(`this meshgate has no --concurrency flag: it runs its default, nginx runs worker_processes ${workers}`);

  const startedAt = new Date();
  const machine = machineInfo();
  const tmp = await mkdtemp(join(tmpdir(), 'meshgate-loadtest-'));
  const cleanups: (() => Promise<void>)[] = [];
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    log('interrupted: stopping everything this run started');
    killGenerators();
    void (async () => {
      for (const c of cleanups.reverse()) await c().catch(() => {});
      await rm(tmp, { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const runs: RunRecord[] = [];
  let applyRows: ConfigApplyRow[] = [];
  try {
    if (runnable.length) {
      const pem = selfSigned(HOST);
      const certFile = join(tmp, 'cert.pem');
      const keyFile = join(tmp, 'key.pem');
      await writeFile(certFile, pem.certPem);
      await writeFile(keyFile, pem.keyPem, { mode: 0o600 });
      // 2. upstream
      const upstream = await startUpstream(certFile, keyFile);
      cleanups.push(() => upstream.stop());
      log(`upstream pid ${upstream.pid}: ${JSON.stringify(upstream.ports)}`);
      for (const sc of runnable) {
        if (interrupted) break;
        runs.push(...await runScenario(sc, { up: upstream.ports, pem, certFile, keyFile, listen: 0 }, upstream.pid, settings, tmp, cleanups, skipped));
      }
      await upstream.stop();
    }
    if (names.includes(CONFIG_APPLY) && !interrupted) {
      log(`config-apply: ${applySizes.join(' / ')} VirtualServices`);
      applyRows = await configApply({ sizes: applySizes, edits: applyEdits, workers, tmp, log });
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await rm(tmp, { recursive: true, force: true });
  }

  machine.loadavgEnd = loadavg();
  const summary = summarize(runs);
  const argv = process.argv.slice(2);
  const report: Report = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: `npm run loadtest${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
    machine,
    settings,
    runs,
    summary,
    ratios: ratios(summary),
    configApply: applyRows,
    skipped,
    warnings: warnings(summary, settings),
  };

  // 5. output
  const out: string[] = [];
  if (summary.length) out.push(summaryTable(summary, settings), '', ratioTable(report.ratios, settings), '', ...goals(summary, report.ratios));
  if (applyRows.length) out.push('', configApplyTable(applyRows));
  for (const s of skipped) out.push(`skipped ${s.scenario}: ${s.reason}`);
  for (const w of report.warnings) out.push(`warning: ${w}`);
  process.stdout.write(`\n${out.join('\n')}\n\n`);

  const resultsDir = join(ROOT, 'loadtest', 'results');
  await mkdir(resultsDir, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const jsonFile = join(resultsDir, `${stamp}.json`);
  await writeFile(jsonFile, JSON.stringify(report, null, 2) + '\n');
  const svg = summary.length ? svgChart(summary, settings) : null;
  if (svg) await writeFile(join(resultsDir, `${stamp}.svg`), svg);
  log(`wrote ${jsonFile}${svg ? ` and ${stamp}.svg` : ''}`);

  if (values['write-readme']) await writeReadme(report);
  return 0;
}

/** README's Performance section from a run's report (this run's, or a saved one's). */
async function writeReadme(report: Report): Promise<void> {
  // The chart the README shows sits beside the harness (results/ is not committed).
  const chart = 'loadtest/perf-latest.svg';
  const svg = report.summary.length ? svgChart(report.summary, report.settings) : null;
  if (svg) await writeFile(join(ROOT, chart), svg);
  const intro = `_Generated by \`npm run loadtest -- --write-readme\` on ${report.startedAt.slice(0, 10)}; regenerate, do not edit by hand._\n\n` +
    'Targets: **direct** is the upstream itself (a small node server in its own process, speaking the scenario\'s protocol); ' +
    '**nginx** is Debian\'s nginx from a generated config (keep-alive upstream pool, no access log); **meshgate** is `bin/meshgate up` on the same routing. ' +
    '**closed** runs keep N connections busy (throughput: wrk, h2load for h2); **fixed** runs offer a steady rate with Poisson arrivals (latency: paced wrk, h2load --rps for h2). ' +
    'Latencies are medians over rounds; CPU and RSS are the proxy\'s whole process tree (nginx master + workers, meshgate + workers) from /proc. ' +
    'Everything shares the machine\'s cores: load generator, proxy and upstream compete, so read the ratios, and CPU µs/req as the proxy\'s cost per request.';
  const readmePath = join(ROOT, 'README.md');
  const readme = await readFile(readmePath, 'utf8');
  await writeFile(readmePath, replacePerfSection(readme, `${intro}\n\n${markdown(report, { chart: svg ? chart : undefined, scenarios: Object.fromEntries(SCENARIOS.map((x) => [x.name, x.summary])) })}`));
  log('README.md Performance section updated');
}

async function runScenario(sc: Scenario, base: Ctx, upstreamPid: number, s: Settings, tmp: string, cleanups: (() => Promise<void>)[], skipped: Report['skipped']): Promise<RunRecord[]> {
  const records: RunRecord[] = [];
  log(`scenario ${sc.name}: ${sc.summary}`);
  const nginxCtx: Ctx = { ...base, listen: await freePort() };
  const meshCtx: Ctx = { ...base, listen: await freePort() };
  const nginx = await startNginx(join(tmp, `nginx-${sc.name}`), s.workers, sc.nginx(nginxCtx));
  cleanups.push(() => nginx.stop());
  const meshDir = join(tmp, `meshgate-${sc.name}`);
  await writeConfig(meshDir, sc.meshgate(meshCtx));
  const mg = await startMeshgate(meshDir, s.workers);
  cleanups.push(() => mg.stop());
  const targets: Target[] = [
    { name: 'direct', port: sc.direct(base.up), pid: null },
    { name: 'nginx', port: nginxCtx.listen, pid: nginx.pid },
    { name: 'meshgate', port: meshCtx.listen, pid: mg.pid },
  ];
  try {
    // Correctness first: a target that answers wrongly is not measured.
    const measured: Target[] = [];
    for (const t of targets) {
      const r = await probe(sc.protocol, t.port, sc.request, 200, base.pem.certPem).catch((e: Error) => ({ statuses: { [`error: ${e.message}`]: 1 }, upstreams: {} }));
      // The direct target is the v1 upstream itself, whatever the proxies split over.
      const problem = probeProblem(r, t.name === 'direct' ? ['v1'] : sc.expect);
      if (problem) {
        const reason = `${t.name} ${problem}; not measured${t.name === 'meshgate' ? `\n${mg.output().slice(-1500)}` : ''}`;
        log(`scenario ${sc.name}: ${reason}`);
        skipped.push({ scenario: `${sc.name}/${t.name}`, reason });
      } else {
        measured.push(t);
      }
    }
    const spec = (t: Target, kind: Kind, seconds: number): RunSpec => ({
      kind, protocol: sc.protocol, port: t.port, request: sc.request, seconds,
      connections: s.connections, rate: s.rate, fixedGen: s.fixedGen as 'wrk' | 'hey', tmp,
    });
    for (const t of measured) await runLoad(spec(t, 'closed', s.warmupSeconds), t.pid, upstreamPid);
    for (let round = 0; round < s.rounds; round++) {
      const order = measured.map((_, i) => measured[(i + round) % measured.length]);
      for (const kind of s.kinds) {
        for (const t of order) {
          const m = await runLoad(spec(t, kind, s.seconds), t.pid, upstreamPid);
          records.push({ ...m, scenario: sc.name, kind, target: t.name, round });
          log(`  ${sc.name} ${kind} round ${round + 1} ${t.name.padEnd(8)} ${Math.round(m.rps).toString().padStart(6)} req/s  p50 ${fmt(m.p50)}  p99 ${fmt(m.p99)} ms  errors ${m.non2xx + m.socketErrors}  proxy CPU ${m.proxyCpu.toFixed(2)} s`);
        }
      }
    }
    // Keep the order the table reads in: direct, nginx, meshgate.
    records.sort((a, b) => a.kind.localeCompare(b.kind) || TARGETS.indexOf(a.target) - TARGETS.indexOf(b.target) || a.round - b.round);
  } finally {
    await mg.stop();
    await nginx.stop();
  }
  return records;
}

const fmt = (x: number | null) => (x === null ? '–' : x.toFixed(2));

main().then((code) => process.exit(code), (e: Error) => {
  log(e.message);
  process.exit(1);
});
