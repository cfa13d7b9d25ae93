// From raw runs to what a reader compares: medians over rounds per target, the ratios
// meshgate/nginx and meshgate/direct, the warnings that say when a number is not to be
// trusted, and the same tables as Markdown (terminal and README), JSON and an SVG chart.
import type { Measured, Kind } from './drivers.ts';

export type TargetName = 'direct' | 'nginx' | 'meshgate';
export const TARGETS: TargetName[] = ['direct', 'nginx', 'meshgate'];

export interface RunRecord extends Measured { scenario: string; kind: Kind; target: TargetName; round: number }

export interface Summary {
  scenario: string;
  kind: Kind;
  target: TargetName;
  rounds: number;
  requests: number;
  rps: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  errors: number;
  /** Proxy CPU seconds per round (mean). */
  proxyCpu: number;
  /** Proxy CPU per request in microseconds. */
  cpuUsPerReq: number | null;
  rssMb: number;
  /** Processes in the proxy's tree at most (1 + workers for nginx and meshgate --concurrency). */
  processes: number;
  /** Upstream CPU in cores (highest round): near 1 means the upstream, not the proxy, was the limit. */
  upstreamCores: number;
  /** Busy cores not used by proxy, upstream or generator (mean): other work on the machine. */
  otherCores: number;
}

export interface Ratio {
  scenario: string;
  kind: Kind;
  rpsVsNginx: number | null;
  rpsVsDirect: number | null;
  cpuPerReqVsNginx: number | null;
  /** p99 minus the direct target's p99, in ms. */
  p99AddedNginx: number | null;
  p99AddedMeshgate: number | null;
}

export interface ConfigApplyRow {
  virtualServices: number;
  yamlKb: number;
  startupMs: number;
  applyMs: number[];
  applyMedianMs: number;
  rssMb: number;
  peakRssMb: number;
  processes: number;
}

export interface Machine {
  nproc: number;
  cpuModel: string;
  node: string;
  nginx: string;
  wrk: string;
  kernel: string;
  commit: string;
  dirty: boolean;
  loadavgStart: number[];
  loadavgEnd: number[];
}

export interface Settings {
  scenarios: string[];
  seconds: number;
  rounds: number;
  connections: number;
  rate: number;
  workers: number;
  meshgateConcurrency: number | null;
  kinds: Kind[];
  fixedGen: string;
  warmupSeconds: number;
}

export interface Report {
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: Machine;
  settings: Settings;
  runs: RunRecord[];
  summary: Summary[];
  ratios: Ratio[];
  configApply: ConfigApplyRow[];
  skipped: { scenario: string; reason: string }[];
  warnings: string[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function medianOrNull(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? median(v) : null;
}

export function summarize(runs: RunRecord[]): Summary[] {
  const groups = new Map<string, RunRecord[]>();
  for (const r of runs) {
    const k = `${r.scenario}\0${r.kind}\0${r.target}`;
    const g = groups.get(k);
    if (g) g.push(r); else groups.set(k, [r]);
  }
  const out: Summary[] = [];
  for (const g of groups.values()) {
    const { scenario, kind, target } = g[0];
    const requests = g.reduce((a, r) => a + r.requests, 0);
    const cpu = g.reduce((a, r) => a + r.proxyCpu, 0);
    out.push({
      scenario, kind, target,
      rounds: g.length,
      requests,
      rps: median(g.map((r) => r.rps)),
      p50: medianOrNull(g.map((r) => r.p50)),
      p90: medianOrNull(g.map((r) => r.p90)),
      p99: medianOrNull(g.map((r) => r.p99)),
      errors: g.reduce((a, r) => a + r.non2xx + r.socketErrors, 0),
      proxyCpu: cpu / g.length,
      cpuUsPerReq: target === 'direct' || requests === 0 ? null : (cpu / requests) * 1e6,
      rssMb: Math.max(...g.map((r) => r.proxyRssKb)) / 1024,
      processes: Math.max(...g.map((r) => r.proxyProcesses)),
      upstreamCores: Math.max(...g.map((r) => r.upstreamCpu / r.wallSeconds)),
      otherCores: median(g.map((r) => r.otherCpu / r.wallSeconds)),
    });
  }
  return out;
}

const div = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null && b > 0 ? a / b : null);
const sub = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null ? a - b : null);

export function ratios(summary: Summary[]): Ratio[] {
  const out: Ratio[] = [];
  const seen = new Set<string>();
  for (const s of summary) {
    const key = `${s.scenario}\0${s.kind}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const of = (t: TargetName) => summary.find((x) => x.scenario === s.scenario && x.kind === s.kind && x.target === t);
    const d = of('direct');
    const n = of('nginx');
    const m = of('meshgate');
    out.push({
      scenario: s.scenario,
      kind: s.kind,
      rpsVsNginx: div(m?.rps, n?.rps),
      rpsVsDirect: div(m?.rps, d?.rps),
      cpuPerReqVsNginx: div(m?.cpuUsPerReq, n?.cpuUsPerReq),
      p99AddedNginx: sub(n?.p99, d?.p99),
      p99AddedMeshgate: sub(m?.p99, d?.p99),
    });
  }
  return out;
}

/** Sentences that tell the reader when a number should not be trusted as the proxy's. */
export function warnings(summary: Summary[], settings: Settings): string[] {
  const w: string[] = [];
  for (const s of summary) {
    const where = `${s.scenario} ${s.kind} ${s.target}`;
    if (s.errors > 0) w.push(`${where}: ${s.errors} errors (non-2xx or socket) in ${s.requests} requests`);
    if (s.kind === 'closed' && s.target !== 'direct' && s.upstreamCores >= 0.9) w.push(`${where}: the upstream used ${s.upstreamCores.toFixed(2)} cores — it may have capped this throughput`);
  }
  // One line per scenario: other processes' CPU is the same story for all its runs.
  const byScenario = new Map<string, number[]>();
  for (const s of summary) byScenario.set(s.scenario, [...(byScenario.get(s.scenario) ?? []), s.otherCores]);
  for (const [scenario, cores] of byScenario) {
    const max = Math.max(...cores);
    if (max >= 0.25) w.push(`${scenario}: other processes on the machine used up to ${max.toFixed(2)} cores (median ${median(cores).toFixed(2)}) during its runs — numbers likely disturbed`);
  }
  if (settings.meshgateConcurrency === null) w.push(`this meshgate build has no --concurrency flag: it ran its default worker count, nginx ran ${settings.workers}`);
  return w;
}

/** The hot-path targets from issue 3, each with this run's value; only those this run measured. */
export function goals(summary: Summary[], rs: Ratio[]): string[] {
  const out: string[] = [];
  const mark = (ok: boolean) => (ok ? 'met' : 'not met');
  const plainClosed = rs.find((r) => r.scenario === 'plain' && r.kind === 'closed');
  if (plainClosed?.rpsVsNginx != null) out.push(`plain, closed loop: meshgate/nginx req/s ${plainClosed.rpsVsNginx.toFixed(2)} (target ≥ 0.80 at equal workers): ${mark(plainClosed.rpsVsNginx >= 0.8)}`);
  const plainFixed = rs.find((r) => r.scenario === 'plain' && r.kind === 'fixed');
  if (plainFixed?.p99AddedMeshgate != null) out.push(`plain, fixed rate: p99 added over direct ${plainFixed.p99AddedMeshgate.toFixed(2)} ms (target ≤ 1 ms): ${mark(plainFixed.p99AddedMeshgate <= 1)}`);
  const rps = (sc: string, t: TargetName) => summary.find((x) => x.scenario === sc && x.kind === 'closed' && x.target === t)?.rps;
  const flat = div(rps('routes-1k', 'meshgate'), rps('plain', 'meshgate'));
  if (flat != null) out.push(`route lookup flat with config size: meshgate routes-1k/plain req/s ${flat.toFixed(2)} (target ≥ 0.95; nginx ${num(div(rps('routes-1k', 'nginx'), rps('plain', 'nginx')))}): ${mark(flat >= 0.95)}`);
  // Issue 4: the policy stages on the allowed path cost at most 15% of throughput.
  const pol = div(rps('policies', 'meshgate'), rps('plain', 'meshgate'));
  if (pol != null) out.push(`policies (JWT + ALLOW + local rate limit) vs none: meshgate policies/plain req/s ${pol.toFixed(2)} (${int(rps('policies', 'meshgate'))} vs ${int(rps('plain', 'meshgate'))}; target ≥ 0.85): ${mark(pol >= 0.85)}`);
  return out;
}

// ---- formatting ----

function num(x: number | null | undefined, digits = 2): string {
  if (x == null || !Number.isFinite(x)) return '–';
  return x.toFixed(digits);
}

function int(x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return '–';
  return Math.round(x).toLocaleString('en-US');
}

function loadLabel(kind: Kind, settings: Settings): string {
  return kind === 'closed' ? `closed, ${settings.connections} conns` : `fixed ${settings.rate}/s${settings.fixedGen === 'hey' ? ' (hey)' : ''}`;
}

function mdTable(head: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const sep = align.map((a) => (a === 'r' ? '---:' : '---'));
  return [head, sep, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

export function summaryTable(summary: Summary[], settings: Settings): string {
  const rows = summary.map((s) => [
    s.scenario, loadLabel(s.kind, settings), s.target, int(s.rps), num(s.p50), num(s.p90), num(s.p99), int(s.errors),
    s.target === 'direct' ? '–' : num(s.proxyCpu), s.target === 'direct' ? '–' : num(s.cpuUsPerReq, 0), s.target === 'direct' ? '–' : `${num(s.rssMb, 0)} (${s.processes})`,
  ]);
  return mdTable(['scenario', 'load', 'target', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'errors', 'proxy CPU s', 'CPU µs/req', 'RSS MB (procs)'], rows,
    ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']);
}

export function ratioTable(rs: Ratio[], settings: Settings): string {
  const rows = rs.map((r) => [
    r.scenario, loadLabel(r.kind, settings), num(r.rpsVsNginx), num(r.rpsVsDirect), num(r.cpuPerReqVsNginx),
    num(r.p99AddedNginx), num(r.p99AddedMeshgate),
  ]);
  return mdTable(['scenario', 'load', 'req/s meshgate/nginx', 'req/s meshgate/direct', 'CPU per req meshgate/nginx', 'p99 added by nginx, ms', 'p99 added by meshgate, ms'], rows,
    ['l', 'l', 'r', 'r', 'r', 'r', 'r']);
}

export function configApplyTable(rows: ConfigApplyRow[]): string {
  return mdTable(['VirtualServices', 'YAML KB', 'start → ready', 'file change → applied (median)', 'each edit, ms', 'RSS MB after', 'peak RSS MB'],
    rows.map((r) => [int(r.virtualServices), int(r.yamlKb), `${int(r.startupMs)} ms`, `${int(r.applyMedianMs)} ms`, r.applyMs.map((x) => int(x)).join(', '), num(r.rssMb, 0), num(r.peakRssMb, 0)]),
    ['r', 'r', 'r', 'r', 'l', 'r', 'r']);
}

export function machineLine(m: Machine): string {
  return `${m.nproc} cores (${m.cpuModel}), Linux ${m.kernel}, node ${m.node}, nginx ${m.nginx}, ${m.wrk}; meshgate ${m.commit.slice(0, 10)}${m.dirty ? ' with uncommitted changes' : ''}; load average at start ${m.loadavgStart.map((x) => x.toFixed(2)).join(' ')}`;
}

export function markdown(rep: Report, opts: { chart?: string; scenarios?: Record<string, string> } = {}): string {
  const s = rep.settings;
  const parts: string[] = [];
  parts.push(`Machine: ${machineLine(rep.machine)}.`);
  parts.push(`Command: \`${rep.command}\` — ${s.rounds} rounds of ${s.seconds} s per target and load, interleaved (direct, nginx, meshgate, rotating), after ${s.warmupSeconds} s of warm-up each; ` +
    `workers: nginx \`worker_processes ${s.workers}\`, meshgate ${s.meshgateConcurrency === null ? 'default (no --concurrency flag in this build)' : `\`--concurrency ${s.meshgateConcurrency}\``}.`);
  const ran = [...new Set(rep.summary.map((x) => x.scenario))];
  if (opts.scenarios && ran.length) parts.push(ran.map((n) => `- \`${n}\`: ${opts.scenarios![n] ?? ''}`).join('\n'));
  if (rep.summary.length) {
    parts.push(summaryTable(rep.summary, s));
    parts.push(ratioTable(rep.ratios, s));
    const proxied = rep.summary.filter((x) => x.kind === 'closed' && x.target !== 'direct');
    if (proxied.length) {
      const up = Math.max(...proxied.map((x) => x.upstreamCores));
      parts.push(`Upstream headroom: during the proxied closed-loop runs the upstream process used at most ${up.toFixed(2)} cores${up < 0.9 ? ', so it was not what limited the proxies' : ' — it may have limited them'}; the direct rows show what it serves on its own.`);
    }
    const g = goals(rep.summary, rep.ratios);
    if (g.length) parts.push(`Targets (issue 3):\n\n${g.map((x) => `- ${x}`).join('\n')}`);
  }
  if (rep.configApply.length) parts.push(`Control plane (\`config-apply\`): \`meshgate up\` on N VirtualServices in files of 100; one file edited, time until the gateway's applied version changes (admin port), and the process's RSS.\n\n${configApplyTable(rep.configApply)}`);
  if (rep.skipped.length) parts.push(rep.skipped.map((x) => `- skipped \`${x.scenario}\`: ${x.reason}`).join('\n'));
  if (rep.warnings.length) parts.push(`Warnings from this run:\n\n${rep.warnings.map((x) => `- ${x}`).join('\n')}`);
  if (opts.chart) parts.push(`![latency percentiles per scenario and target](${opts.chart})`);
  return parts.join('\n\n');
}

// ---- SVG chart: p50 / p90 / p99 per target, one panel per scenario and load ----

const COLORS: Record<TargetName, string> = { direct: '#8c8c8c', nginx: '#2b8a3e', meshgate: '#1c7ed6' };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export function svgChart(summary: Summary[], settings: Settings): string {
  const panels: { title: string; rows: Summary[] }[] = [];
  for (const s of summary) {
    const title = `${s.scenario} — ${loadLabel(s.kind, settings)}`;
    let p = panels.find((x) => x.title === title);
    if (!p) { p = { title, rows: [] }; panels.push(p); }
    p.rows.push(s);
  }
  const W = 360;
  const H = 230;
  const cols = 2;
  const top = 40;
  const width = W * cols;
  const height = top + H * Math.ceil(panels.length / cols);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  out.push(`<text x="10" y="18" font-size="14" font-weight="bold">Latency percentiles (ms), lower is better</text>`);
  TARGETS.forEach((t, i) => {
    out.push(`<rect x="${10 + i * 110}" y="26" width="10" height="10" fill="${COLORS[t]}"/><text x="${24 + i * 110}" y="35">${t}</text>`);
  });
  panels.forEach((p, i) => {
    const x0 = (i % cols) * W;
    const y0 = top + Math.floor(i / cols) * H;
    const plotX = x0 + 45;
    const plotY = y0 + 30;
    const plotW = W - 65;
    const plotH = H - 70;
    const max = niceMax(Math.max(...p.rows.flatMap((r) => [r.p50 ?? 0, r.p90 ?? 0, r.p99 ?? 0])));
    out.push(`<text x="${x0 + 10}" y="${y0 + 18}" font-weight="bold">${esc(p.title)}</text>`);
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      const y = plotY + plotH - (plotH * k) / 4;
      out.push(`<line x1="${plotX}" y1="${y}" x2="${plotX + plotW}" y2="${y}" stroke="#e5e5e5"/>`);
      out.push(`<text x="${plotX - 5}" y="${y + 4}" text-anchor="end" fill="#555">${+v.toPrecision(3)}</text>`);
    }
    const groups: ['p50' | 'p90' | 'p99', string][] = [['p50', 'p50'], ['p90', 'p90'], ['p99', 'p99']];
    const gw = plotW / groups.length;
    const bw = (gw - 16) / TARGETS.length;
    groups.forEach(([key, label], gi) => {
      const gx = plotX + gi * gw + 8;
      TARGETS.forEach((t, ti) => {
        const row = p.rows.find((r) => r.target === t);
        const v = row?.[key];
        if (v == null) return;
        const h = Math.max(1, (plotH * v) / max);
        const bx = gx + ti * bw;
        out.push(`<rect x="${bx.toFixed(1)}" y="${(plotY + plotH - h).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[t]}"><title>${t} ${label}: ${v.toFixed(3)} ms</title></rect>`);
        out.push(`<text x="${(bx + bw / 2 - 1).toFixed(1)}" y="${(plotY + plotH - h - 3).toFixed(1)}" text-anchor="middle" font-size="9">${v < 10 ? v.toFixed(2) : v.toFixed(1)}</text>`);
      });
      out.push(`<text x="${(gx + (gw - 16) / 2).toFixed(1)}" y="${plotY + plotH + 14}" text-anchor="middle">${label}</text>`);
    });
    out.push(`<line x1="${plotX}" y1="${plotY + plotH}" x2="${plotX + plotW}" y2="${plotY + plotH}" stroke="#333"/>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export const PERF_START = '<!-- perf:start -->';
export const PERF_END = '<!-- perf:end -->';

export const CONNECT_START = '<!-- connect:start -->';
export const CONNECT_END = '<!-- connect:end -->';

/** README text with the CONNECT benchmark's block replaced, or added right after the load-test table. */
export function replaceConnectSection(readme: string, body: string): string {
  const block = `${CONNECT_START}\n${body.trim()}\n${CONNECT_END}`;
  const a = readme.indexOf(CONNECT_START);
  const b = readme.indexOf(CONNECT_END);
  if (a >= 0 && b > a) return readme.slice(0, a) + block + readme.slice(b + CONNECT_END.length);
  const p = readme.indexOf(PERF_END);
  if (p >= 0) return `${readme.slice(0, p + PERF_END.length)}\n\n${block}${readme.slice(p + PERF_END.length)}`;
  return `${readme.replace(/\s*$/, '\n')}\n${block}\n`;
}

/** README text with the section between the markers replaced (or a Performance section appended). */
export function replacePerfSection(readme: string, body: string): string {
  const block = `${PERF_START}\n${body.trim()}\n${PERF_END}`;
  const a = readme.indexOf(PERF_START);
  const b = readme.indexOf(PERF_END);
  if (a >= 0 && b > a) return readme.slice(0, a) + block + readme.slice(b + PERF_END.length);
  return `${readme.replace(/\s*$/, '\n')}\n## Performance\n\n${block}\n`;
}
