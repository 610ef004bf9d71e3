import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { FlotillaError, errorMessage } from '../common/errors.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

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

  /**
   * Claims the state for this process with a lock file holding its pid, so
   * two control planes never manage one instance. A lock left by a process
   * that is gone (kill -9) is taken over.
   */
  lock(instance: string): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const lockPath = `${this.path}.lock`;
    const holder = Number(readFileSync(lockPath, { encoding: 'utf8', flag: 'a+' }).trim());
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
      throw new FlotillaError(
        'INSTANCE_RUNNING',
        `instance '${instance}' is already run by process ${holder}; stop it, or pick another instance name`,
      );
    }
    writeFileSync(lockPath, `${process.pid}\n`);
  }

  unlock(): void {
    const lockPath = `${this.path}.lock`;
    if (Number(readFileSync(lockPath, { encoding: 'utf8', flag: 'a+' }).trim()) === process.pid) rmSync(lockPath, { force: true });
  }
}
