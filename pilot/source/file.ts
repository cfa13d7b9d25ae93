// The file config source: a folder of YAML, watched. A burst of edits (an editor's
// write-rename-chmod, `cp -r` of a folder) becomes one rescan; only files whose size,
// mtime or content changed are parsed again, so a 10,000-resource folder with one edited
// file costs one parse.
//
// A file that stops parsing keeps its last good resources (the problem is reported); a
// file that is removed takes its resources with it.
import { watch, type FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { parseConfigText, listConfigFiles, displayPath } from '../../api/load.ts';
import type { Resource } from '../../api/istio.ts';
import type { Problem } from '../../api/problems.ts';

interface FileState {
  size: number;
  mtimeMs: number;
  text: string;
  /** Resources of the last version of this file that parsed. */
  resources: Resource[];
  /** Problems of the current version (YAML errors, unknown kinds). */
  problems: Problem[];
}

export interface SourceState {
  resources: Resource[];
  problems: Problem[];
}

export interface FileSourceOptions {
  /** Quiet time after the last file event before rescanning. */
  debounceMs?: number;
}

/** Emits `change` (SourceState) after each rescan that changed something, and `error`. */
export class FileSource extends EventEmitter {
  readonly dir: string;
  private readonly files = new Map<string, FileState>();
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<boolean> | null = null;
  private rescanAgain = false;
  private readonly debounceMs: number;

  constructor(dir: string, opts: FileSourceOptions = {}) {
    super();
    this.dir = dir;
    this.debounceMs = opts.debounceMs ?? 50;
  }

  /** Reads the folder once; call `watch()` to follow changes. */
  async load(): Promise<SourceState> {
    await this.rescan();
    return this.state();
  }

  watch(): void {
    // fs.watch is recursive on Linux since Node 20; a rescan compares every file anyway,
    // so which file an event names does not matter.
    this.watcher = watch(this.dir, { recursive: true }, () => this.schedule());
    this.watcher.on('error', (err) => this.emit('error', err));
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  state(): SourceState {
    const resources: Resource[] = [];
    const problems: Problem[] = [];
    for (const f of [...this.files.keys()].sort()) {
      const s = this.files.get(f)!;
      resources.push(...s.resources);
      problems.push(...s.problems);
    }
    return { resources, problems };
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.rescanAndEmit();
    }, this.debounceMs);
  }

  private async rescanAndEmit(): Promise<void> {
    if (this.scanning) {
      this.rescanAgain = true;
      return;
    }
    try {
      const changed = await this.rescan();
      if (changed) this.emit('change', this.state());
    } catch (err) {
      this.emit('error', err);
    }
    if (this.rescanAgain) {
      this.rescanAgain = false;
      await this.rescanAndEmit();
    }
  }

  /** Returns whether anything changed. */
  private async rescan(): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      let changed = false;
      const paths = await listConfigFiles(this.dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [] as string[];
        throw err;
      });
      const seen = new Set(paths);
      for (const p of [...this.files.keys()]) {
        if (!seen.has(p)) {
          this.files.delete(p);
          changed = true;
        }
      }
      for (const p of paths) {
        let st;
        try {
          st = await stat(p);
        } catch {
          continue; // removed between listing and stat; the next event rescans
        }
        const prev = this.files.get(p);
        if (prev && prev.size === st.size && prev.mtimeMs === st.mtimeMs) continue;
        let text: string;
        try {
          text = await readFile(p, 'utf8');
        } catch {
          continue;
        }
        if (prev && prev.text === text) {
          prev.size = st.size;
          prev.mtimeMs = st.mtimeMs;
          continue;
        }
        const parsed = parseConfigText(displayPath(this.dir, p), text);
        const hasYamlError = parsed.problems.some((q) => q.code === 'MG_CONFIG_YAML');
        // A file that no longer parses keeps the resources of its last good version:
        // a half-saved edit must not take routes away.
        const resources = hasYamlError && prev ? prev.resources : parsed.resources;
        const problems = hasYamlError && prev && prev.resources.length > 0
          ? parsed.problems.map((q) => q.code === 'MG_CONFIG_YAML' ? { ...q, message: `${q.message}; keeping the last version of this file that parsed` } : q)
          : parsed.problems;
        this.files.set(p, { size: st.size, mtimeMs: st.mtimeMs, text, resources, problems });
        changed = true;
      }
      return changed;
    };
    this.scanning = run();
    try {
      return await this.scanning;
    } finally {
      this.scanning = null;
    }
  }
}
