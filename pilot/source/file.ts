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
  private readonly watchers = new Map<string, FSWatcher>();
  private poller: NodeJS.Timeout | null = null;
  private watching = false;
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<boolean> | null = null;
  private rescanAgain = false;
  private readonly debounceMs: number;
  /** Folders seen by the last scan; each is watched. */
  private dirs: string[] = [];

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

  /**
   * Follows changes. Each folder gets its own (non-recursive) watcher: node's recursive
   * mode on Linux emulates recursion per file and was seen to miss a rename-over-file
   * (how editors and `kubectl cp` write). A rescan compares every file anyway, so which
   * file an event names does not matter. A slow poll backs the watchers up, for file
   * systems where events do not arrive at all (some network and container mounts).
   */
  watch(pollMs = 2000): void {
    this.watching = true;
    this.syncWatchers();
    this.poller = setInterval(() => this.schedule(), pollMs);
    this.poller.unref();
  }

  close(): void {
    this.watching = false;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private syncWatchers(): void {
    if (!this.watching) return;
    const want = new Set(this.dirs.length ? this.dirs : [this.dir]);
    for (const [d, w] of this.watchers) {
      if (!want.has(d)) {
        w.close();
        this.watchers.delete(d);
      }
    }
    for (const d of want) {
      if (this.watchers.has(d)) continue;
      try {
        const w = watch(d, () => this.schedule());
        w.on('error', () => { w.close(); this.watchers.delete(d); this.schedule(); });
        this.watchers.set(d, w);
      } catch {
        // The folder went away between the scan and now; the next scan sorts it out.
      }
    }
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
      const dirs: string[] = [];
      const paths = await listConfigFiles(this.dir, dirs).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [] as string[];
        throw err;
      });
      this.dirs = dirs;
      this.syncWatchers();
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
