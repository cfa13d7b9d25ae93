// A real redis-server for tests: one per test file, on a free loopback port, in a temp dir,
// nothing persisted. CI installs redis-server from Debian's packages (.ci/run); set
// REDIS_SERVER to use another binary.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisServer {
  port: number;
  url: string;
  /** Kills the server at once (SIGKILL: no goodbye to clients, as when a node dies). */
  kill(): Promise<void>;
  /** Freezes the server (SIGSTOP): connections stay open, nothing answers, as with a hung node. */
  pause(): void;
  /** Thaws a paused server (SIGCONT). */
  resume(): void;
  /** Starts it again on the same port (empty: nothing was persisted). */
  restart(): Promise<void>;
  /** Kills it and removes its temp dir. */
  stop(): Promise<void>;
}

function redisBinary(): string {
  if (process.env.REDIS_SERVER) return process.env.REDIS_SERVER;
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) if (existsSync(p)) return p;
  return 'redis-server';
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when the server answers PING, or rejects after `ms`. */
async function waitForPing(port: number, ms: number, proc: ChildProcess, output: () => string): Promise<void> {
  const end = Date.now() + ms;
  for (let attempt = 0; attempt < 500; attempt++) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: ${output()}`);
    if (await ping(port)) return;
    if (Date.now() > end) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${ms} ms: ${output()}`);
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(500, () => done(false));
    sock.once('error', () => done(false));
    sock.on('data', (d) => { buf += d.toString(); if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
    sock.once('connect', () => sock.write('PING\r\n'));
  });
}

export async function startRedis(): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'meshgate-redis-'));
  const bin = redisBinary();
  let proc: ChildProcess | null = null;
  let port = 0;

  async function launch(): Promise<void> {
    let out = '';
    const p = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout!.on('data', (d) => { out = (out + d.toString()).slice(-2000); });
    p.stderr!.on('data', (d) => { out = (out + d.toString()).slice(-2000); });
    const spawnError = new Promise<never>((_, reject) => p.once('error', (e) => reject(new Error(`cannot run ${bin}: ${e.message} (install redis-server or set REDIS_SERVER)`))));
    spawnError.catch(() => undefined);
    proc = p;
    await Promise.race([waitForPing(port, 5000, p, () => out), spawnError]);
  }

  async function kill(): Promise<void> {
    const p = proc;
    proc = null;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  // Another process may take the free port between our probe and redis binding it: retry.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await launch();
      lastErr = null;
      break;
    } catch (err) {
      lastErr = err;
      await kill();
    }
  }
  if (lastErr) {
    await rm(dir, { recursive: true, force: true });
    throw lastErr;
  }

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    pause() { proc?.kill('SIGSTOP'); },
    resume() { proc?.kill('SIGCONT'); },
    async restart() {
      await kill();
      await launch();
    },
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
