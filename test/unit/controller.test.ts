import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/common/clock.js';
import { LABELS } from '../../src/common/labels.js';
import { loadConfig, type ConfigOverrides } from '../../src/config/config.js';
import { Controller } from '../../src/controller/controller.js';
import type { RoutingSnapshot } from '../../src/dataplane/dispatcher.js';
import { Scheduler } from '../../src/resources/scheduler.js';
import type { ReplicaStatus } from '../../src/runtime/container-runtime.js';
import { FakeReplicaClient } from './fakes/fake-replica-client.js';
import { FakeRuntime } from './fakes/fake-runtime.js';
import { silentLogger } from './fakes/silent-logger.js';

const running: Controller[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.detach()));
});

function setup(
  stateDir = mkdtempSync(join(tmpdir(), 'flt-ctl-')),
  overrides: ConfigOverrides = {},
  healthyIf: (status: ReplicaStatus) => boolean = () => true,
) {
  const config = loadConfig({
    ...overrides,
    instance: 'unit',
    stateDir,
    transport: 'tcp',
    logLevel: 'error',
    cpuCapacity: 8,
    memoryCapacityMb: 8192,
    gpus: 'none',
  });
  const runtime = new FakeRuntime(systemClock);
  const client = new FakeReplicaClient();
  const snapshots: RoutingSnapshot[] = [];
  const events: string[] = [];
  const controller = new Controller({
    config,
    runtime,
    images: { backendImage: () => Promise.resolve({ image: 'built:1' }), builds: () => [] },
    scheduler: new Scheduler({ cpus: 8, memoryMb: 8192, gpus: [] }),
    dispatcher: {
      update: (s) => snapshots.push(s),
      drained: () => Promise.resolve(),
      cut: () => undefined,
      endpointIdle: () => Promise.resolve(),
      ongoingRequests: () => 0,
    },
    logger: silentLogger,
    clock: systemClock,
    replicaClient: client,
    events: { record: (kind, subject, message) => (events.push(`${kind}: ${message}`), {} as never) },
  });
  running.push(controller);
  const statePath = join(stateDir, 'state', 'unit.json');
  /** Replicas answer their health checks as soon as their container runs. */
  const healthy = setInterval(() => {
    for (const { status } of runtime.containers.values()) if (healthyIf(status)) client.setHealth(status, 200);
  }, 20);
  healthy.unref();
  return { controller, runtime, client, stateDir, statePath, snapshots, events };
}

const fn = { kind: 'function' as const, name: 'f', source: '() => 1', hasReconfigure: false, acceptsBatch: false };
const klass = {
  kind: 'class' as const,
  name: 'C',
  source: 'class C { reconfigure() {} call() {} }',
  hasReconfigure: true,
  acceptsBatch: false,
};

describe('the controller facade', () => {
  it('keeps memory and containers as they were when the state cannot be saved', async () => {
    const { controller, runtime, statePath } = setup();
    await controller.init();
    await controller.createBackend('a', fn);
    await controller.createEndpoint('a', { backend: 'a', route: '/a' });
    const containers = [...runtime.containers.keys()];
    mkdirSync(`${statePath}.${process.pid}.tmp`, { recursive: true });
    await expect(controller.setTraffic('a', { a: 1, missing: 0 })).rejects.toMatchObject({ code: 'BACKEND_NOT_FOUND' });
    await expect(controller.createEndpoint('b', { backend: 'a', route: '/b' })).rejects.toMatchObject({
      code: 'STATE_SAVE_FAILED',
      message: expect.stringMatching(/nothing was changed/),
    });
    await expect(controller.createBackend('c', fn)).rejects.toMatchObject({ code: 'STATE_SAVE_FAILED' });
    await expect(controller.updateBackendConfig('a', { numReplicas: 3 })).rejects.toMatchObject({ code: 'STATE_SAVE_FAILED' });
    const version = controller.getBackendConfig('a').version;
    await expect(controller.updateBackend('a', { ...fn, source: '() => 9' })).rejects.toMatchObject({ code: 'STATE_SAVE_FAILED' });
    expect(controller.getBackendConfig('a')).toMatchObject({ version, rollout: null });
    await expect(controller.deleteBackend('a', { force: true })).rejects.toMatchObject({ code: 'BACKEND_IN_USE' });
    await expect(controller.deleteEndpoint('a')).rejects.toMatchObject({ code: 'STATE_SAVE_FAILED' });
    expect(Object.keys(controller.listEndpoints())).toEqual(['a']);
    expect(Object.keys(controller.listBackends())).toEqual(['a']);
    expect(controller.getBackendConfig('a').numReplicas).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect([...runtime.containers.keys()]).toEqual(containers);
  });

  it('answers other calls while a backend waits for its replicas', async () => {
    const { controller, client, runtime } = setup();
    await controller.init();
    await controller.createBackend('fast', fn);
    await controller.createEndpoint('fast', { backend: 'fast', route: '/fast' });
    client.health.clear();
    const stuck = new FakeReplicaClient();
    Object.assign(client, { probeHealth: stuck.probeHealth.bind(stuck) });
    let created = false;
    const slow = controller.createBackend('slow', fn).then(() => (created = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(controller.listReplicas('slow').map((r) => r.state)).toEqual(['starting']);
    await controller.setTraffic('fast', { fast: 1 });
    await controller.createEndpoint('other', { backend: 'fast', route: '/other' });
    expect(created).toBe(false);
    for (const { status } of runtime.containers.values()) stuck.setHealth(status, 200);
    await slow;
    expect(controller.listReplicas('slow').map((r) => r.state)).toEqual(['ready']);
  });
});

describe('API events', () => {
  it('are recorded by the controller for each call that succeeded, and not for one that failed', async () => {
    const { controller, events } = setup();
    await controller.init();
    await controller.createBackend('a', klass, { config: { userConfig: { v: 1 } } });
    await controller.createEndpoint('a', { backend: 'a', route: '/a' });
    await controller.setTraffic('a', { a: 1 });
    await controller.updateBackendConfig('a', { numReplicas: 2, userConfig: { v: 2 }, maxConcurrentQueries: 7 });
    await expect(controller.updateBackendConfig('a', { nope: 1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await controller.deleteEndpoint('a');
    await controller.deleteBackend('a');
    expect(events.filter((e) => !e.startsWith('replica.'))).toEqual([
      'backend.created: backend a created with 1 replica(s)',
      'endpoint.created: endpoint a created at /a, serving a',
      'traffic.set: endpoint a traffic: a 1',
      'backend.scaled: backend a scaled from 1 to 2 replica(s)',
      'backend.reconfigured: backend a reconfigured: userConfig {"v":2}',
      'backend.updated: backend a updated: maxConcurrentQueries 7',
      'endpoint.deleted: endpoint a deleted',
      'backend.deleted: backend a deleted',
    ]);
  });
});

describe('updateBackendConfig', () => {
  it('fails a userConfig a replica refuses only once the replicas that took it have the previous one back, saved as before', async () => {
    const { controller, runtime, client, statePath } = setup();
    await controller.init();
    await controller.createBackend('m', klass, { config: { numReplicas: 2, userConfig: { v: 1 } } });
    const [took, refused] = [...runtime.containers.values()].map(({ status }) => String((status.target as { port: number }).port));
    client.refuse.add(refused!);
    await expect(controller.updateBackendConfig('m', { userConfig: { v: 2 } })).rejects.toMatchObject({
      code: 'RECONFIGURE_FAILED',
      message: expect.stringMatching(/reconfigure threw; the previous config stays in force$/),
    });
    expect(client.pushes.filter((p) => p.port === took).map((p) => p.config.userConfig)).toEqual([{ v: 2 }, { v: 1 }]);
    expect(controller.getBackendConfig('m').userConfig).toEqual({ v: 1 });
    expect(JSON.parse(readFileSync(statePath, 'utf8')).backends[0].config.userConfig).toEqual({ v: 1 });
    expect(controller.listReplicas('m').map((r) => r.state)).toEqual(['ready', 'ready']);
  });
});

describe('the state file', () => {
  function stray(runtime: FakeRuntime) {
    return runtime.add({ [LABELS.managed]: 'true', [LABELS.instance]: 'unit', [LABELS.backend]: 'ghost', [LABELS.replica]: 'r1' });
  }

  it.each([
    ['a newer version', JSON.stringify({ version: 99, backends: [], endpoints: [] }), /version 99, written by a newer Flotilla/],
    ['a wrong shape', JSON.stringify({ version: 2, backends: [{ name: 'a' }], endpoints: [] }), /backends\[0\]\.image is not a string/],
    ['a torn file', '{"version": 2, "backends": [', /not valid JSON/],
  ])('refuses %s before touching any container', async (_what, text, message) => {
    const { controller, runtime, statePath } = setup();
    mkdirSync(join(statePath, '..'), { recursive: true });
    writeFileSync(statePath, text);
    const container = stray(runtime);
    await expect(controller.init()).rejects.toMatchObject({ code: 'STATE_INVALID', message: expect.stringMatching(message) });
    expect(runtime.containers.has(container.containerId)).toBe(true);
    expect(runtime.stops).toEqual([]);
    const again = setup(join(statePath, '..', '..'));
    writeFileSync(statePath, JSON.stringify({ version: 2, backends: [], endpoints: [] }));
    await again.controller.init();
  });

  it('migrates version 1 and reconfigures adopted replicas whose live config it cannot vouch for', async () => {
    const { controller, runtime, client, statePath } = setup();
    const config = {
      numReplicas: 1,
      maxConcurrentQueries: 100,
      userConfig: { v: 3 },
      maxBatchSize: 1,
      batchWaitTimeoutS: 0,
      maxQueuedRequests: 1000,
      requestTimeoutS: null,
      gracefulShutdownTimeoutS: 20,
    };
    const backend = {
      name: 'm',
      definition: klass,
      initArgs: [],
      config,
      resources: { numCpus: 1, memoryMb: null, numGpus: 0, env: {} },
      runtimeEnv: { runtime: 'node' },
      image: 'built:1',
    };
    mkdirSync(join(statePath, '..'), { recursive: true });
    writeFileSync(
      statePath,
      JSON.stringify({
        version: 1,
        backends: [backend],
        endpoints: [{ name: 'm', route: '/m', methods: ['GET'], traffic: { m: 1 }, shadows: {} }],
      }),
    );
    const old = runtime.add({
      [LABELS.managed]: 'true',
      [LABELS.instance]: 'unit',
      [LABELS.backend]: 'm',
      [LABELS.replica]: 'old1',
      [LABELS.placement]: JSON.stringify({ cpus: 1, memoryMb: null, gpuIds: [], gpuShare: 0 }),
    });
    client.setHealth(old, 200);
    await controller.init();
    expect(controller.listReplicas('m').map((r) => [r.containerId, r.state])).toEqual([[old.containerId, 'starting']]);
    await expect.poll(() => controller.listReplicas('m')[0]?.state).toBe('ready');
    expect(client.pushes.map((p) => p.config)).toEqual([{ maxBatchSize: 1, batchWaitTimeoutS: 0, userConfig: { v: 3 } }]);
    expect(runtime.containers.has(old.containerId)).toBe(true);
    await expect.poll(() => JSON.parse(readFileSync(statePath, 'utf8')).version).toBe(2);
  });
});

describe('updateBackend', () => {
  it('changes only config for the same version, rolls out a new one, and a paused rollout blocks rescaling until the next', async () => {
    /** Once set, only these containers answer health checks. */
    const healthy: { only?: Set<string> } = {};
    const { controller, runtime } = setup(undefined, { rolloutOnFailure: 'pause', readyTimeoutS: 1 }, (status) =>
      healthy.only === undefined ? true : healthy.only.has(status.containerId),
    );
    await controller.init();
    await controller.createBackend('a', fn, { config: { numReplicas: 2 } });
    const v1 = controller.getBackendConfig('a').version;
    const first = [...runtime.containers.keys()];

    await controller.updateBackend('a', fn, { config: { numReplicas: 2, maxConcurrentQueries: 7 } });
    expect(controller.getBackendConfig('a')).toMatchObject({ version: v1, maxConcurrentQueries: 7, rollout: null });
    expect([...runtime.containers.keys()]).toEqual(first);

    await controller.updateBackend('a', { ...fn, source: '() => 2' }, { config: { numReplicas: 2 } });
    const v2 = controller.getBackendConfig('a').version;
    expect(v2).not.toBe(v1);
    expect(controller.getBackendConfig('a').rollout).toEqual({ state: 'completed', fromVersion: v1, targetVersion: v2, reason: null });
    expect(controller.listReplicas('a').map((r) => [r.state, r.version])).toEqual([
      ['ready', v2],
      ['ready', v2],
    ]);
    expect(controller.listReplicas('a').some((r) => first.includes(r.containerId))).toBe(false);

    healthy.only = new Set(runtime.containers.keys());
    await expect(controller.updateBackend('a', { ...fn, source: '() => 3' }, { config: { numReplicas: 2 } })).rejects.toMatchObject({
      code: 'ROLLOUT_FAILED',
      message: expect.stringMatching(/not ready within 1 s/),
    });
    expect(controller.getBackendConfig('a').rollout).toMatchObject({ state: 'paused', fromVersion: v2 });
    expect(controller.listReplicas('a').filter((r) => r.state === 'ready' && r.version === v2)).toHaveLength(2);
    await expect(controller.updateBackendConfig('a', { numReplicas: 3 })).rejects.toMatchObject({ code: 'ROLLOUT_PAUSED' });

    await controller.updateBackend('a', { ...fn, source: '() => 2' }, { config: { numReplicas: 2 } });
    expect(controller.getBackendConfig('a')).toMatchObject({ version: v2, rollout: { state: 'completed', targetVersion: v2 } });
    await expect(controller.updateBackend('missing', fn)).rejects.toMatchObject({ code: 'BACKEND_NOT_FOUND' });
    await expect(controller.updateBackend('a', fn, { config: { nope: 1 } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
