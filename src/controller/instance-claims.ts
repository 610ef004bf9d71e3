import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import type { Clock } from '../common/clock.js';
import { FlotillaError } from '../common/errors.js';
import type { ContainerRuntime, InstanceOwner } from '../runtime/container-runtime.js';
import { TIMING } from './constants.js';
import { writeAll } from './state-store.js';
import { isAlive } from '../common/processes.js';

/**
 * Who runs an instance. Two claims, each by its scope: the state directory's lock file (StateDirLock, taken by the
 * controller) and the engine's marker (EngineClaim, taken by the control plane before the controller starts), so that
 * neither two control planes on one state directory nor two on one engine with different state directories (host and
 * container, two checkouts) serve the same instance.
 */

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
export class StateDirLock {
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

/** Whether a recorded owner still serves: its admin API answers as that owner (or asks for a token). */
export type OwnerProbe = (owner: InstanceOwner) => Promise<boolean>;

/** A claim whose owner has not recorded its admin API yet is that long taken to be starting (on another host). */
const STARTING_GRACE_MS = 5 * 60_000;

function running(instance: string, owner: InstanceOwner): FlotillaError {
  const where =
    owner.adminUrl === ''
      ? `is being started by process ${owner.pid} on ${owner.host ?? 'another host'} on this Docker engine (since ${owner.startedAt ?? 'unknown'})`
      : `is already run by process ${owner.pid} on this Docker engine (admin API ${owner.adminUrl}, HTTP ${owner.httpUrl})`;
  const stop = owner.adminUrl === '' ? 'wait for it and stop it' : `stop it (flotilla shutdown --address ${owner.adminUrl})`;
  return new FlotillaError(
    'INSTANCE_RUNNING',
    `instance '${instance}' ${where}; ${stop}, or pick another instance name (FLOTILLA_INSTANCE)`,
    { owner: { adminUrl: owner.adminUrl, httpUrl: owner.httpUrl, pid: owner.pid } },
  );
}

/**
 * One control plane per instance on an engine, whatever its state directory or host. The claim is the engine's marker
 * of the instance, created under a fixed name: of two starts at once, the engine keeps the first marker and hands it
 * to the second, which sees another owner in it. An owner that no longer serves (its admin API does not answer as it,
 * or, while starting, its process is gone) is taken over; a live one refuses the start with INSTANCE_RUNNING. Once
 * listening, the owner records its admin API and front door in the marker.
 */
export class EngineClaim {
  private constructor(
    private readonly runtime: ContainerRuntime,
    private readonly instance: string,
    private readonly me: InstanceOwner,
  ) {}

  /** Takes the instance's marker on the engine, or refuses with INSTANCE_RUNNING. */
  static async take(runtime: ContainerRuntime, instance: string, serves: OwnerProbe): Promise<EngineClaim> {
    const me: InstanceOwner = {
      adminUrl: '',
      httpUrl: '',
      pid: process.pid,
      nonce: randomBytes(8).toString('hex'),
      host: hostname(),
      startedAt: new Date().toISOString(),
    };
    for (let attempt = 0; attempt < 3; attempt++) {
      const holder = await runtime.claimInstance(instance, me);
      if (holder === undefined) {
        throw new FlotillaError(
          'INSTANCE_RUNNING',
          `the marker of instance '${instance}' on this Docker engine names no owner Flotilla can read; remove it (docker volume rm flotilla-instance-${instance}) if no control plane serves the instance`,
        );
      }
      if (holder.nonce === me.nonce) return new EngineClaim(runtime, instance, me);
      if (await EngineClaim.live(holder, serves)) throw running(instance, holder);
      await runtime.removeInstanceOwner(instance, holder.nonce);
    }
    throw new FlotillaError('INSTANCE_RUNNING', `instance '${instance}' is being claimed by another control plane; try again`);
  }

  private static async live(owner: InstanceOwner, serves: OwnerProbe): Promise<boolean> {
    if (owner.adminUrl !== '') return serves(owner);
    if (owner.host !== hostname()) return Date.now() - Date.parse(owner.startedAt ?? '') < STARTING_GRACE_MS;
    // Our own pid: another start in this process, or an earlier process that had our pid (PID 1 in a restarted container).
    return owner.pid === process.pid ? Date.parse(owner.startedAt ?? '') >= processStartedAt() : isAlive(owner.pid);
  }

  /** Records this control plane's admin API and front door, now listening, in its marker. */
  async record(adminUrl: string, httpUrl: string): Promise<void> {
    await this.runtime.writeInstanceOwner(this.instance, { ...this.me, adminUrl, httpUrl });
    const holder = await this.runtime.readInstanceOwner(this.instance);
    if (holder?.nonce !== this.me.nonce) throw running(this.instance, holder ?? this.me);
  }

  /** Gives the marker up, unless another control plane has taken it over since. */
  release(): Promise<void> {
    return this.runtime.removeInstanceOwner(this.instance, this.me.nonce).catch(() => undefined);
  }
}
