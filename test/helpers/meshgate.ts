// Runs real meshgate processes (bin/meshgate) for end-to-end tests, with free loopback
// ports, their logs captured for assertions and for the failure message.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { freePort } from './upstream.ts';
import { eventually } from './tmp.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(ROOT, 'bin', 'meshgate');

export interface Proc {
  child: ChildProcess;
  /** Everything the process wrote, stdout and stderr. */
  output(): string;
  /** Parsed JSON log lines (pino). */
  logs(): Record<string, unknown>[];
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function run(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Proc {
  const child = spawn(BIN, args, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    logs: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return {}; } }),
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** Runs a command to completion: exit code and output. */
export async function runToEnd(args: string[], opts: { cwd?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(BIN, args, { cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return { code, stdout, stderr };
}

export interface GatewayPorts { admin: number; health: number; metrics: number }

/** Free admin, health and metrics ports: parallel test processes never meet on 15000/15021/15090. */
export async function gatewayPorts(): Promise<GatewayPorts> {
  return { admin: await freePort(), health: await freePort(), metrics: await freePort() };
}

/** `--admin-port A --health-port H --metrics-port M` for `up` and `gateway`. */
export function portFlags(p: GatewayPorts): string[] {
  return ['--admin-port', String(p.admin), '--health-port', String(p.health), '--metrics-port', String(p.metrics)];
}

/** The gateway's Prometheus text from /stats/prometheus. */
export async function scrape(metricsPort: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${metricsPort}/stats/prometheus`);
  if (r.status !== 200) throw new Error(`/stats/prometheus answered ${r.status}`);
  return r.text();
}

/**
 * Waits until the gateway answers /healthz/ready with 200. The bound is generous: with the
 * whole suite running on two cores, `up --concurrency 2` (pilot and two gateway processes,
 * each compiling its TypeScript) has taken over 15 s to become ready.
 */
export async function waitReady(p: Proc, health: number, ms = 30_000): Promise<void> {
  await eventually(async () => {
    if (p.child.exitCode !== null) throw new Error(`meshgate exited with ${p.child.exitCode}:\n${p.output()}`);
    const r = await fetch(`http://127.0.0.1:${health}/healthz/ready`).catch(() => null);
    return r?.status === 200;
  }, ms, `gateway ready on :${health}\n--- output ---\n${p.output().slice(-4000)}`);
}

export async function configDump(admin: number): Promise<{ version: string; config: import('../../api/proxyconfig.ts').ProxyConfig }> {
  const r = await fetch(`http://127.0.0.1:${admin}/config_dump`);
  return (await r.json()) as { version: string; config: import('../../api/proxyconfig.ts').ProxyConfig };
}
