import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LABELS } from '../../src/common/labels.js';
import { Limiter } from '../../src/common/limiter.js';
import { loadConfig } from '../../src/config/config.js';
import { BackendState } from '../../src/controller/backend-state.js';
import { targetOf } from '../../src/controller/target.js';
import { instanceLabels, ReplicaLauncher } from '../../src/controller/launcher.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { DEFAULT_BACKEND_CONFIG } from '../../src/spec/validation.js';
import { Scheduler } from '../../src/resources/scheduler.js';
import { TimedRuntime } from '../../src/runtime/timed-runtime.js';
import { FakeReplicaClient } from './fakes/fake-replica-client.js';
import { FakeRuntime } from './fakes/fake-runtime.js';
import { ManualClock } from './fakes/manual-clock.js';
import { silentLogger } from './fakes/silent-logger.js';

function setup() {
  const clock = new ManualClock();
  const fake = new FakeRuntime(clock);
  const runtime = new TimedRuntime(fake, 50);
  const client = new FakeReplicaClient();
  const scheduler = new Scheduler({ cpus: 8, memoryMb: 8192, gpus: [] });
  const settings = loadConfig({ instance: 'r', stateDir: mkdtempSync(join(tmpdir(), 'flt-rec-')), transport: 'tcp' });
  const driver = new ReplicaLauncher({
    settings,
    runtime,
    client,
    scheduler,
    clock,
    logger: silentLogger,
    limiter: new Limiter(4),
    drained: () => Promise.resolve(),
    cut: () => undefined,
  });
  const backends = new Map<string, BackendState>();
  const backend = new BackendState(
    targetOf({
      name: 'b',
      definition: { kind: 'import', module: 'b.js', exportName: 'B' },
      initArgs: [],
      config: { ...DEFAULT_BACKEND_CONFIG, numReplicas: 1 },
      resources: { numCpus: 1, memoryMb: null, numGpus: 0, env: {} },
      runtimeEnv: {
        runtime: 'node',
        context: undefined,
        packages: undefined,
        dockerfile: undefined,
        buildArgs: undefined,
        image: 'b:1',
        port: undefined,
        healthPath: undefined,
      },
      image: 'b:1',
    }),
  );
  backends.set('b', backend);
  let steps = 0;
  const reconciler = new Reconciler({
    backends,
    runtime,
    driver,
    scheduler,
    clock,
    logger: silentLogger,
    labels: instanceLabels('r'),
    settings,
    onStep: () => (steps += 1),
    onConfigsChanged: () => undefined,
  });
  const settle = async () => {
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
  };
  return { clock, fake, backends, backend, reconciler, settle, steps: () => steps };
}

describe('the reconcile loop', () => {
  it('removes containers of this instance that no backend knows, and keeps the ones it does', async () => {
    const h = setup();
    h.reconciler.step();
    await h.settle();
    expect(h.fake.containers.size).toBe(1);
    const stray = h.fake.add({ ...instanceLabels('r'), [LABELS.backend]: 'gone', [LABELS.replica]: 'zzzz' });
    const other = h.fake.add({ ...instanceLabels('other'), [LABELS.backend]: 'b', [LABELS.replica]: 'yyyy' });
    await h.reconciler.observe();
    expect(h.fake.containers.has(stray.containerId)).toBe(false);
    expect(h.fake.containers.has(other.containerId)).toBe(true);
    expect(h.fake.containers.size).toBe(2);
  });

  it('carries on stepping when the engine stops answering a listing', async () => {
    const h = setup();
    h.fake.hang = true;
    const before = h.steps();
    await h.reconciler.observe();
    expect(h.steps()).toBe(before);
    h.reconciler.step();
    expect(h.steps()).toBe(before + 1);
    expect(h.backend.replicas.map((r) => r.state)).toEqual(['starting']);
  });

  it('forgets a deleted backend once its last replica has stopped', async () => {
    const h = setup();
    h.reconciler.step();
    await h.settle();
    h.backend.delete(false);
    h.reconciler.step();
    await h.settle();
    h.reconciler.step();
    expect(h.backends.has('b')).toBe(false);
    expect(h.fake.containers.size).toBe(0);
  });
});
