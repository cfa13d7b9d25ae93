// Small helpers the harness shares: free loopback ports, bounded waiting, child output.
import net from 'node:net';
import type { ChildProcess } from 'node:child_process';

/** A loopback port that was free a moment ago (listen on 0, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns a value other than null/false, at most `ms` long. */
export async function waitFor<T>(check: () => Promise<T | null | false>, ms: number, what: string, everyMs = 50): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown = null;
  for (let i = 0; Date.now() < deadline && i < 1_000_000; i++) {
    try {
      const v = await check();
      if (v !== null && v !== false) return v;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** GET over loopback with a timeout; null on any failure. */
export async function getJson<T>(url: string, timeoutMs = 5000): Promise<T | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (r.status !== 200) return null;
    return (await r.json()) as T;
  } catch {
    return null;
  }
}

/** Keeps the last `max` characters a child wrote, for error messages. */
export function captureTail(child: ChildProcess, max = 8000): () => string {
  let out = '';
  const add = (d: Buffer) => {
    out += d.toString();
    if (out.length > max * 2) out = out.slice(-max);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => out.slice(-max);
}

export function fmtMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
