import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { FlotillaError, errorMessage } from '../common/errors.js';

/** Writes all of `text`, however many short writes the kernel makes of it. */
export function writeAll(fd: number, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  let offset = 0;
  while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
}

function fsyncDir(path: string): void {
  const dir = openSync(path, 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * The desired state on disk. `save` writes a temporary file in full, flushes it
 * and renames it over the old one, so a crash at any moment leaves either the
 * old or the new state, never a torn file. `load` returns the parsed JSON; its
 * shape and version are checked by the checkpoint module.
 */
export class StateStore {
  constructor(readonly path: string) {}

  load(): unknown {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new FlotillaError(
        'STATE_INVALID',
        `the state file ${this.path} is not valid JSON (${errorMessage(error)}); move it away to start empty`,
      );
    }
  }

  save(state: unknown): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const temporary = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(temporary, 'w', 0o600);
    try {
      writeAll(fd, `${JSON.stringify(state, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);
    fsyncDir(dirname(this.path));
  }

  clear(): void {
    rmSync(this.path, { force: true });
  }
}
