// meshgate as a user runs it: `bin/meshgate up` on a folder of the scenario's YAML, quiet
// logging (a log line per request would measure the terminal), ready when /healthz/ready
// says so.
import { spawn, execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitFor, captureTail, getJson } from './util.ts';
import { treePids } from './procstat.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const BIN = join(ROOT, 'bin', 'meshgate');

export interface Meshgate {
  pid: number;
  admin: number;
  health: number;
  /** Concurrency actually asked for (null: the flag does not exist in this build). */
  concurrency: number | null;
  output(): string;
  /** The applied config version, from the admin port's server_info (cheap at any config size). */
  version(): Promise<string | null>;
  stop(): Promise<void>;
}

let concurrencyFlag: boolean | null = null;

/** Whether this build's `up` takes --concurrency (the flag arrived with multi-worker support). */
export function hasConcurrencyFlag(): boolean {
  if (concurrencyFlag !== null) return concurrencyFlag;
  try {
    const help = execFileSync(BIN, ['up', '--help'], { encoding: 'utf8', cwd: ROOT, timeout: 15_000 });
    concurrencyFlag = /--concurrency\b/.test(help);
  } catch {
    concurrencyFlag = false;
  }
  return concurrencyFlag;
}

export async function writeConfig(dir: string, files: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
}

export async function startMeshgate(configDir: string, workers: number, readyMs = 60_000): Promise<Meshgate> {
  const admin = await freePort();
  const health = await freePort();
  const args = ['up', '--config', configDir, '--admin-port', String(admin), '--health-port', String(health), '--metrics-port', String(await freePort()),
    '--discovery-port', String(await freePort()), '--debug-port', String(await freePort()), '--log-level', 'warn'];
  const concurrency = hasConcurrencyFlag() ? workers : null;
  if (concurrency !== null) args.push('--concurrency', String(concurrency));
  const child = spawn(BIN, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const output = captureTail(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const pids = treePids(child.pid!);
    child.kill('SIGTERM');
    const t = setTimeout(() => { for (const p of pids) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }, 8000);
    await exited;
    clearTimeout(t);
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`meshgate exited with ${child.exitCode}`);
      const r = await fetch(`http://127.0.0.1:${health}/healthz/ready`, { signal: AbortSignal.timeout(2000) }).catch(() => null);
      return r?.status === 200;
    }, readyMs, 'meshgate ready', 100);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n--- meshgate output ---\n${output()}`);
  }
  return {
    pid: child.pid!,
    admin,
    health,
    concurrency,
    output,
    async version() {
      const info = await getJson<{ version?: string | null }>(`http://127.0.0.1:${admin}/server_info`);
      return info?.version ?? null;
    },
    stop,
  };
}
