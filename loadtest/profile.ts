// `node loadtest/profile.ts [--scenario plain] [--duration 10s] [--connections 50] [--out DIR]`:
// where meshgate's CPU goes under closed-loop wrk load. Starts the loadtest upstream and
// `meshgate up --concurrency 1` on the scenario's config with node's --cpu-prof, drives it with
// wrk (after an unmeasured warm-up, so the profile is of optimised code), stops meshgate
// cleanly (the profile is written at exit) and prints the top functions by self time and by
// file. The .cpuprofile in DIR opens in Chrome DevTools (Performance → Load profile) or
// speedscope for a flame graph.
//
// `--perf` records on-CPU samples with Linux perf instead (meshgate runs with
// --perf-basic-prof so JIT frames have names): kernel time by the syscall that entered it,
// user time by the nearest JS function. Needs `perf` and root (or perf_event_paranoid ≤ 1).
//
// Any scenario (wrk drives HTTP/1.1 and TLS, h2load HTTP/2): it is for looking at the
// request path, not for comparing with nginx (that is `npm run loadtest`).
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { SCENARIOS, type Ctx } from './scenarios.ts';
import { startUpstream } from './upstream-process.ts';
import { selfSigned } from './certs.ts';
import { writeConfig, ROOT } from './meshgate.ts';
import { freePort, waitFor, captureTail } from './util.ts';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

function log(line: string): void {
  process.stderr.write(`[profile] ${line}\n`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', default: 'plain' },
      duration: { type: 'string', default: '10s' },
      connections: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '3s' },
      out: { type: 'string' },
      top: { type: 'string', default: '40' },
      perf: { type: 'boolean', default: false },
    },
  });
  const sc = SCENARIOS.find((s) => s.name === values.scenario);
  if (sc === undefined) throw new Error(`--scenario: "${values.scenario}" is not one of ${SCENARIOS.map((s) => s.name).join(', ')}`);
  const dur = /^(\d+)s$/.exec(values.duration!);
  if (dur === null) throw new Error(`--duration: "${values.duration}" is not a whole number of seconds (10s)`);
  const work = await mkdtemp(join(tmpdir(), 'meshgate-profile-'));
  const out = values.out ?? join(work, 'prof');

  const upstream = await startUpstream();
  let gw: ReturnType<typeof spawn> | null = null;
  let gwPid = 0;
  try {
    const ports = upstream.ports;
    const pem = selfSigned('bench.local');
    const ctx: Ctx = { up: ports, listen: await freePort(), pem, certFile: '', keyFile: '' };
    await writeConfig(join(work, 'config'), sc.meshgate(ctx));
    const health = await freePort();
    // --perf-basic-prof also turns on V8's log: kept beside the profile, not in the repo.
    const profArgs = values.perf ? ['--perf-basic-prof', '--no-logfile-per-isolate', `--logfile=${join(out, 'v8.log')}`] : ['--cpu-prof', '--cpu-prof-dir', out];
    const args = [...profArgs, join(ROOT, 'cli', 'main.ts'), 'up', '--config', join(work, 'config'),
      '--admin-port', String(await freePort()), '--health-port', String(health), '--metrics-port', String(await freePort()),
      '--discovery-port', String(await freePort()), '--debug-port', String(await freePort()), '--log-level', 'warn', '--concurrency', '1'];
    gw = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    gwPid = gw.pid ?? 0;
    const tail = captureTail(gw);
    await waitFor(async () => {
      if (gw!.exitCode !== null) throw new Error(`meshgate exited:\n${tail()}`);
      const r = await fetch(`http://127.0.0.1:${health}/healthz/ready`, { signal: AbortSignal.timeout(2000) }).catch(() => null);
      return r?.status === 200;
    }, 60_000, 'meshgate ready', 100);
    const hdrs = Object.entries(sc.request.headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
    // wrk for HTTP/1.1 (https:// for TLS), h2load for HTTP/2 (10 streams per connection, as the harness)
    const conns = Number(values.connections);
    const wrk = (d: string) => sc.protocol === 'h2'
      ? spawnSync('h2load', ['-t1', `-c${Math.max(1, Math.round(conns / 10))}`, '-m10', '-D', d.replace(/s$/, ''), '-H', `:authority: ${sc.request.host}`, ...hdrs, `https://127.0.0.1:${ctx.listen}${sc.request.path}`], { encoding: 'utf8', timeout: 120_000 })
      : spawnSync('wrk', ['-t1', `-c${conns}`, `-d${d}`, '--timeout', '5s', '-H', `Host: ${sc.request.host}`, ...hdrs, `${sc.protocol === 'https' ? 'https' : 'http'}://127.0.0.1:${ctx.listen}${sc.request.path}`], { encoding: 'utf8', timeout: 120_000 });
    log(`warm-up ${values.warmup}`);
    wrk(values.warmup!);
    log(`load ${values.duration}, ${values.connections} connections`);
    let perf: ReturnType<typeof spawn> | null = null;
    if (values.perf) {
      await mkdir(out, { recursive: true });
      perf = spawn('perf', ['record', '-F', '997', '-g', '-p', String(gw.pid), '-o', join(out, 'perf.data'), '--', 'sleep', String(Math.max(1, Number(dur[1]) - 1))], { stdio: ['ignore', 'ignore', 'pipe'] });
    }
    const r = wrk(values.duration!);
    if (perf !== null) await new Promise<void>((res) => perf!.exitCode !== null ? res() : perf!.once('exit', () => res()));
    if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
    process.stdout.write(r.stdout.split('\n').filter((l) => /Requests\/sec|Latency |Non-2xx|errors|finished in|^requests:|^status codes:/.test(l)).join('\n') + '\n');
    const exited = new Promise<void>((res) => gw!.once('exit', () => res()));
    gw.kill('SIGTERM');
    await exited;
    gw = null;
  } finally {
    gw?.kill('SIGKILL');
    await upstream.stop();
  }

  if (values.perf) {
    perfSummary(join(out, 'perf.data'), gwPid, Number(values.top));
    log(`perf data: ${join(out, 'perf.data')}`);
    return;
  }
  const files = (await readdir(out)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${out} (did meshgate exit cleanly?)`);
  const file = join(out, files.sort().at(-1)!);
  summarize(JSON.parse(await readFile(file, 'utf8')) as CpuProfile, Number(values.top));
  log(`profile: ${file}`);
  if (values.out === undefined) log(`(in a temp dir; pass --out DIR to keep it elsewhere)`);
  else await rm(join(work, 'config'), { recursive: true, force: true });
}

/**
 * On-CPU samples from `perf record` (kernel included): the honest split between syscalls and
 * JS, where --cpu-prof's wall-clock samples also land on a write the process was preempted
 * in. User samples are charged to the nearest JS frame, so a builtin or a C++ call (string
 * flattening, a megamorphic property load, a WriteWrap) counts where the JS asked for it.
 */
function perfSummary(data: string, pid: number, top: number): void {
  dedupePerfMap(`/tmp/perf-${pid}.map`);
  const r = spawnSync('perf', ['script', '-i', data, '-F', 'ip,sym', '--no-inline'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`perf script failed: ${r.stderr}`);
  let total = 0;
  let kernel = 0;
  const syscalls = new Map<string, number>();
  const byJs = new Map<string, number>();
  for (const block of r.stdout.split('\n\n')) {
    const frames = block.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
      const sp = l.indexOf(' ');
      return { ip: l.slice(0, sp), sym: l.slice(sp + 1) };
    });
    if (frames.length === 0) continue;
    total++;
    if (frames[0].ip.startsWith('ffffffff')) {
      kernel++;
      // The user frame that entered the kernel: write, read, epoll_pwait…
      const entry = frames.find((f) => !f.ip.startsWith('ffffffff'));
      const k = entry?.sym.replace(/^__GI___libc_/, '') ?? '(no user frame)';
      syscalls.set(k, (syscalls.get(k) ?? 0) + 1);
      continue;
    }
    const js = frames.find((f) => f.sym.startsWith('JS:'));
    const key = js !== undefined
      ? js.sym.replace(/^JS:[*+~^]?'/, '').replace(`file://${ROOT}/`, '')
      : `native ${frames[0].sym.slice(0, 70)}`;
    byJs.set(key, (byJs.get(key) ?? 0) + 1);
  }
  if (total === 0) throw new Error('perf recorded no samples');
  const user = total - kernel;
  const pct = (n: number, of: number) => `${((100 * n) / of).toFixed(1).padStart(5)}%`;
  process.stdout.write(`\non-CPU samples: ${total}; kernel ${pct(kernel, total).trim()}, user ${pct(user, total).trim()}\n\nkernel time by the call that entered it (% of all samples):\n`);
  for (const [k, n] of [...syscalls].sort((a, b) => b[1] - a[1]).slice(0, 8)) process.stdout.write(`${pct(n, total)}  ${k}\n`);
  process.stdout.write(`\nuser time by nearest JS function, builtins and C++ it called included (% of user samples):\n`);
  for (const [k, n] of [...byJs].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(n, user)}  ${k}\n`);
}

/**
 * V8 reuses code space: --perf-basic-prof's map file then holds stale entries whose ranges
 * overlap newer code, and perf names samples after the stale ones (startup's YAML parser
 * showing up under load). Keeps, for every address, the newest entry.
 */
function dedupePerfMap(file: string): void {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch { return; }
  const entries = text.split('\n').filter(Boolean).map((l) => {
    const a = l.indexOf(' ');
    const b = l.indexOf(' ', a + 1);
    return { start: parseInt(l.slice(0, a), 16), size: parseInt(l.slice(a + 1, b), 16), line: l };
  });
  const kept: { start: number; end: number; line: string }[] = [];
  const taken: [number, number][] = []; // sorted by start
  const overlaps = (s: number, e: number): boolean => {
    let lo = 0;
    let hi = taken.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (taken[mid][0] < s) lo = mid + 1; else hi = mid; }
    return (lo > 0 && taken[lo - 1][1] > s) || (lo < taken.length && taken[lo][0] < e);
  };
  for (let i = entries.length - 1; i >= 0; i--) {
    const { start, size, line } = entries[i];
    const end = start + size;
    if (overlaps(start, end)) continue;
    let lo = 0;
    let hi = taken.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (taken[mid][0] < start) lo = mid + 1; else hi = mid; }
    taken.splice(lo, 0, [start, end]);
    kept.push({ start, end, line });
  }
  kept.sort((a, b) => a.start - b.start);
  writeFileSync(file, kept.map((k) => k.line).join('\n') + '\n');
}

/** Self time per function and per file, from the sample counts. */
function summarize(p: CpuProfile, top: number): void {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const total = p.timeDeltas.reduce((a, b) => a + b, 0);
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const url = n.callFrame.url.startsWith('file://') ? relative(ROOT, n.callFrame.url.slice(7)) : n.callFrame.url;
    const key = `${n.callFrame.functionName || '(anonymous)'}  ${url}${url ? ':' + (n.callFrame.lineNumber + 1) : ''}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const f = url || n.callFrame.functionName;
    file.set(f, (file.get(f) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  process.stdout.write(`\nself time by function (of ${(total / 1e6).toFixed(1)} s sampled):\n`);
  for (const [k, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(us)}  ${k}\n`);
  process.stdout.write(`\nself time by file:\n`);
  for (const [k, us] of [...file].sort((a, b) => b[1] - a[1]).slice(0, 25)) process.stdout.write(`${pct(us)}  ${k}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`profile: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
