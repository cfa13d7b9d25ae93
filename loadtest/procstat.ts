// CPU time and memory of a process tree, read from /proc: a proxy is its main process plus
// every worker it forked (nginx's workers, meshgate's --concurrency workers), so both are
// summed over all descendants of the pid we started.
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let ticksPerSecond = 0;

function clockTicks(): number {
  if (ticksPerSecond) return ticksPerSecond;
  try {
    ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    ticksPerSecond = 100;
  }
  return ticksPerSecond;
}

interface Stat { ppid: number; ticks: number }

// Fields after the command name, which sits in parentheses and may itself contain spaces
// or parentheses: hence the last ')'.
function readStat(pid: number): Stat | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

/** Every process's parent and CPU ticks, read once. */
export function snapshot(): Map<number, Stat> {
  const all = new Map<number, Stat>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const st = readStat(pid);
    if (st) all.set(pid, st);
  }
  return all;
}

function descendants(snap: Map<number, Stat>, root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, st] of snap) {
    const list = children.get(st.ppid);
    if (list) list.push(pid); else children.set(st.ppid, [pid]);
  }
  const out: number[] = [];
  const stack = snap.has(root) ? [root] : [];
  while (stack.length && out.length < 10_000) {
    const pid = stack.pop()!;
    out.push(pid);
    for (const c of children.get(pid) ?? []) stack.push(c);
  }
  return out;
}

/** The pid and all its live descendants. */
export function treePids(root: number): number[] {
  return descendants(snapshot(), root);
}

export function rssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export interface TreeUsage { cpuSeconds: number; peakRssKb: number; processes: number }

/**
 * Follows named process trees over one run (proxy, upstream, generator) from periodic
 * snapshots of /proc: CPU seconds of every process seen in a tree (a worker that exits
 * mid-run keeps the time it was last seen with), the peak of each tree's summed RSS, and
 * the CPU every other process on the machine used meanwhile — the other engineers' test
 * runs on a shared machine, which is what makes a run "disturbed".
 */
export class RunMeter {
  private roots: Map<string, number>;
  private start: Map<number, number>;
  private last = new Map<number, number>();
  private owner = new Map<number, string>();
  private peak = new Map<string, number>();
  private count = new Map<string, number>();
  private readonly self = process.pid;

  constructor(roots: Record<string, number | null>) {
    this.roots = new Map(Object.entries(roots).filter((e): e is [string, number] => e[1] !== null));
    const snap = snapshot();
    this.start = new Map([...snap].map(([pid, st]) => [pid, st.ticks]));
  }

  /** Adds a tree after construction (the generator, once it is spawned). */
  add(name: string, root: number): void {
    this.roots.set(name, root);
  }

  sample(): void {
    const snap = snapshot();
    for (const [pid, st] of snap) this.last.set(pid, st.ticks);
    for (const [name, root] of this.roots) {
      let rss = 0;
      const pids = descendants(snap, root);
      for (const pid of pids) {
        this.owner.set(pid, name);
        rss += rssKb(pid);
      }
      if (rss > (this.peak.get(name) ?? 0)) this.peak.set(name, rss);
      if (pids.length > (this.count.get(name) ?? 0)) this.count.set(name, pids.length);
    }
  }

  usage(name: string): TreeUsage {
    let ticks = 0;
    for (const [pid, who] of this.owner) if (who === name) ticks += (this.last.get(pid) ?? 0) - (this.start.get(pid) ?? 0);
    return { cpuSeconds: ticks / clockTicks(), peakRssKb: this.peak.get(name) ?? 0, processes: this.count.get(name) ?? 0 };
  }

  /** CPU seconds of processes in none of the trees (nor the harness itself). */
  otherCpuSeconds(): number {
    let ticks = 0;
    for (const [pid, t] of this.last) {
      if (this.owner.has(pid) || pid === this.self) continue;
      ticks += t - (this.start.get(pid) ?? 0);
    }
    return ticks / clockTicks();
  }
}

/** Summed RSS of a tree right now, in kB. */
export function treeRssKb(root: number): number {
  let kb = 0;
  for (const pid of treePids(root)) kb += rssKb(pid);
  return kb;
}
