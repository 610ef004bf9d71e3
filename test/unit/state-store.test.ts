import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InstanceLock, StateStore } from '../../src/controller/state-store.js';

describe('StateStore', () => {
  const path = () => join(mkdtempSync(join(tmpdir(), 'flt-state-')), 'nested', 'state.json');

  it('loads nothing before the first save, then what was saved', () => {
    const store = new StateStore(path());
    expect(store.load()).toBeUndefined();
    store.save({ n: 1 });
    store.save({ n: 2 });
    expect(store.load()).toEqual({ n: 2 });
  });

  it('leaves no temporary file behind', () => {
    const file = path();
    new StateStore(file).save({ ok: true });
    expect(readdirSync(join(file, '..'))).toEqual(['state.json']);
  });

  it('refuses a torn or foreign file with a clear error', () => {
    const file = path();
    new StateStore(file).save({});
    writeFileSync(file, '{"backends": [');
    expect(() => new StateStore(file).load()).toThrow(/not valid JSON.*move it away/);
  });

  it('clears', () => {
    const store = new StateStore(path());
    store.save({});
    store.clear();
    expect(store.load()).toBeUndefined();
  });
});

describe('InstanceLock', () => {
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
    const first = new InstanceLock(file, clock);
    first.acquire('demo');
    expect(() => new InstanceLock(file, clock).acquire('demo')).toThrow(
      expect.objectContaining({ code: 'INSTANCE_RUNNING', message: expect.stringMatching(/already run by process \d+ on /) }),
    );
    first.release();
    expect(readdirSync(join(file, '..'))).toEqual([]);
  });

  it('refuses a live holder on this host and takes over from a dead one or an old bare-pid lock', () => {
    const file = path();
    writeFileSync(file, holder(process.ppid));
    expect(() => new InstanceLock(file, clock).acquire('demo')).toThrow(expect.objectContaining({ code: 'INSTANCE_RUNNING' }));
    const gone = spawnSync(process.execPath, ['-e', '']).pid ?? 0;
    writeFileSync(file, holder(gone));
    const lock = new InstanceLock(file, clock);
    lock.acquire('demo');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ pid: process.pid, hostname: hostname() });
    lock.release();
    writeFileSync(file, `${gone}\n`);
    new InstanceLock(file, clock).acquire('demo');
  });

  it('judges a holder in another container (PID 1 there) by its heartbeat, not its pid', () => {
    const file = path();
    writeFileSync(file, holder(1, 'another-container'));
    expect(() => new InstanceLock(file, clock).acquire('demo')).toThrow(expect.objectContaining({ code: 'INSTANCE_RUNNING' }));
    const old = new Date(Date.now() - 60_000);
    utimesSync(file, old, old);
    const lock = new InstanceLock(file, clock);
    lock.acquire('demo');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ pid: process.pid });
    lock.release();
  });

  it('does not remove a lock that another control plane took over', () => {
    const file = path();
    const lock = new InstanceLock(file, clock);
    lock.acquire('demo');
    writeFileSync(file, holder(process.ppid));
    lock.release();
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ pid: process.ppid });
  });
});
