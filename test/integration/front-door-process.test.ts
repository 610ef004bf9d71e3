import { execFile, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { controlSocketPath, frontDoorPidPath } from '../../src/front-door/supervisor/control-protocol.js';
import { connectWhenUp, containersOf, processSettings, startProcess } from './harness.js';
import { startLoad } from './load.js';

const FRONT_DOOR = join(import.meta.dirname, '..', '..', 'dist', 'src', 'front-door', 'supervisor', 'main.js');
const run = promisify(execFile);

async function settings(workers: number) {
  const base = await processSettings('fdp');
  return { ...base, http: { ...base.http, frontDoor: 'process' as const, workers } };
}

type Settings = Awaited<ReturnType<typeof settings>>;

const exited = (child: ChildProcess) =>
  new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve)));
const frontDoorPid = (options: Settings) => {
  try {
    return Number(readFileSync(frontDoorPidPath(options.stateDir, options.instance), 'utf8'));
  } catch {
    return 0;
  }
};
/** Whether the process runs (a zombie, dead but not reaped by an orphan's new parent, does not). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

/** The processes whose parent is `pid` (a front door's workers). */
const childrenOf = (pid: number): number[] =>
  readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        const [, state, parent] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return Number(parent) === pid && state !== 'Z' ? [Number(name)] : [];
      } catch {
        return [];
      }
    });

/** Says hello on the front door's control socket and returns its first answer. */
function hello(options: Settings, protocol: number): Promise<{ t: string; code?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(controlSocketPath(options.stateDir, options.instance));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.includes('\n')) {
        socket.destroy();
        resolve(JSON.parse(text.slice(0, text.indexOf('\n'))));
      }
    });
    socket.on('error', reject);
    socket.write(`${JSON.stringify({ t: 'hello', protocol, pid: process.pid })}\n`);
  });
}

describe.each([1, 2])('the front door as its own process, %i worker(s)', (workers) => {
  it('serves through kill -9 of the control plane and a restart with no failed request, and is restarted when it dies', async () => {
    const options = await settings(workers);
    const first = startProcess(options);
    let second: ChildProcess | undefined;
    let frontDoor: number | undefined;
    try {
      const client = await connectWhenUp(options);
      await client.createBackend('steady', () => 'ok', { config: { numReplicas: 2 } });
      await client.createEndpoint('steady', { backend: 'steady', route: '/steady' });
      expect((await fetch(`${client.httpUrl}/steady`)).status).toBe(200);
      frontDoor = frontDoorPid(options);
      const before = containersOf(options.instance, 'steady').sort();

      const load = startLoad(() => fetch(`${client.httpUrl}/steady`), 4);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const health = async () => ((await (await fetch(`${client.httpUrl}/-/healthz`)).json()) as { controlPlane?: string }).controlPlane;
      expect(await health()).toBe('attached');
      first.kill('SIGKILL');
      await exited(first);
      await expect.poll(health).toBe('away');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      second = startProcess(options);
      const again = await connectWhenUp(options);
      await expect.poll(health).toBe('attached');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const result = await load.stop();
      expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
      expect(frontDoorPid(options)).toBe(frontDoor);
      expect(containersOf(options.instance, 'steady').sort()).toEqual(before);
      await expect
        .poll(async () => (await again.listReplicas('steady')).filter((r) => r.state === 'ready').length, { timeout: 30_000 })
        .toBe(2);

      const refusal = await hello(options, 999);
      expect(refusal).toMatchObject({ t: 'rejected', code: 'FRONT_DOOR_PROTOCOL' });
      expect(refusal.message).toContain('protocol 1');
      expect(refusal.message).toContain('999');
      const another = await run(process.execPath, [FRONT_DOOR, JSON.stringify({ ...options, http: { ...options.http, port: 0 } })]).catch(
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
      expect(another).toMatchObject({ code: 1 });
      expect(`${(another as { stdout: string }).stdout}${(another as { stderr: string }).stderr}`).toMatch(
        /FRONT_DOOR_RUNNING|already serves instance/,
      );
      expect((await fetch(`${again.httpUrl}/steady`)).status).toBe(200);

      if (workers > 1) {
        const [worker] = childrenOf(frontDoor);
        expect(worker).toBeDefined();
        const duringWorkerDeath = startLoad(() => fetch(`${again.httpUrl}/steady`), 4);
        await new Promise((resolve) => setTimeout(resolve, 300));
        process.kill(worker!, 'SIGKILL');
        await expect.poll(() => childrenOf(frontDoor!).filter((pid) => pid !== worker).length, { timeout: 30_000 }).toBe(workers);
        const served = await duringWorkerDeath.stop();
        const failed = served.total - (served.statuses.get(200) ?? 0);
        expect(failed).toBeLessThanOrEqual(4);
        expect([...served.statuses.keys()].filter((key) => typeof key === 'number' && key !== 200)).toEqual([]);
      }

      process.kill(frontDoor, 'SIGKILL');
      await expect.poll(() => alive(frontDoor!)).toBe(false);
      await expect.poll(() => ((pid) => pid !== frontDoor && alive(pid))(frontDoorPid(options)), { timeout: 30_000 }).toBe(true);
      const restarted = frontDoorPid(options);
      frontDoor = restarted;
      await expect
        .poll(async () => (await fetch(`${again.httpUrl}/steady`).catch(() => undefined))?.status, { timeout: 30_000, interval: 250 })
        .toBe(200);

      await again.shutdown();
      await exited(second);
      await expect.poll(() => alive(restarted)).toBe(false);
      expect(containersOf(options.instance)).toEqual([]);
    } finally {
      first.kill('SIGKILL');
      second?.kill('SIGKILL');
      if (frontDoor !== undefined && alive(frontDoor)) process.kill(frontDoor, 'SIGKILL');
    }
  });
});

describe.each([1, 2])('upgrading the front-door process, %i worker(s)', (workers) => {
  it('hands the port to a new front door under load with no failed request, and the control plane re-attaches to it', async () => {
    const options = await settings(workers);
    const controlPlane = startProcess(options);
    let old: number | undefined;
    let successor: number | undefined;
    try {
      const client = await connectWhenUp(options);
      await client.createBackend('steady', () => 'ok', { config: { numReplicas: 2 } });
      await client.createEndpoint('steady', { backend: 'steady', route: '/steady' });
      expect((await fetch(`${client.httpUrl}/steady`)).status).toBe(200);
      old = frontDoorPid(options);

      const load = startLoad(() => fetch(`${client.httpUrl}/steady`), 4);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const { stdout } = await run(process.execPath, [FRONT_DOOR, '--upgrade', options.stateDir, options.instance]);
      expect(stdout).toMatch(/the front door is replaced: pid \d+ serves the port/);
      successor = frontDoorPid(options);
      expect(successor).not.toBe(old);
      expect(alive(successor)).toBe(true);
      await expect.poll(() => alive(old!), { timeout: 40_000 }).toBe(false);
      const health = async () => ((await (await fetch(`${client.httpUrl}/-/healthz`)).json()) as { controlPlane?: string }).controlPlane;
      await expect.poll(health).toBe('attached');
      const result = await load.stop();
      expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });

      await client.updateBackendConfig('steady', { numReplicas: 1 });
      await expect.poll(async () => (await client.listReplicas('steady')).length, { timeout: 30_000 }).toBe(1);
      expect((await fetch(`${client.httpUrl}/steady`)).status).toBe(200);
      await client.shutdown();
      await exited(controlPlane);
      await expect.poll(() => alive(successor!)).toBe(false);
      expect(containersOf(options.instance)).toEqual([]);
    } finally {
      controlPlane.kill('SIGKILL');
      for (const pid of [old, successor]) if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});

describe('a cold start while the control plane is away', () => {
  it('holds a request for a backend at zero replicas until a control plane returns and starts one', async () => {
    const options = await settings(2);
    const first = startProcess(options);
    let second: ChildProcess | undefined;
    let frontDoor: number | undefined;
    try {
      const client = await connectWhenUp(options);
      await client.createBackend('cold', () => 'warm now', {
        config: { autoscaling: { minReplicas: 0, maxReplicas: 1, metricsIntervalS: 0.1, lookBackPeriodS: 1, downscaleDelayS: 600 } },
      });
      await client.createEndpoint('cold', { backend: 'cold', route: '/cold' });
      expect(await client.listReplicas('cold')).toHaveLength(0);
      frontDoor = frontDoorPid(options);

      first.kill('SIGKILL');
      await exited(first);
      const waiting = fetch(`${client.httpUrl}/cold`);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(containersOf(options.instance, 'cold')).toHaveLength(0);
      second = startProcess(options);
      const again = await connectWhenUp(options);
      const answer = await waiting;
      expect(answer.status).toBe(200);
      expect(await answer.text()).toContain('warm now');
      expect(await again.listReplicas('cold')).toHaveLength(1);
      await again.shutdown();
      await exited(second);
    } finally {
      first.kill('SIGKILL');
      second?.kill('SIGKILL');
      if (frontDoor !== undefined && alive(frontDoor)) process.kill(frontDoor, 'SIGKILL');
    }
  });
});
