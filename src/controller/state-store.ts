import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { FlotillaError, errorMessage } from '../common/errors.js';

/**
 * The desired state on disk. `save` writes a temporary file, flushes it and
 * renames it over the old one, so a crash at any moment leaves either the old
 * or the new state, never a torn file.
 */
export class StateStore<T> {
  constructor(private readonly path: string) {}

  load(): T | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `the state file ${this.path} is not valid JSON (${errorMessage(error)}); move it away to start empty`,
      );
    }
  }

  save(state: T): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const temporary = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(temporary, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);
    const dir = openSync(dirname(this.path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }

  clear(): void {
    rmSync(this.path, { force: true });
  }
}
