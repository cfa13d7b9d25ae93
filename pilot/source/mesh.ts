// The mesh config file, watched like the config folder: a change is read within a debounce
// of the event (a slow poll backs the watcher up), and only a change of content is reported.
//
// The folder is watched rather than the file: editors replace a file by renaming over it, and
// a Kubernetes ConfigMap volume swaps a `..data` symlink, neither of which an event on the old
// file would announce.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { dirname } from 'node:path';
import { parseMeshConfig, unreadableMeshConfig } from '../../api/meshconfig.ts';
import type { MeshConfigResult } from '../../api/meshconfig.ts';
import { displayPath } from '../../api/load.ts';

export interface MeshSourceOptions {
  /** Quiet time after the last file event before reading. */
  debounceMs?: number;
}

/** Emits `change` (MeshConfigResult) after each read whose outcome differs from the last. */
export class MeshConfigSource extends EventEmitter {
  readonly path: string;
  private readonly shown: string;
  private readonly debounceMs: number;
  private watcher: FSWatcher | null = null;
  private poller: NodeJS.Timeout | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reading = false;
  private readAgain = false;
  /** The text last read, or the error code when it could not be read. */
  private last: string | null = null;

  constructor(path: string, opts: MeshSourceOptions = {}) {
    super();
    this.path = path;
    this.shown = displayPath(dirname(path), path);
    this.debounceMs = opts.debounceMs ?? 50;
  }

  /** Reads the file once; call `watch()` to follow changes. */
  async load(): Promise<MeshConfigResult> {
    return (await this.read()).result;
  }

  watch(pollMs = 2000): void {
    try {
      this.watcher = watch(dirname(this.path), () => this.schedule());
      this.watcher.on('error', () => { this.watcher?.close(); this.watcher = null; });
    } catch {
      // The folder is gone: the poll reports the file as unreadable and notices its return.
    }
    this.poller = setInterval(() => this.schedule(), pollMs);
    this.poller.unref();
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.readAndEmit();
    }, this.debounceMs);
  }

  private async readAndEmit(): Promise<void> {
    if (this.reading) {
      this.readAgain = true;
      return;
    }
    this.reading = true;
    try {
      const { changed, result } = await this.read();
      if (changed) this.emit('change', result);
    } catch (err) {
      this.emit('error', err);
    } finally {
      this.reading = false;
    }
    if (this.readAgain) {
      this.readAgain = false;
      await this.readAndEmit();
    }
  }

  private async read(): Promise<{ changed: boolean; result: MeshConfigResult }> {
    let text: string;
    let key: string;
    try {
      text = await readFile(this.path, 'utf8');
      key = `text:${text}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      key = `error:${code}`;
      const changed = key !== this.last;
      this.last = key;
      return { changed, result: unreadableMeshConfig(this.shown, code) };
    }
    const changed = key !== this.last;
    this.last = key;
    return { changed, result: parseMeshConfig(this.shown, text) };
  }
}
