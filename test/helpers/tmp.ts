// Temporary config folders for tests, removed when the test ends.
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export interface TempDir {
  path: string;
  write(rel: string, text: string): Promise<void>;
  remove(rel: string): Promise<void>;
  cleanup(): Promise<void>;
}

export async function tempDir(prefix = 'meshgate-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    async write(rel, text) {
      const p = join(path, rel);
      await mkdir(dirname(p), { recursive: true });
      // Write to a temp name and rename, as editors and `kubectl`-style tools do, so a
      // watcher never sees half a file.
      const t = `${p}.tmp-${process.pid}`;
      await writeFile(t, text);
      const { rename } = await import('node:fs/promises');
      await rename(t, p);
    },
    async remove(rel) {
      await rm(join(path, rel), { force: true });
    },
    async cleanup() {
      await rm(path, { recursive: true, force: true });
    },
  };
}

/** Polls `check` every 20 ms until it returns a truthy value or `ms` pass. */
export async function eventually<T>(check: () => T | Promise<T>, ms = 3000, what = 'condition'): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
