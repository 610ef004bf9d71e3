import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { FlotillaError, errorMessage } from '../common/errors.js';
import type { Clock } from '../common/clock.js';
import { TIMING } from './constants.js';

/** Writes all of `text`, however many short writes the kernel makes of it. */
function writeAll(fd: number, text: string): void {
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

interface LockHolder {
  pid: number;
  hostname: string;
  bootId: string;
  nonce: string;
  startedAt: string;
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function processStartedAt(): number {
  return Date.now() - process.uptime() * 1000 - 1000;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One control plane per instance. The lock file is created exclusively
 * (O_EXCL), so of two control planes racing for it exactly one wins, on the
 * host or in containers that share the state directory. It names its holder
 * by pid, hostname, kernel boot id and a random nonce. A holder on this same
 * host and boot is judged by its pid (a dead one is taken over at once); a
 * holder elsewhere (another container: its pid means nothing here, PID 1
 * collides) is judged by its heartbeat, the lock file's mtime, refreshed
 * every few seconds while it runs.
 */
export class InstanceLock {
  private readonly me: LockHolder;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(
    private readonly path: string,
    private readonly clock: Clock,
  ) {
    this.me = {
      pid: process.pid,
      hostname: hostname(),
      bootId: bootId(),
      nonce: randomBytes(8).toString('hex'),
      startedAt: new Date(clock.now()).toISOString(),
    };
  }

  acquire(instance: string): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(this.path, 'wx', 0o600);
        try {
          writeAll(fd, `${JSON.stringify(this.me)}\n`);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        this.heartbeat = setInterval(() => this.beat(), TIMING.lockHeartbeatMs);
        this.heartbeat.unref();
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const holder = this.holder();
      if (holder !== undefined && this.isLive(holder)) {
        throw new FlotillaError(
          'INSTANCE_RUNNING',
          `instance '${instance}' is already run by process ${holder.pid} on ${holder.hostname} (since ${holder.startedAt}); ` +
            `stop it, or pick another instance name`,
          { holder },
        );
      }
      rmSync(this.path, { force: true });
    }
    throw new FlotillaError('INSTANCE_RUNNING', `instance '${instance}' is being claimed by another control plane; try again`);
  }

  release(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    if (this.holder()?.nonce === this.me.nonce) rmSync(this.path, { force: true });
  }

  private beat(): void {
    try {
      const now = new Date(this.clock.now());
      utimesSync(this.path, now, now);
    } catch {
      return;
    }
  }

  /** The holder named in the file; a lock file of an older Flotilla holds a bare pid. */
  private holder(): LockHolder | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const holder = JSON.parse(text) as unknown;
      if (typeof holder === 'object' && holder !== null) return holder as LockHolder;
    } catch {
      // a torn or bare-pid file: judged by the pid it may hold
    }
    const pid = Number(text.trim());
    return { pid, hostname: this.me.hostname, bootId: this.me.bootId, nonce: '', startedAt: 'unknown' };
  }

  private isLive(holder: LockHolder): boolean {
    if (holder.nonce === this.me.nonce) return false;
    if (holder.hostname === this.me.hostname && holder.bootId === this.me.bootId) {
      if (!Number.isInteger(holder.pid) || holder.pid <= 0) return false;
      // Our own pid: this very process (another controller in it), or an earlier process that had our pid (PID 1 in a restarted container).
      if (holder.pid === process.pid) return Date.parse(holder.startedAt) >= processStartedAt();
      return isAlive(holder.pid);
    }
    const mtime = statSync(this.path, { throwIfNoEntry: false })?.mtimeMs ?? 0;
    return this.clock.now() - mtime < TIMING.lockStaleMs;
  }
}
