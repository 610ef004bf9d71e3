import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deployAppFile } from '../../src/cli/deploy.js';
import { renderStatus } from '../../src/cli/status.js';
import { ControlPlane } from '../../src/control-plane.js';
import type { Client } from '../../src/index.js';
import { containersOf, FIXTURES, startFlotilla, testSettings } from './harness.js';
import { startLoad } from './load.js';

async function work(request: Request) {
  const ms = Number(new URL(request.url).searchParams.get('ms') ?? '200');
  await new Promise((resolve) => setTimeout(resolve, ms));
  return { replica: process.env.HOSTNAME, version: 'v1' };
}

async function workV2(request: Request) {
  const ms = Number(new URL(request.url).searchParams.get('ms') ?? '200');
  await new Promise((resolve) => setTimeout(resolve, ms));
  return { replica: process.env.HOSTNAME, version: 'v2' };
}

/** Its constructor takes 4 s, as a model that loads weights does. */
class SlowStart {
  constructor() {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 4000);
  }
  call() {
    return 'warm';
  }
}

/** Short delays so that a test sees every rule act within seconds. */
const FAST = { targetOngoingRequests: 1, metricsIntervalS: 0.1, lookBackPeriodS: 1, upscaleDelayS: 0.5, downscaleDelayS: 2 };

/** How long a poll waits for the autoscaler to act: generous, for a machine that other test runs share. */
const LONG = { timeout: 60_000, interval: 100 };

const statusOf = async (client: Client, backend: string) => (await client.getBackendConfig(backend)).autoscalingStatus!;

describe('autoscaling on the real engine', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    // Room for three replicas of 1 CPU: maxReplicas 5 is capped by capacity.
    ({ client, instance } = await startFlotilla({ cpuCapacity: 3 }));
  });
  afterAll(() => client.shutdown());

  it('scales a step of load up to what capacity allows, says why, and back to minReplicas after the delay, every request 2xx', async () => {
    await client.createBackend('work', work, {
      config: { autoscaling: { ...FAST, minReplicas: 1, maxReplicas: 5 }, gracefulShutdownTimeoutS: 10 },
    });
    await client.createEndpoint('work', { backend: 'work', route: '/work' });
    expect(await client.listReplicas('work')).toHaveLength(1);

    const load = startLoad(() => fetch(`${client.httpUrl}/work`), 6);
    await expect.poll(() => statusOf(client, 'work'), LONG).toMatchObject({ runningReplicas: 3, heldBack: { by: 'capacity' } });
    const capped = await statusOf(client, 'work');
    expect(capped).toMatchObject({ wantedReplicas: 5, targetReplicas: 3 });
    expect(capped.heldBack?.message).toContain('wanted 5 replicas, the machine has room for 3');
    expect(capped.lastDecision).toMatchObject({ direction: 'up', from: 1 });
    const metrics = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
    expect(metrics).toContain('serve_autoscaling_desired_replicas{backend="work"} 5');
    expect(metrics).toContain('serve_autoscaling_target_replicas{backend="work"} 3');
    expect(metrics).toContain('flotilla_autoscaling_capacity_capped{backend="work"} 1');
    expect(metrics).toMatch(/flotilla_autoscaling_decisions_total\{backend="work",direction="up"\} [1-9]/);
    const status = await renderStatus(client);
    expect(status).toContain('autoscaling 1-5 (1 ongoing per replica): wanted 5, target 3, running 3');
    expect(status).toContain('(capacity: wanted 5 replicas, the machine has room for 3');

    const result = await load.stop();
    await expect.poll(async () => (await client.listReplicas('work')).length, LONG).toBe(1);
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
    expect(containersOf(instance, 'work')).toHaveLength(1);
    expect(await statusOf(client, 'work')).toMatchObject({ targetReplicas: 1, heldBack: null, lastDecision: { direction: 'down', to: 1 } });
    const events = (await client.listEvents({ limit: 1000 })).events;
    expect(events.map((e) => e.kind)).toContain('autoscaling.decided');
    // Recorded once per change of the cap, not on every reconcile step.
    const caps = events.filter((e) => e.kind === 'autoscaling.capped').map((e) => e.message);
    expect(caps.length).toBeGreaterThanOrEqual(1);
    expect(caps.length).toBeLessThan(10);
    caps.slice(1).forEach((message, i) => expect(message).not.toBe(caps[i]));
  });

  it('switches live between a fixed numReplicas and autoscaling, and rolls a new version out at the count it runs', async () => {
    await client.updateBackendConfig('work', { numReplicas: 2 });
    expect(await client.getBackendConfig('work')).toMatchObject({ numReplicas: 2, autoscaling: null, autoscalingStatus: null });
    expect(await client.listReplicas('work')).toHaveLength(2);
    await client.updateBackendConfig('work', { autoscaling: { ...FAST, minReplicas: 2, maxReplicas: 3, downscaleDelayS: 600 } });
    expect(await client.getBackendConfig('work')).toMatchObject({ numReplicas: 2, autoscaling: { minReplicas: 2, maxReplicas: 3 } });
    await expect(client.updateBackendConfig('work', { numReplicas: 1, autoscaling: { maxReplicas: 2 } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      details: { issues: [{ path: ['numReplicas'] }, { path: ['autoscaling'] }] },
    });

    const load = startLoad(() => fetch(`${client.httpUrl}/work?ms=50`), 2);
    await client.updateBackend('work', workV2, {
      config: { autoscaling: { ...FAST, minReplicas: 2, maxReplicas: 3, downscaleDelayS: 600 }, gracefulShutdownTimeoutS: 10 },
    });
    const result = await load.stop();
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
    const info = await client.getBackendConfig('work');
    expect(info).toMatchObject({ numReplicas: 2, rollout: { state: 'completed' }, autoscaling: { maxReplicas: 3 } });
    expect(await client.getHandle('work').remote()).toMatchObject({ version: 'v2' });
    await client.deleteEndpoint('work');
    await client.deleteBackend('work');
  });

  it('scales to zero, then answers the first request and those arriving during the cold start, by HTTP and by handle', async () => {
    await client.createBackend('idle', work, {
      config: { autoscaling: { ...FAST, minReplicas: 0, maxReplicas: 2, downscaleDelayS: 1 } },
    });
    await client.createEndpoint('idle', { backend: 'idle', route: '/idle' });
    expect(await client.listReplicas('idle')).toHaveLength(0);
    expect(containersOf(instance, 'idle')).toHaveLength(0);

    const first = fetch(`${client.httpUrl}/idle?ms=0`);
    const during = Array.from({ length: 5 }, () => fetch(`${client.httpUrl}/idle?ms=0`));
    const byHandle = client.getHandle('idle').remote();
    expect((await Promise.all([first, ...during])).map((r) => r.status)).toEqual(Array(6).fill(200));
    expect(await byHandle).toMatchObject({ version: 'v1' });
    const warm = await statusOf(client, 'idle');
    expect(warm.lastDecision).toMatchObject({ from: 0, direction: 'up' });
    expect(warm.lastDecision?.reason).toContain('cold start');

    await expect.poll(() => client.listReplicas('idle'), LONG).toHaveLength(0);
    expect(containersOf(instance, 'idle')).toHaveLength(0);
    expect(await client.getHandle('idle').remote()).toMatchObject({ version: 'v1' });
    const metrics = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
    expect(metrics).toMatch(/flotilla_cold_start_seconds_count\{backend="idle"\} [2-9]/);
  });
});

describe('an app file with an autoscaling block', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  it('deploys a backend that scales from zero, and a redeploy leaves the count the autoscaler chose', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flt-as-app-'));
    const path = join(dir, 'app.yaml');
    writeFileSync(
      path,
      [
        'backends:',
        '  echo:',
        '    import: handlers/echo.js:Echo',
        `    runtimeEnv: { context: ${join(FIXTURES, 'my-backend')} }`,
        '    initArgs: [from-file]',
        '    config:',
        '      autoscaling: { minReplicas: 0, maxReplicas: 2, metricsIntervalS: 0.1, lookBackPeriodS: 1, downscaleDelayS: 600 }',
        'endpoints:',
        '  echo: { backend: echo, route: /echo }',
        '',
      ].join('\n'),
    );
    await deployAppFile(client, path, { log: () => undefined });
    expect(await client.getBackendConfig('echo')).toMatchObject({ numReplicas: 0, autoscaling: { minReplicas: 0, maxReplicas: 2 } });
    const answer = await fetch(`${client.httpUrl}/echo`);
    expect(answer.status).toBe(200);
    expect(await answer.json()).toMatchObject({ arg: 'from-file' });
    expect((await client.getBackendConfig('echo')).numReplicas).toBe(1);
    expect(await deployAppFile(client, path, { log: () => undefined })).toEqual([]);
    expect(await client.listReplicas('echo')).toHaveLength(1);
  });
});

describe('an autoscaled backend across a restart', () => {
  it('adopts the replicas at the saved count, and keeps autoscaling them', async () => {
    const settings = testSettings();
    const first = await ControlPlane.start(settings);
    await first.client.createBackend('kept', work, {
      config: { autoscaling: { ...FAST, minReplicas: 1, initialReplicas: 2, maxReplicas: 3, downscaleDelayS: 600 } },
    });
    const before = (await first.client.listReplicas('kept')).map((r) => r.containerId).sort();
    expect(before).toHaveLength(2);
    await first.close();

    const second = await ControlPlane.start(settings);
    try {
      await expect.poll(async () => (await second.client.listReplicas('kept')).map((r) => r.state), LONG).toEqual(['ready', 'ready']);
      expect((await second.client.listReplicas('kept')).map((r) => r.containerId).sort()).toEqual(before);
      await expect
        .poll(() => second.client.getBackendConfig('kept'), LONG)
        .toMatchObject({
          numReplicas: 2,
          autoscaling: { initialReplicas: 2, maxReplicas: 3 },
          autoscalingStatus: { targetReplicas: 2, wantedReplicas: 1, heldBack: { by: 'downscale-delay' } },
        });
    } finally {
      await second.shutdown();
    }
  });
});

describe('the cold-start budget', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla({ coldStartTimeoutS: 1 }));
  });
  afterAll(() => client.shutdown());

  it('answers 503 COLD_START_TIMEOUT with Retry-After when a replica takes longer to start, then serves once it is ready', async () => {
    await client.createBackend('slow', SlowStart, {
      config: { autoscaling: { ...FAST, minReplicas: 0, maxReplicas: 1, downscaleDelayS: 600 } },
    });
    await client.createEndpoint('slow', { backend: 'slow', route: '/slow' });
    const refused = await fetch(`${client.httpUrl}/slow`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toMatchObject({ error: { code: 'COLD_START_TIMEOUT' } });
    await expect(client.getHandle('slow').remote()).rejects.toMatchObject({ code: 'COLD_START_TIMEOUT' });
    await expect.poll(async () => (await client.listReplicas('slow')).map((r) => r.state), LONG).toContain('ready');
    const served = await fetch(`${client.httpUrl}/slow`);
    expect(served.status).toBe(200);
    expect(await served.text()).toBe('warm');
  });
});
