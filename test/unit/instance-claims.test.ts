import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EngineClaim, StateDirLock } from '../../src/controller/instance-claims.js';
import type { ContainerRuntime, InstanceOwner } from '../../src/runtime/container-runtime.js';

describe('StateDirLock', () => {
  const path = () => join(mkdtempSync(join(tmpdir(), 'flt-lock-')), 'state.json.lock');
  const clock = { now: () => Date.now() };
  const holder = (pid: number, host = hostname()) =>
    JSON.stringify({
      pid,
      hostname: host,
      bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
      nonce: 'n',
      startedAt: 'x',
    });

  it('lets one of two claimants win and names the holder to the other', () => {
    const file = path();
    const first = new StateDirLock(file, clock);
    first.acquire('demo');
    expect(() => new StateDirLock(file, clock).acquire('demo')).toThrow(
      expect.objectContaining({ code: 'INSTANCE_RUNNING', message: expect.stringMatching(/already run by process \d+ on /) }),
    );
    first.release();
    expect(readdirSync(join(file, '..'))).toEqual([]);
  });

  it('refuses a live holder on this host and takes over from a dead one or an old bare-pid lock', () => {
    const file = path();
    writeFileSync(file, holder(process.ppid));
    expect(() => new StateDirLock(file, clock).acquire('demo')).toThrow(expect.objectContaining({ code: 'INSTANCE_RUNNING' }));
    const gone = spawnSync(process.execPath, ['-e', '']).pid ?? 0;
    writeFileSync(file, holder(gone));
    const lock = new StateDirLock(file, clock);
    lock.acquire('demo');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ pid: process.pid, hostname: hostname() });
    lock.release();
    writeFileSync(file, `${gone}\n`);
    new StateDirLock(file, clock).acquire('demo');
  });

  it('judges a holder in another container (PID 1 there) by its heartbeat, not its pid', () => {
    const file = path();
    writeFileSync(file, holder(1, 'another-container'));
    expect(() => new StateDirLock(file, clock).acquire('demo')).toThrow(expect.objectContaining({ code: 'INSTANCE_RUNNING' }));
    const old = new Date(Date.now() - 60_000);
    utimesSync(file, old, old);
    const lock = new StateDirLock(file, clock);
    lock.acquire('demo');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ pid: process.pid });
    lock.release();
  });

  it('does not remove a lock that another control plane took over', () => {
    const file = path();
    const lock = new StateDirLock(file, clock);
    lock.acquire('demo');
    writeFileSync(file, holder(process.ppid));
    lock.release();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ pid: process.ppid });
  });
});

function engine() {
  const markers = new Map<string, InstanceOwner>();
  const runtime = {
    claimInstance: (instance: string, owner: InstanceOwner) => {
      if (!markers.has(instance)) markers.set(instance, owner);
      return Promise.resolve(markers.get(instance));
    },
    readInstanceOwner: (instance: string) => Promise.resolve(markers.get(instance)),
    writeInstanceOwner: (instance: string, owner: InstanceOwner) => Promise.resolve(void markers.set(instance, owner)),
    removeInstanceOwner: (instance: string, nonce: string) =>
      Promise.resolve(void (markers.get(instance)?.nonce === nonce && markers.delete(instance))),
  } as unknown as ContainerRuntime;
  return { runtime, markers };
}

const alive = () => Promise.resolve(true);
const dead = () => Promise.resolve(false);

describe('EngineClaim: one control plane per instance on an engine', () => {
  it('refuses a start while the recorded owner answers, naming it', async () => {
    const { runtime } = engine();
    await (await EngineClaim.take(runtime, 'shop', dead)).record('http://127.0.0.1:8001', 'http://127.0.0.1:8000');
    await expect(EngineClaim.take(runtime, 'shop', alive)).rejects.toMatchObject({
      code: 'INSTANCE_RUNNING',
      message: expect.stringMatching(
        /instance 'shop' is already run by process \d+ on this Docker engine \(admin API http:\/\/127.0.0.1:8001/,
      ),
    });
    await expect(EngineClaim.take(runtime, 'other', alive)).resolves.toBeInstanceOf(EngineClaim);
  });

  it('refuses a second start while the first, in this process, has claimed the instance but not yet listens', async () => {
    const { runtime } = engine();
    await EngineClaim.take(runtime, 'shop', dead);
    await expect(EngineClaim.take(runtime, 'shop', dead)).rejects.toMatchObject({
      code: 'INSTANCE_RUNNING',
      message: expect.stringMatching(/instance 'shop' is being started by process \d+ on /),
    });
  });

  it("takes over a dead owner's marker, and releases only its own", async () => {
    const { runtime, markers } = engine();
    const first = await EngineClaim.take(runtime, 'shop', dead);
    await first.record('http://127.0.0.1:8001', 'http://127.0.0.1:8000');
    const second = await EngineClaim.take(runtime, 'shop', dead);
    await second.record('http://127.0.0.1:9001', 'http://127.0.0.1:9000');
    await first.release();
    expect(markers.get('shop')?.adminUrl).toBe('http://127.0.0.1:9001');
    await second.release();
    expect(markers.has('shop')).toBe(false);
  });

  it('takes over the marker of a start whose process is gone before it listened', async () => {
    const { runtime, markers } = engine();
    const gone = spawnSync(process.execPath, ['-e', '']).pid ?? 0;
    markers.set('shop', { adminUrl: '', httpUrl: '', pid: gone, nonce: 'old', host: hostname(), startedAt: new Date().toISOString() });
    await expect(EngineClaim.take(runtime, 'shop', alive)).resolves.toBeInstanceOf(EngineClaim);
    expect(markers.get('shop')?.pid).toBe(process.pid);
  });
});
