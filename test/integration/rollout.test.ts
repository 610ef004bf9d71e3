import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { renderStatus } from '../../src/cli/status.js';
import { LABELS } from '../../src/common/labels.js';
import { shortId } from '../../src/common/ids.js';
import { FIXTURES, freePort, startFlotilla, deployEndpoint } from './harness.js';
import { startLoad } from './load.js';

// The backends and steps of docs/rollout.md, run while a continuous load hits the endpoint.

function sentimentV1(request: Request) {
  const text = new URL(request.url).searchParams.get('text') ?? '';
  const label = /good|great/.test(text) ? 'positive' : 'negative';
  return Response.json({ label }, { headers: { 'x-model-version': 'v1' } });
}

function sentimentV2(request: Request) {
  const text = new URL(request.url).searchParams.get('text') ?? '';
  const label = /good|great|fine/.test(text) ? 'positive' : 'negative';
  return Response.json({ label }, { headers: { 'x-model-version': 'v2' } });
}

const texts = ['good', 'fine', 'bad'];

describe('incremental rollout (docs/rollout.md)', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  /** Sends `count` requests, throws on any that is not a 2xx, and counts the answers by model version. */
  async function sample(count: number): Promise<Record<string, number>> {
    const seen: Record<string, number> = {};
    for (let i = 0; i < count; i++) {
      const response = await fetch(`${client.httpUrl}/sentiment?text=${texts[i % texts.length]}`);
      if (!response.ok) throw new Error(`request ${i} failed with ${response.status}: ${await response.text()}`);
      await response.arrayBuffer();
      const version = response.headers.get('x-model-version') ?? 'unknown';
      seen[version] = (seen[version] ?? 0) + 1;
    }
    return seen;
  }

  it('moves an endpoint from v1 to v2 through a shadow, 10%, 50% and 100% without a failed request', async () => {
    // Step 1: v1 serves the endpoint.
    await client.createBackend('sentiment-v1', sentimentV1, { config: { numReplicas: 2 }, replicaOptions: { numCpus: 0.5 } });
    await client.createEndpoint('sentiment', { backend: 'sentiment-v1', route: '/sentiment' });
    expect(await sample(30)).toEqual({ v1: 30 });

    // The load records which version answered, by the step in force for the whole request; a request that
    // overlaps a change may be routed either way, and is not checked (it must still succeed).
    let step = 'v1';
    const answers: Record<string, Record<string, number>> = {};
    let sent = 0;
    const load = startLoad(async () => {
      const at = step;
      const response = await fetch(`${client.httpUrl}/sentiment?text=${texts[sent++ % texts.length]}`);
      const version = response.headers.get('x-model-version') ?? 'unknown';
      if (at === step) answers[at] = { ...answers[at], [version]: (answers[at]?.[version] ?? 0) + 1 };
      return response;
    }, 4);

    // Step 2: deploy v2 beside v1.
    await client.createBackend('sentiment-v2', sentimentV2, { config: { numReplicas: 2 }, replicaOptions: { numCpus: 0.5 } });
    expect((await client.listEndpoints()).sentiment?.traffic).toEqual({ 'sentiment-v1': 1 });

    // Step 3: shadow v2; callers still get v1's answers only.
    step = 'changing';
    await client.shadowTraffic('sentiment', 'sentiment-v2', 1);
    step = 'shadow';
    expect(await sample(150)).toEqual({ v1: 150 });

    // Step 4: compare. v2 disagrees on 'fine' only: same statuses, some bodies differ.
    await expect.poll(async () => (await client.getShadowStats('sentiment'))['sentiment-v2']?.compared ?? 0).toBeGreaterThanOrEqual(150);
    const stats = (await client.getShadowStats('sentiment'))['sentiment-v2'];
    expect(stats).toMatchObject({ dropped: 0, failed: 0, statusMismatches: 0 });
    expect(stats!.matches).toBeGreaterThan(0);
    expect(stats!.bodyMismatches).toBeGreaterThan(0);
    expect(stats!.matches + stats!.bodyMismatches).toBe(stats!.compared);
    expect(stats!.bodyMismatches / stats!.compared).toBeGreaterThan(0.2);
    expect(stats!.bodyMismatches / stats!.compared).toBeLessThan(0.5);
    expect(stats!.primaryLatencyMs.p50).not.toBeNull();
    expect(stats!.shadowLatencyMs.p50).not.toBeNull();
    step = 'changing';
    await client.shadowTraffic('sentiment', 'sentiment-v2', 0);
    expect((await client.listEndpoints()).sentiment?.shadows).toEqual({});

    // Step 5: shift 10% → 50% → 100%.
    step = 'changing';
    await client.setTraffic('sentiment', { 'sentiment-v1': 0.9, 'sentiment-v2': 0.1 });
    step = '10%';
    const at10 = await sample(100);
    expect((at10.v1 ?? 0) + (at10.v2 ?? 0)).toBe(100);
    expect(at10.v2).toBeGreaterThan(0);
    expect(at10.v2).toBeLessThan(30);

    step = 'changing';
    await client.setTraffic('sentiment', { 'sentiment-v1': 0.5, 'sentiment-v2': 0.5 });
    step = '50%';
    const at50 = await sample(100);
    expect((at50.v1 ?? 0) + (at50.v2 ?? 0)).toBe(100);
    expect(at50.v2).toBeGreaterThan(25);
    expect(at50.v2).toBeLessThan(75);

    step = 'changing';
    await client.setTraffic('sentiment', { 'sentiment-v2': 1 });
    step = '100%';
    expect(await sample(100)).toEqual({ v2: 100 });

    // Step 6: delete v1.
    await client.deleteBackend('sentiment-v1');
    step = 'v1 deleted';
    expect(Object.keys(await client.listBackends())).toEqual(['sentiment-v2']);
    expect(await sample(30)).toEqual({ v2: 30 });

    const result = await load.stop();
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
    expect(answers.shadow).toEqual({ v1: expect.any(Number) });
    expect(answers['10%']?.v2).toBeGreaterThan(0);
    expect(answers['50%']?.v2).toBeGreaterThan(0);
    expect(answers['100%']).toEqual({ v2: expect.any(Number) });
    expect(answers['v1 deleted']).toEqual({ v2: expect.any(Number) });
    expect((await client.listEndpoints()).sentiment).toMatchObject({ traffic: { 'sentiment-v2': 1 }, shadows: {} });
  });
});

function greeterV1() {
  return Response.json({ version: 'v1' });
}

function greeterV2() {
  return Response.json({ version: 'v2' });
}

class BrokenGreeter {
  constructor() {
    throw new Error('bad weights: cannot load the model');
  }
  call() {
    return { version: 'broken' };
  }
}

describe('rolling updates (docs/rollout.md)', () => {
  let client: Client;
  const options = { config: { numReplicas: 3, gracefulShutdownTimeoutS: 5 }, replicaOptions: { numCpus: 0.25 } };

  beforeAll(async () => {
    ({ client } = await startFlotilla({ rolloutMaxSurge: 1 }));
    await deployEndpoint(client, 'greeter', greeterV1, options);
  });
  afterAll(() => client.shutdown());

  /** Load on the endpoint that records the order of the versions that answered, and the fewest ready replicas seen. */
  function watch() {
    const versions: string[] = [];
    const load = startLoad(async () => {
      const response = await fetch(`${client.httpUrl}/greeter`);
      if (response.ok) versions.push(((await response.clone().json()) as { version: string }).version);
      return response;
    }, 4);
    let fewestReady = Infinity;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const replicas = await client.listReplicas('greeter');
        fewestReady = Math.min(fewestReady, replicas.filter((r) => r.state === 'ready').length);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    return {
      versions,
      async stop() {
        polling = false;
        await poller;
        return { ...(await load.stop()), fewestReady };
      },
    };
  }

  it('rolls a 3-replica backend to a new handler under load: every answer 2xx, old then new, never fewer than 3 ready', async () => {
    const before = await client.getBackendConfig('greeter');
    const watching = watch();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const started = Date.now();
    await client.updateBackend('greeter', greeterV2, options);
    const tookS = (Date.now() - started) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 500));
    const { statuses, total, fewestReady } = await watching.stop();
    console.log(`rolling update of 3 replicas (maxSurge 1): ${tookS.toFixed(1)} s`);

    expect([...statuses.keys()]).toEqual([200]);
    expect(total).toBeGreaterThan(50);
    expect(fewestReady).toBeGreaterThanOrEqual(3);
    const { versions } = watching;
    expect(versions[0]).toBe('v1');
    expect(versions.at(-1)).toBe('v2');
    expect(versions.slice(-20)).toEqual(Array(20).fill('v2'));

    const after = await client.getBackendConfig('greeter');
    expect(after.version).not.toBe(before.version);
    expect(after.rollout).toEqual({ state: 'completed', fromVersion: before.version, targetVersion: after.version, reason: null });
    const replicas = await client.listReplicas('greeter');
    expect(replicas.map((r) => [r.state, r.version])).toEqual(Array(3).fill(['ready', after.version]));
  });

  it('rolls back a version whose constructor throws; the old version serves throughout', async () => {
    const before = await client.getBackendConfig('greeter');
    const watching = watch();
    const started = Date.now();
    await expect(client.updateBackend('greeter', BrokenGreeter, options)).rejects.toMatchObject({
      code: 'ROLLOUT_FAILED',
      message: expect.stringMatching(/bad weights/),
    });
    const tookS = (Date.now() - started) / 1000;
    const { statuses, fewestReady } = await watching.stop();
    console.log(`failed rollout rolled back in ${tookS.toFixed(1)} s`);

    expect([...statuses.keys()]).toEqual([200]);
    expect(new Set(watching.versions)).toEqual(new Set(['v2']));
    expect(fewestReady).toBeGreaterThanOrEqual(3);
    const info = (await client.listBackends()).greeter!;
    expect(info.version).toBe(before.version);
    expect(info.rollout).toMatchObject({
      state: 'rolled-back',
      targetVersion: before.version,
      reason: expect.stringMatching(/bad weights/),
    });
    const replicas = await client.listReplicas('greeter');
    expect(replicas.map((r) => [r.state, r.version])).toEqual(Array(3).fill(['ready', before.version]));
    const status = await renderStatus(client);
    expect(status).toMatch(new RegExp(`greeter\\s+3/3 ready\\s+version ${before.version}\\s+rollout rolled-back .*bad weights`));
    const metrics = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
    expect(metrics).toContain('flotilla_rollout{backend="greeter",state="rolled-back"} 1');
    const { events } = await client.listEvents({ limit: 1000 });
    expect(events.filter((e) => e.kind.startsWith('rollout.')).map((e) => e.kind)).toEqual([
      'rollout.started',
      'rollout.completed',
      'rollout.started',
      'rollout.failed',
      'rollout.rolled-back',
    ]);
    expect(events.find((e) => e.kind === 'rollout.failed')).toMatchObject({
      backend: 'greeter',
      message: expect.stringMatching(/bad weights/),
    });
  });

  it('checks updateBackend as createBackend: an unknown backend or bad options change nothing', async () => {
    await expect(client.updateBackend('nobody', greeterV1, options)).rejects.toMatchObject({ code: 'BACKEND_NOT_FOUND' });
    await expect(client.updateBackend('greeter', greeterV1, { config: { numReplicas: -1 } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect((await client.listReplicas('greeter')).filter((r) => r.state === 'ready')).toHaveLength(3);
  });
});

describe('flotilla status --watch', () => {
  const CLI = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-'));
  const instance = `test-${shortId(3)}`;
  let client: Client;
  let admin: string;
  const gated = (version: string, gate?: string) => ({
    initArgs: [version],
    config: { numReplicas: 2, gracefulShutdownTimeoutS: 1, userConfig: gate === undefined ? {} : { gate } },
    replicaOptions: { numCpus: 0.25, runtimeEnv: { context: join(FIXTURES, 'gated-backend') } },
  });

  beforeAll(async () => {
    const port = await freePort();
    admin = `http://127.0.0.1:${port}`;
    ({ client } = await startFlotilla({ instance, stateDir, admin: { host: '127.0.0.1', port }, rolloutMaxSurge: 1 }));
    await client.createBackend('gated', 'handlers/gated.js:Gated', gated('v1'));
  });
  afterAll(() => client.shutdown());

  /** Running containers of the instance that run `version`. */
  const ofVersion = (version: string) =>
    execFileSync(
      'docker',
      ['ps', '-q', '--no-trunc', '--filter', `label=${LABELS.instance}=${instance}`, '--filter', `label=${LABELS.version}=${version}`],
      { encoding: 'utf8' },
    )
      .split('\n')
      .filter((id) => id !== '');

  it('prints a line per change of a rollout, without a terminal, until it completes', async () => {
    const from = (await client.getBackendConfig('gated')).version;
    // Each replica of the new version waits for /tmp/go in its container before it is ready: the test lets them through one by one.
    const update = client.updateBackend('gated', 'handlers/gated.js:Gated', gated('v2', '/tmp/go'));
    update.catch(() => undefined);
    await expect.poll(async () => (await client.getBackendConfig('gated')).rollout?.state, { timeout: 60_000 }).toBe('rolling');
    const to = (await client.getBackendConfig('gated')).version;

    const watcher = spawn(
      process.execPath,
      [CLI, 'status', '--watch', '--address', admin, '--instance', instance, '--state-dir', stateDir],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    watcher.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => watcher.once('exit', resolve));
    const shows = (line: string) => expect.poll(() => out.split('\n'), { timeout: 60_000 }).toContain(line);

    await shows(`gated: rolling ${from} → ${to}, 0/2 ready of version ${to}, 2 of older versions`);
    const open = async (count: number) => {
      await expect.poll(() => ofVersion(to).length, { timeout: 60_000 }).toBe(count);
      for (const id of ofVersion(to)) execFileSync('docker', ['exec', id, 'touch', '/tmp/go']);
    };
    await open(1);
    await shows(`gated: rolling ${from} → ${to}, 1/2 ready of version ${to}, 1 of older versions`);
    await open(2);
    await update;
    expect(await exited).toBe(0);
    const lines = out.trim().split('\n');
    expect(lines[0]).toBe(`gated: rolling ${from} → ${to}, 0/2 ready of version ${to}, 2 of older versions`);
    expect(lines.at(-1)).toBe(`gated: completed ${from} → ${to}, 2/2 ready of version ${to}`);
    expect(new Set(lines).size).toBe(lines.length);
    expect(ofVersion(from)).toEqual([]);
  });
});
