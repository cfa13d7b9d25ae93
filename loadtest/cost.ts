// `node loadtest/cost.ts [--scenario plain] [--duration 5s] [--rounds 3] [--connections 50]`:
// what one request costs the proxy in CPU work, counted by the processor rather than timed:
// instructions and cycles per request, user and kernel apart, for nginx and meshgate on the
// same routing under the same closed-loop wrk load (interleaved rounds).
//
// Why a second tool next to `npm run loadtest`: req/s ratios on a shared 2-core machine move
// with whatever else runs on the host (nginx's CPU per request was 21 µs on a quiet day and
// 30-58 on others). Instruction counts do not: they are the figure to compare two builds of
// the request path by. Cycles follow the machine's state and are printed for scale.
//
// Needs `perf` (Debian's linux-perf) and permission to count another process's events
// (root, or kernel.perf_event_paranoid ≤ 1 for the user half only).
import { parseArgs } from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SCENARIOS, type Ctx } from './scenarios.ts';
import { startUpstream } from './upstream-process.ts';
import { selfSigned } from './certs.ts';
import { writeConfig, startMeshgate, ROOT } from './meshgate.ts';
import { startNginx } from './nginx.ts';
import { freePort } from './util.ts';

function log(line: string): void {
  process.stderr.write(`[cost] ${line}\n`);
}

/** Counted events of one process tree over one wrk run. */
interface Counts { requests: number; instrUser: number; instrKernel: number; cyclesUser: number; cyclesKernel: number }

const EVENTS = ['instructions:u', 'instructions:k', 'cycles:u', 'cycles:k'];

/** The process and its children (nginx workers, meshgate --concurrency workers). */
function tree(pid: number): number[] {
  const r = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' });
  const kids = r.stdout.split('\n').filter(Boolean).map(Number);
  return [pid, ...kids.flatMap(tree)];
}

async function measure(pids: number[], url: string, host: string, headers: Record<string, string>, seconds: number, connections: number): Promise<Counts> {
  const perf = spawn('perf', ['stat', '-x', ',', '-e', EVENTS.join(','), '-p', pids.join(','), '--', 'sleep', String(seconds + 0.5)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  perf.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const done = new Promise<number>((res) => perf.once('exit', (c) => res(c ?? 1)));
  await new Promise((r) => setTimeout(r, 200)); // perf attached before the first request
  const hdrs = Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  const wrk = spawnSync('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-H', `Host: ${host}`, ...hdrs, url], { encoding: 'utf8', timeout: (seconds + 60) * 1000 });
  if (wrk.status !== 0) throw new Error(`wrk failed: ${wrk.stderr}`);
  const m = /(\d+) requests in/.exec(wrk.stdout);
  if (m === null) throw new Error(`wrk printed no request count:\n${wrk.stdout}`);
  if (/Non-2xx/.test(wrk.stdout)) throw new Error(`non-2xx answers under load:\n${wrk.stdout}`);
  if ((await done) !== 0) throw new Error(`perf stat failed: ${err}`);
  const value = (ev: string): number => {
    const line = err.split('\n').find((l) => l.split(',')[2] === ev);
    const n = line === undefined ? NaN : Number(line.split(',')[0]);
    if (!Number.isFinite(n)) throw new Error(`perf stat did not count ${ev} (is perf allowed to count this process?):\n${err}`);
    return n;
  };
  return { requests: Number(m[1]), instrUser: value('instructions:u'), instrKernel: value('instructions:k'), cyclesUser: value('cycles:u'), cyclesKernel: value('cycles:k') };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string', default: 'plain' },
      duration: { type: 'string', default: '5s' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
    },
  });
  const sc = SCENARIOS.find((s) => s.name === values.scenario);
  if (sc === undefined || sc.protocol !== 'http1') throw new Error(`--scenario: "${values.scenario}" is not a plain HTTP/1.1 scenario (${SCENARIOS.filter((s) => s.protocol === 'http1').map((s) => s.name).join(', ')})`);
  const dur = /^(\d+)s$/.exec(values.duration!);
  if (dur === null) throw new Error(`--duration: "${values.duration}" is not a whole number of seconds (5s)`);
  const seconds = Number(dur[1]);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);
  if (spawnSync('perf', ['--version']).status !== 0) throw new Error('perf is not installed (apt-get install linux-perf)');

  const work = await mkdtemp(join(tmpdir(), 'meshgate-cost-'));
  const upstream = await startUpstream();
  const stops: (() => Promise<void>)[] = [];
  try {
    const ports = upstream.ports;
    const pem = selfSigned('bench.local');
    const base: Ctx = { up: ports, listen: 0, pem, certFile: '', keyFile: '' };
    const nginxCtx: Ctx = { ...base, listen: await freePort() };
    const meshCtx: Ctx = { ...base, listen: await freePort() };
    const nginx = await startNginx(join(work, 'nginx'), 1, sc.nginx(nginxCtx));
    stops.push(() => nginx.stop());
    await writeConfig(join(work, 'meshgate'), sc.meshgate(meshCtx));
    const mg = await startMeshgate(join(work, 'meshgate'), 1);
    stops.push(() => mg.stop());
    const targets = [
      { name: 'nginx', pid: nginx.pid, port: nginxCtx.listen },
      { name: 'meshgate', pid: mg.pid, port: meshCtx.listen },
    ];
    const totals = new Map<string, Counts[]>(targets.map((t) => [t.name, []]));
    const run = (t: typeof targets[number], s: number) => measure(tree(t.pid), `http://127.0.0.1:${t.port}${sc.request.path}`, sc.request.host, sc.request.headers, s, connections);
    for (const t of targets) await run(t, 2); // warm-up: JIT, pools, nginx's upstream keep-alive
    for (let round = 0; round < rounds; round++) {
      for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
        const c = await run(t, seconds);
        totals.get(t.name)!.push(c);
        log(`${sc.name} round ${round + 1} ${t.name.padEnd(8)} ${(c.requests / seconds).toFixed(0).padStart(6)} req/s  ${per(c, 'instrUser')} + ${per(c, 'instrKernel')} instructions/req (user + kernel)`);
      }
    }
    const rows = targets.map((t) => ({ name: t.name, c: sum(totals.get(t.name)!) }));
    process.stdout.write(`\nscenario ${sc.name}, closed loop ${connections} connections, ${rounds} × ${seconds} s, one worker each (per request, summed over rounds):\n\n`);
    process.stdout.write('| target | instructions user | instructions kernel | cycles user | cycles kernel |\n| --- | ---: | ---: | ---: | ---: |\n');
    for (const r of rows) process.stdout.write(`| ${r.name} | ${per(r.c, 'instrUser')} | ${per(r.c, 'instrKernel')} | ${per(r.c, 'cyclesUser')} | ${per(r.c, 'cyclesKernel')} |\n`);
    const [n, m] = [rows[0].c, rows[1].c];
    const ratio = (k: keyof Counts) => ((m[k] / m.requests) / (n[k] / n.requests)).toFixed(2);
    const all = (c: Counts) => (c.instrUser + c.instrKernel) / c.requests;
    process.stdout.write(`\nmeshgate/nginx per request: instructions user ${ratio('instrUser')}, kernel ${ratio('instrKernel')}, all ${(all(m) / all(n)).toFixed(2)}; cycles user ${ratio('cyclesUser')}, kernel ${ratio('cyclesKernel')}\n`);
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {});
    await upstream.stop();
    await rm(work, { recursive: true, force: true });
  }
}

function sum(cs: Counts[]): Counts {
  const out: Counts = { requests: 0, instrUser: 0, instrKernel: 0, cyclesUser: 0, cyclesKernel: 0 };
  for (const c of cs) for (const k of Object.keys(out) as (keyof Counts)[]) out[k] += c[k];
  return out;
}

function per(c: Counts, k: keyof Counts): string {
  return Math.round(c[k] / c.requests).toLocaleString('en-US');
}

main().catch((e: unknown) => {
  process.stderr.write(`cost: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
