import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LABELS } from '../../src/common/labels.js';
import { loadConfig } from '../../src/config/config.js';
import { Limiter } from '../../src/common/limiter.js';
import { BackendState } from '../../src/controller/backend-state.js';
import { targetOf } from '../../src/controller/target.js';
import { parseCheckpoint } from '../../src/spec/saved-state.js';
import { adoptContainers } from '../../src/controller/adoption.js';
import { ReplicaLauncher } from '../../src/controller/launcher.js';
import type { ReplicaState } from '../../src/controller/replica.js';
import { DEFAULT_BACKEND_CONFIG } from '../../src/spec/validation.js';
import { Scheduler } from '../../src/resources/scheduler.js';
import type { ContainerRuntime, ReplicaStatus } from '../../src/runtime/container-runtime.js';
import { TimedRuntime } from '../../src/runtime/timed-runtime.js';
import { FakeReplicaClient } from './fakes/fake-replica-client.js';
import { FakeRuntime } from './fakes/fake-runtime.js';
import { ManualClock } from './fakes/manual-clock.js';
import { silentLogger } from './fakes/silent-logger.js';

const HEALTH_PERIOD_MS = 2000;
const READY_TIMEOUT_MS = 10_000;

function saved(numReplicas: number, userConfig: unknown = null) {
  return {
    name: 'model',
    definition: { kind: 'import' as const, module: 'model.js', exportName: 'Model' },
    initArgs: [],
    config: { ...DEFAULT_BACKEND_CONFIG, numReplicas, userConfig, gracefulShutdownTimeoutS: 5 },
    resources: { numCpus: 1, memoryMb: null, numGpus: 0, env: {} },
    runtimeEnv: {
      runtime: 'node' as const,
      context: undefined,
      packages: undefined,
      dockerfile: undefined,
      buildArgs: undefined,
      image: 'model:1',
      port: undefined,
      healthPath: undefined,
    },
    image: 'model:1',
  };
}

/** One backend stepped by hand, as the reconciler steps it, with a fake engine, fake replicas and a manual clock. */
function harness(
  numReplicas: number,
  options: {
    runtime?: ContainerRuntime;
    limit?: number;
    userConfig?: unknown;
    cpus?: number;
    maxSurge?: number;
    onFailure?: 'rollback' | 'pause';
  } = {},
) {
  const events: string[] = [];
  const clock = new ManualClock();
  const fake = new FakeRuntime(clock);
  const runtime = options.runtime ?? fake;
  const client = new FakeReplicaClient();
  const scheduler = new Scheduler({ cpus: options.cpus ?? 8, memoryMb: 8192, gpus: [] });
  const inFlight = new Map<string, { promise: Promise<void>; finish: () => void }>();
  const launcher = new ReplicaLauncher({
    settings: loadConfig({ instance: 't', stateDir: mkdtempSync(join(tmpdir(), 'flt-bs-')), transport: 'tcp' }),
    runtime,
    client,
    scheduler,
    clock,
    logger: silentLogger,
    limiter: new Limiter(options.limit ?? 8),
    drained: (_backend, id) => inFlight.get(id)?.promise ?? Promise.resolve(),
    cut: () => undefined,
  });
  const backend = new BackendState(targetOf(saved(numReplicas, options.userConfig ?? null)));
  let observed: { at: number; replicas: Map<string, ReplicaStatus> } | undefined;
  const flush = async () => {
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
  };
  /** One reconcile step, 100 ms after the previous one, and the operations it launched get their answers. */
  const step = async (times = 1) => {
    for (let i = 0; i < times; i++) {
      clock.advance(100);
      await flush();
      backend.update({
        now: clock.now(),
        observed,
        driver: launcher,
        scheduler,
        log: silentLogger,
        readyTimeoutMs: READY_TIMEOUT_MS,
        healthCheckPeriodMs: HEALTH_PERIOD_MS,
        rollout: { maxSurge: options.maxSurge ?? 1, onFailure: options.onFailure ?? 'rollback' },
        kick: () => undefined,
        onConfigsChanged: () => undefined,
        events: { record: (kind, subject, message) => (events.push(`${kind} ${subject.replica}: ${message}`), {} as never) },
      });
      await flush();
    }
  };
  /** A listing of the engine's containers, leaving out the given replicas as a listing that raced a change may. */
  const observe = async (...missing: string[]) => {
    clock.advance(1);
    const replicas = new Map<string, ReplicaStatus>();
    for (const status of await fake.listReplicas({})) replicas.set(status.labels[LABELS.replica]!, status);
    for (const id of missing) replicas.delete(id);
    observed = { at: clock.now(), replicas };
  };
  const counts = (): Partial<Record<ReplicaState, number>> => {
    const result: Partial<Record<ReplicaState, number>> = {};
    for (const replica of backend.replicas) result[replica.state] = (result[replica.state] ?? 0) + 1;
    return result;
  };
  const ready = (code: number | undefined = 200) => {
    for (const replica of backend.replicas) if (replica.container !== undefined) client.setHealth(replica.container, code);
  };
  /** Keeps a request in flight on the replica until the returned function is called. */
  const holdRequest = (id: string) => {
    let finish = () => undefined as void;
    const promise = new Promise<void>((resolve) => (finish = resolve));
    inFlight.set(id, { promise, finish });
    return finish;
  };
  return { clock, fake, client, scheduler, backend, step, observe, counts, ready, holdRequest, events };
}

describe('a backend stepped by the reconciler', () => {
  it('starts replicas, waits for their health check, then routes to them', async () => {
    const h = harness(2);
    let converged = false;
    void h.backend.converged().then(() => (converged = true));
    await h.step();
    expect(h.counts()).toEqual({ starting: 2 });
    expect(h.fake.containers.size).toBe(2);
    await h.step(3);
    expect(h.counts()).toEqual({ starting: 2 });
    expect(h.backend.routable()).toEqual([]);
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 2 });
    expect(h.backend.routable()).toHaveLength(2);
    expect(converged).toBe(true);
    expect(h.scheduler.free().cpus).toBe(6);
  });

  it('fails a replica whose container exits while starting, with its init error, and backs off before the next', async () => {
    const h = harness(1);
    h.fake.logsFor = () => '{"event":"init_failed","message":"model weights missing"}\n';
    const goal = h.backend.converged();
    goal.catch(() => undefined);
    await h.step(2);
    const [first] = h.backend.replicas;
    h.fake.exit(first!.container!.containerId, 1);
    await h.step(2);
    await expect(goal).rejects.toMatchObject({ code: 'REPLICA_START_FAILED', message: expect.stringMatching(/model weights missing/) });
    // The failure failed a waiting call: no replacement until the controller decides (a new target, or deletion).
    expect(h.counts()).toEqual({ failed: 1 });
    await h.step(3);
    expect(h.counts()).toEqual({});
    h.backend.retarget(h.backend.target);
    await h.step();
    expect(h.counts()).toEqual({ starting: 1 });
    const second = h.backend.replicas[0]!;
    expect(second.history).toEqual({ restarts: 1, lastError: expect.stringMatching(/model weights missing/) });
    expect(h.fake.containers.has(first!.container!.containerId)).toBe(false);
    expect(h.scheduler.free().cpus).toBe(7);

    await h.step();
    h.fake.exit(second.container!.containerId, 1);
    await h.step(2);
    expect(h.counts()).toEqual({ failed: 1 });
    const failedAt = h.clock.now() - 100;
    await h.step();
    expect(h.counts()).toEqual({});
    while (h.clock.now() < failedAt + 900) {
      // second failure in a row: 1 s of backoff
      await h.step();
      expect(h.counts()).toEqual({});
    }
    await h.step(2);
    expect(h.counts()).toEqual({ starting: 1 });
    expect(h.backend.replicas[0]!.history.restarts).toBe(2);
  });

  it('fails a replica that is not ready within the ready timeout', async () => {
    const h = harness(1);
    const goal = h.backend.converged();
    goal.catch(() => undefined);
    await h.step(3);
    expect(h.counts()).toEqual({ starting: 1 });
    h.clock.advance(READY_TIMEOUT_MS);
    await h.step(2);
    await expect(goal).rejects.toMatchObject({ code: 'REPLICA_START_FAILED', message: expect.stringMatching(/not ready within 10 s/) });
    expect(h.counts()).toEqual({ failed: 1 });
  });

  it('replaces a ready replica whose container exited, keeping why in lastError', async () => {
    const h = harness(2);
    await h.step(2);
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 2 });
    const victim = h.backend.replicas[0]!;
    h.fake.exit(victim.container!.containerId, 137);
    await h.step();
    expect(h.counts()).toEqual({ ready: 2 });
    await h.observe();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 1, failed: 1, starting: 1 });
    expect(h.backend.routable().map((r) => r.id)).not.toContain(victim.id);
    await h.step();
    expect(h.counts()).toEqual({ ready: 1, starting: 1 });
    const replacement = h.backend.replicas.find((r) => r.state === 'starting')!;
    expect(replacement.history).toEqual({ restarts: 1, lastError: `replica ${victim.id} exited with code 137` });
  });

  it('replaces a replica the engine lost with its node, saying so rather than reading its logs', async () => {
    const h = harness(1);
    await h.step(2);
    h.ready();
    await h.step(2);
    const victim = h.backend.replicas[0]!;
    h.fake.lose(victim.container!.containerId, 'was lost with its node, which Swarm reports down');
    await h.observe();
    await h.step(3);
    const replacement = h.backend.replicas.find((r) => r.state === 'starting')!;
    expect(replacement.history).toEqual({
      restarts: 1,
      lastError: `replica ${victim.id} was lost with its node, which Swarm reports down`,
    });
  });

  it('records each replica transition as an event: started, ready, failed, replaced, stopped', async () => {
    const h = harness(2);
    await h.step(2);
    h.ready();
    await h.step(2);
    const [victim, other] = h.backend.replicas;
    const started = (r: typeof victim) => `started in container ${r!.container!.containerId.slice(0, 12)}`;
    expect(h.events.sort()).toEqual(
      [
        `replica.started ${victim!.id}: replica ${victim!.id} of model ${started(victim)}`,
        `replica.started ${other!.id}: replica ${other!.id} of model ${started(other)}`,
        `replica.ready ${victim!.id}: replica ${victim!.id} of model is ready`,
        `replica.ready ${other!.id}: replica ${other!.id} of model is ready`,
      ].sort(),
    );
    h.events.length = 0;
    h.fake.exit(victim!.container!.containerId, 137);
    await h.observe();
    await h.step(2);
    const replacement = h.backend.replicas.find((r) => r.state === 'starting')!;
    for (let i = 0; i < 30 && replacement.container === undefined; i++) await h.step();
    expect(h.events).toEqual([
      `replica.failed ${victim!.id}: replica ${victim!.id} of model failed: replica ${victim!.id} exited with code 137`,
      `replica.replaced ${replacement.id}: replica ${replacement.id} of model replaces a failed one (restart 1): replica ${victim!.id} exited with code 137`,
      `replica.started ${replacement.id}: replica ${replacement.id} of model ${started(replacement)}`,
    ]);
    h.events.length = 0;
    h.backend.retarget(targetOf(saved(1)));
    await h.step(3);
    expect(h.events).toContainEqual(expect.stringMatching(/^replica\.stopped \w+: replica \w+ of model stopped$/));
  });

  it('keeps a replica that a listing saw only created, while its start was still under way', async () => {
    const h = harness(1);
    let open = () => undefined as void;
    h.fake.startGate = new Promise<void>((resolve) => (open = resolve));
    await h.step(2);
    await h.observe();
    open();
    await h.step(2);
    h.ready();
    await h.step(4);
    expect(h.counts()).toEqual({ ready: 1 });
  });

  it('keeps a ready replica that a listing missed while the engine says it runs', async () => {
    const h = harness(1);
    await h.step(2);
    h.ready();
    await h.step(2);
    await h.observe(h.backend.replicas[0]!.id);
    await h.step(4);
    expect(h.counts()).toEqual({ ready: 1 });
  });

  it('replaces a ready replica after three failed health checks in a row, not after two', async () => {
    const h = harness(1);
    await h.step(2);
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 1 });
    h.ready(503);
    for (let probe = 1; probe <= 2; probe++) {
      h.clock.advance(HEALTH_PERIOD_MS);
      await h.step(2);
      expect(h.counts()).toEqual({ ready: 1 });
    }
    h.clock.advance(HEALTH_PERIOD_MS);
    await h.step(2);
    expect(h.counts()).toEqual({ failed: 1, starting: 1 });
    expect(h.backend.replicas[0]!.failure?.lastError).toMatch(/stopped answering health checks \(3 in a row\)/);
  });

  it('drains surplus replicas on scale-down: out of routing at once, stopped when their requests are done', async () => {
    const h = harness(2);
    await h.step(2);
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 2 });
    h.backend.retarget(targetOf(saved(1)));
    const leaving = h.backend.replicas[1]!;
    const finish = h.holdRequest(leaving.id);
    let converged = false;
    void h.backend.converged().then(() => (converged = true));
    await h.step(3);
    expect(h.counts()).toEqual({ ready: 1, draining: 1 });
    expect(h.backend.routable().map((r) => r.id)).toEqual([h.backend.replicas[0]!.id]);
    expect(h.fake.containers.size).toBe(2);
    expect(converged).toBe(false);
    finish();
    await h.step();
    expect(h.counts()).toEqual({ ready: 1 });
    expect(h.fake.stops).toEqual([{ containerId: leaving.container!.containerId, timeoutS: 5 }]);
    expect(converged).toBe(true);
  });

  it('drains every replica when deleted, or stops them at once when forced', async () => {
    const h = harness(2);
    await h.step(2);
    h.ready();
    await h.step(2);
    const [busy, idle] = h.backend.replicas;
    const finish = h.holdRequest(busy!.id);
    h.backend.delete(true);
    await h.step();
    expect(h.counts()).toEqual({ draining: 2 });
    expect(h.backend.routable()).toEqual([]);
    await h.step();
    expect(h.counts()).toEqual({ draining: 1 });
    expect(h.fake.containers.has(idle!.container!.containerId)).toBe(false);
    finish();
    await h.step();
    expect(h.counts()).toEqual({});
    expect(h.fake.containers.size).toBe(0);
    expect(h.scheduler.free().cpus).toBe(8);

    const forced = harness(1);
    await forced.step(2);
    forced.ready();
    await forced.step(2);
    forced.holdRequest(forced.backend.replicas[0]!.id);
    forced.backend.delete(false);
    await forced.step(2);
    expect(forced.counts()).toEqual({});
    expect(forced.fake.stops.map((s) => s.timeoutS)).toEqual([0]);
  });

  it('fails the waiting call when a replica does not fit, and holds the backend until it gets a new target', async () => {
    const h = harness(9);
    const goal = h.backend.converged();
    goal.catch(() => undefined);
    await h.step();
    await expect(goal).rejects.toMatchObject({ code: 'INSUFFICIENT_RESOURCES', message: expect.stringMatching(/cannot start a replica/) });
    expect(h.counts()).toEqual({ starting: 8 });
    await h.step(20);
    expect(h.backend.replicas).toHaveLength(8);
    h.backend.retarget(targetOf(saved(8)));
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 8 });
  });

  it('bounds concurrent container starts with the limiter', async () => {
    const h = harness(4, { limit: 2 });
    let open = () => undefined as void;
    h.fake.startGate = new Promise<void>((resolve) => (open = resolve));
    await h.step(2);
    expect(h.counts()).toEqual({ starting: 4 });
    expect(h.fake.startsInFlight).toBe(2);
    open();
    await h.step(2);
    expect(h.fake.containers.size).toBe(4);
    expect(h.fake.maxStartsInFlight).toBe(2);
  });

  it('fails starts with ENGINE_UNAVAILABLE when the engine stops answering, and carries on', async () => {
    const fake = new FakeRuntime(new ManualClock());
    fake.hang = true;
    const h = harness(1, { runtime: new TimedRuntime(fake, 50) });
    const goal = h.backend.converged();
    goal.catch(() => undefined);
    await h.step();
    await new Promise((resolve) => setTimeout(resolve, 80));
    await h.step();
    await expect(goal).rejects.toMatchObject({ code: 'ENGINE_UNAVAILABLE', message: expect.stringMatching(/did not answer/) });
    expect(h.counts()).toMatchObject({ failed: 1 });
  });

  it('pushes a changed live config to ready replicas and counts the backend converged only after', async () => {
    const h = harness(1, { userConfig: { v: 1 } });
    await h.step(2);
    h.ready();
    await h.step(2);
    expect(h.backend.isConverged()).toBe(true);
    h.backend.retarget(targetOf(saved(1, { v: 2 })));
    expect(h.backend.isConverged()).toBe(false);
    await h.step(2);
    expect(h.client.pushes.map((p) => p.config)).toEqual([{ maxBatchSize: 1, batchWaitTimeoutS: 0, userConfig: { v: 2 } }]);
    expect(h.backend.isConverged()).toBe(true);
  });
});

describe('a live-config change stepped by the reconciler', () => {
  const portOf = (replica: { container?: { target: unknown } | undefined }) => String((replica.container!.target as { port: number }).port);
  const live = (userConfig: unknown) => ({ maxBatchSize: 1, batchWaitTimeoutS: 0, userConfig });

  async function readyWith(replicas: number, userConfig: unknown) {
    const h = harness(replicas, { userConfig });
    await h.step(2);
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: replicas });
    return h;
  }

  it('takes a new userConfig through updating, keeps routing meanwhile, and saves what each replica holds', async () => {
    const h = await readyWith(2, { v: 1 });
    let open = () => undefined as void;
    h.client.pushGate = new Promise<void>((resolve) => (open = resolve));
    let configured = false;
    h.backend.reconfigure(targetOf(saved(2, { v: 2 })));
    void h.backend.configured().then(() => (configured = true));
    await h.step();
    expect(h.counts()).toEqual({ updating: 2 });
    expect(h.backend.routable()).toHaveLength(2);
    expect(configured).toBe(false);
    open();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 2 });
    expect(configured).toBe(true);
    expect(h.client.pushes.map((p) => p.config)).toEqual([live({ v: 2 }), live({ v: 2 })]);
    expect(h.backend.saved().replicaConfigs).toEqual(Object.fromEntries(h.backend.replicas.map((r) => [r.id, h.backend.target.liveHash])));
  });

  it('pushes a batching change without calling reconfigure again', async () => {
    const h = await readyWith(1, { v: 1 });
    h.backend.reconfigure(targetOf({ ...saved(1, { v: 1 }), config: { ...saved(1, { v: 1 }).config, maxBatchSize: 4 } }));
    await h.step(3);
    expect(h.client.pushes.map((p) => p.config)).toEqual([{ maxBatchSize: 4, batchWaitTimeoutS: 0 }]);
    expect(h.backend.isConverged()).toBe(true);
  });

  it('rolls back when a replica refuses the push: the previous config is the target again and is pushed back', async () => {
    const h = await readyWith(3, { v: 1 });
    const before = h.backend.target;
    const containers = [...h.fake.containers.keys()];
    const [took, refused, alsoTook] = h.backend.replicas;
    h.client.refuse.add(portOf(refused!));
    h.backend.reconfigure(targetOf(saved(3, { v: 2 })));
    const goal = h.backend.configured();
    goal.catch(() => undefined);
    await h.step(2);
    await expect(goal).rejects.toMatchObject({
      code: 'RECONFIGURE_FAILED',
      message: expect.stringMatching(
        new RegExp(`reconfiguring backend 'model' failed on replica ${refused!.id}: reconfigure threw; the previous config stays in force`),
      ),
    });
    expect(h.backend.target).toEqual(before);
    for (let i = 0; i < 10 && !h.backend.isConverged(); i++) await h.step();
    expect(h.backend.isConverged()).toBe(true);
    expect(h.counts()).toEqual({ ready: 3 });
    expect([...h.fake.containers.keys()]).toEqual(containers);
    const pushedBack = h.client.pushes.slice(3);
    expect(pushedBack.map((p) => p.port).sort()).toEqual([portOf(took!), portOf(alsoTook!)].sort());
    expect(pushedBack.map((p) => p.config)).toEqual([live({ v: 1 }), live({ v: 1 })]);
    expect(Object.values(h.backend.saved().replicaConfigs)).not.toContain(targetOf(saved(3, { v: 2 })).liveHash);
    expect(h.backend.saved().config.userConfig).toEqual({ v: 1 });
  });

  it('replaces a replica that dies while it takes the new config, and keeps the change', async () => {
    const h = await readyWith(2, { v: 1 });
    let open = () => undefined as void;
    h.client.pushGate = new Promise<void>((resolve) => (open = resolve));
    const [dying, living] = h.backend.replicas;
    const next = targetOf(saved(2, { v: 2 }));
    h.backend.reconfigure(next);
    let configured = false;
    void h.backend.configured().then(() => (configured = true));
    await h.step();
    expect(h.counts()).toEqual({ updating: 2 });
    h.fake.exit(dying!.container!.containerId, 137);
    h.client.unreachable.add(portOf(dying!));
    open();
    await h.step(2);
    expect(h.backend.target).toEqual(next);
    expect(dying!.state).not.toBe('ready');
    expect(dying!.failure?.lastError).toMatch(/connection refused/);
    expect(living!.state).toBe('ready');
    for (let i = 0; i < 10 && !h.backend.isConverged(); i++) {
      h.ready();
      await h.step();
    }
    expect(h.counts()).toEqual({ ready: 2 });
    expect(h.backend.replicas.every((r) => r.liveHash === next.liveHash)).toBe(true);
    const replacement = h.backend.replicas.find((r) => r !== living)!;
    expect(replacement.history).toMatchObject({ restarts: 1 });
    expect(h.client.pushes).toHaveLength(2);
    expect(configured).toBe(true);
  });

  it('takes a config change during a code rollout: replicas of the new version get it, the old ones keep theirs until replaced', async () => {
    const h = await readyWith(3, { v: 1 });
    const first = h.backend.target.version;
    h.backend.rollOut(targetOf({ ...saved(3, { v: 1 }), image: 'model:2' }));
    while (!h.backend.replicas.some((r) => r.version !== first && r.state === 'ready')) {
      h.ready();
      await h.step();
    }
    const oldPorts = new Set(h.backend.replicas.filter((r) => r.version === first).map(portOf));
    const next = targetOf({ ...saved(3, { v: 2 }), image: 'model:2' });
    h.backend.reconfigure(next);
    const configured = h.backend.configured();
    for (let i = 0; i < 100 && !h.backend.isConverged(); i++) {
      h.ready();
      await h.step();
    }
    await configured;
    expect(h.counts()).toEqual({ ready: 3 });
    expect(h.backend.replicas.every((r) => r.version === next.version && r.liveHash === next.liveHash)).toBe(true);
    expect(h.backend.info().rollout?.state).toBe('completed');
    expect(h.client.pushes.length).toBeGreaterThan(0);
    expect(h.client.pushes.filter((p) => oldPorts.has(p.port))).toEqual([]);
    expect(new Set(h.client.pushes.map((p) => JSON.stringify(p.config)))).toEqual(new Set([JSON.stringify(live({ v: 2 }))]));
  });
});

describe('adoption', () => {
  function labelsFor(h: ReturnType<typeof harness>, id: string, hashes: { version?: string; config?: string }) {
    return {
      [LABELS.managed]: 'true',
      [LABELS.instance]: 't',
      [LABELS.backend]: 'model',
      [LABELS.replica]: id,
      [LABELS.placement]: JSON.stringify({ cpus: 1, memoryMb: null, gpuIds: [], gpuShare: 0 }),
      [LABELS.restarts]: '2',
      ...(hashes.version === undefined ? {} : { [LABELS.version]: hashes.version }),
      ...(hashes.config === undefined ? {} : { [LABELS.configHash]: hashes.config }),
    };
  }

  it('adopts running containers as starting, probes them before routing, and removes none that match', async () => {
    const h = harness(1);
    const { version, liveHash } = h.backend.target;
    const status = h.fake.add(labelsFor(h, 'aaaa', { version, config: liveHash }));
    const strays = adoptContainers(new Map([['model', h.backend]]), [status], h.scheduler, h.clock.now());
    expect(strays).toEqual([]);
    expect(h.counts()).toEqual({ starting: 1 });
    expect(h.backend.routable()).toEqual([]);
    expect(h.scheduler.free().cpus).toBe(7);
    h.client.setHealth(status, 200);
    await h.step(3);
    expect(h.counts()).toEqual({ ready: 1 });
    expect(h.backend.replicas[0]!.history.restarts).toBe(2);
    expect(h.client.pushes).toEqual([]);
    expect(h.fake.containers.size).toBe(1);
  });

  it('reconfigures an adopted replica whose live config differs before it is ready, and rolls over one of another version', async () => {
    const h = harness(2, { userConfig: { v: 2 } });
    const { version } = h.backend.target;
    const stale = h.fake.add(labelsFor(h, 'stale', { version, config: 'old-config' }));
    const oldImage = h.fake.add(labelsFor(h, 'oldimg', { version: 'old-version', config: 'old-config' }));
    const foreign = h.fake.add({ ...labelsFor(h, 'x', {}), [LABELS.backend]: 'ghost' });
    const strays = adoptContainers(new Map([['model', h.backend]]), [stale, oldImage, foreign], h.scheduler, h.clock.now());
    expect(strays.map((s) => s.containerId)).toEqual([foreign.containerId]);
    h.client.setHealth(stale, 200);
    h.client.setHealth(oldImage, 200);
    await h.step();
    // The old version keeps serving (and keeps its live config) until a replica of the current one takes its place.
    expect(h.counts()).toEqual({ starting: 3 });
    await h.step(4);
    expect(h.counts()).toEqual({ ready: 2, starting: 1 });
    expect(h.backend.replicas.find((r) => r.id === 'oldimg')?.state).toBe('ready');
    h.ready();
    await h.step(6);
    expect(h.counts()).toEqual({ ready: 2 });
    expect(h.client.pushes.map((p) => p.config)).toEqual([{ maxBatchSize: 1, batchWaitTimeoutS: 0, userConfig: { v: 2 } }]);
    expect(h.backend.replicas.find((r) => r.id === 'stale')?.state).toBe('ready');
    expect(h.backend.replicas.some((r) => r.id === 'oldimg')).toBe(false);
    expect(h.fake.containers.has(oldImage.containerId)).toBe(false);
  });
});

describe('a rolling update stepped by the reconciler', () => {
  const v2 = () => targetOf({ ...saved(3), image: 'model:2' });

  async function readyOn(h: ReturnType<typeof harness>) {
    await h.step(2);
    h.ready();
    await h.step(2);
    expect(h.counts()).toEqual({ ready: 3 });
  }

  /** Replica counts by version ('v1' is the first target's) and state, e.g. { 'v1 ready': 2, 'v2 starting': 1 }. */
  function byVersion(h: ReturnType<typeof harness>, first: string) {
    const result: Record<string, number> = {};
    for (const r of h.backend.replicas) {
      const key = `${r.version === first ? 'v1' : 'v2'} ${r.state}`;
      result[key] = (result[key] ?? 0) + 1;
    }
    return result;
  }

  /** Steps until the backend converged, making new replicas healthy; returns the fewest ready and most live replicas seen. */
  async function stepThrough(h: ReturnType<typeof harness>, healthy = true) {
    let fewestReady = Infinity;
    let mostLive = 0;
    for (let i = 0; i < 100 && !h.backend.isConverged(); i++) {
      if (healthy) h.ready();
      await h.step();
      fewestReady = Math.min(fewestReady, h.backend.routable().length);
      mostLive = Math.max(mostLive, h.fake.containers.size);
    }
    expect(h.backend.isConverged()).toBe(true);
    return { fewestReady, mostLive };
  }

  it('starts a new replica beside the old ones, retires an old one once it is ready, and never serves with fewer', async () => {
    const h = harness(3);
    await readyOn(h);
    const first = h.backend.target.version;
    let done = false;
    h.backend.rollOut(v2());
    void h.backend.converged().then(() => (done = true));
    await h.step();
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3, 'v2 starting': 1 });
    await h.step(5);
    // Not ready yet: nothing old leaves.
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3, 'v2 starting': 1 });
    expect(h.backend.info().rollout).toEqual({ state: 'rolling', fromVersion: first, targetVersion: v2().version, reason: null });
    h.ready();
    await h.step(2);
    expect(byVersion(h, first)).toMatchObject({ 'v1 ready': 2, 'v2 ready': 1, 'v2 starting': 1 });
    const { fewestReady, mostLive } = await stepThrough(h);
    expect(fewestReady).toBeGreaterThanOrEqual(3);
    expect(mostLive).toBeLessThanOrEqual(5);
    expect(byVersion(h, first)).toEqual({ 'v2 ready': 3 });
    expect(h.backend.info()).toMatchObject({ version: v2().version, rollout: { state: 'completed' } });
    expect(h.events.filter((e) => e.startsWith('rollout.'))).toEqual([
      `rollout.started undefined: rolling out version ${v2().version} of model (from ${first})`,
      `rollout.completed undefined: model rolled out version ${v2().version}`,
    ]);
    expect(h.backend.replicaInfo().map((r) => r.version)).toEqual([v2().version, v2().version, v2().version]);
    expect(h.scheduler.free().cpus).toBe(5);
    await h.step();
    expect(done).toBe(true);
  });

  it.each([
    ['when there is no room to surge, and says so', { cpus: 3 }, 0],
    ['with maxSurge 0 even when there is room', { maxSurge: 0 }, 5],
  ])('replaces in place, one at a time, %s', async (_what, options, cpusLeft) => {
    const h = harness(3, options);
    await readyOn(h);
    const first = h.backend.target.version;
    h.backend.rollOut(v2());
    await h.step();
    expect(h.backend.info().rollout?.state).toBe('in-place');
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 2, 'v1 draining': 1 });
    await h.step(3);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 2, 'v2 starting': 1 });
    const { fewestReady, mostLive } = await stepThrough(h);
    expect(fewestReady).toBe(2);
    expect(mostLive).toBe(3);
    expect(byVersion(h, first)).toEqual({ 'v2 ready': 3 });
    expect(h.backend.info().rollout?.state).toBe('completed');
    expect(h.scheduler.free().cpus).toBe(cpusLeft);
  });

  it('rolls back when a replica of the new version fails to start, and the old version keeps serving throughout', async () => {
    const h = harness(3);
    await readyOn(h);
    const first = h.backend.target.version;
    h.fake.logsFor = () => '{"event":"init_failed","message":"constructor threw: bad weights"}\n';
    h.backend.rollOut(v2());
    const goal = h.backend.converged();
    goal.catch(() => undefined);
    await h.step(2);
    const fresh = h.backend.replicas.find((r) => r.version !== first)!;
    h.fake.exit(fresh.container!.containerId, 1);
    await h.step(2);
    await expect(goal).rejects.toMatchObject({ code: 'ROLLOUT_FAILED', message: expect.stringMatching(/bad weights/) });
    expect(h.backend.target.version).toBe(first);
    expect(h.backend.info().rollout).toMatchObject({
      state: 'rolling-back',
      fromVersion: v2().version,
      targetVersion: first,
      reason: expect.stringMatching(/bad weights/),
    });
    expect(h.backend.routable()).toHaveLength(3);
    const { fewestReady } = await stepThrough(h, false);
    expect(fewestReady).toBe(3);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3 });
    expect(h.backend.info().rollout?.state).toBe('rolled-back');
    expect(h.backend.saved().rollout).not.toHaveProperty('previous');
    expect(h.events.filter((e) => e.startsWith('rollout.'))).toEqual([
      `rollout.started undefined: rolling out version ${v2().version} of model (from ${first})`,
      expect.stringMatching(
        new RegExp(`^rollout.failed undefined: rollout of model to ${v2().version} failed, rolling back to ${first}: .*bad weights`),
      ),
      `rollout.rolled-back undefined: model rolled back to version ${first}`,
    ]);
  });

  it('rolls back from half way: the new replicas that were ready are replaced by old ones again', async () => {
    const h = harness(3);
    await readyOn(h);
    const first = h.backend.target.version;
    h.backend.rollOut(v2());
    while ((byVersion(h, first)['v2 ready'] ?? 0) < 1) {
      h.ready();
      await h.step();
    }
    expect(byVersion(h, first)).toMatchObject({ 'v2 starting': 1 });
    h.clock.advance(READY_TIMEOUT_MS);
    await h.step(2);
    expect(h.backend.info().rollout?.state).toBe('rolling-back');
    const { fewestReady } = await stepThrough(h);
    expect(fewestReady).toBeGreaterThanOrEqual(3);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3 });
  });

  it('rolls back in place too when there is no room, and ends rolled back', async () => {
    const h = harness(3, { cpus: 3 });
    await readyOn(h);
    const first = h.backend.target.version;
    h.backend.rollOut(v2());
    const fresh = () => h.backend.replicas.filter((r) => r.version !== first);
    while (!fresh().some((r) => r.state === 'ready')) {
      h.ready();
      await h.step();
    }
    while (!fresh().some((r) => r.state === 'starting' && r.container !== undefined)) await h.step();
    expect(h.backend.info().rollout?.state).toBe('in-place');
    h.fake.exit(fresh().find((r) => r.state === 'starting')!.container!.containerId, 1);
    await h.step(2);
    expect(h.backend.info().rollout?.state).toBe('rolling-back');
    const { fewestReady } = await stepThrough(h);
    expect(fewestReady).toBe(2);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3 });
    expect(h.backend.info().rollout?.state).toBe('rolled-back');
    expect(h.scheduler.free().cpus).toBe(0);
  });

  /** 3 ready replicas of v1 whose rollout to v2 paused when its first new replica failed. */
  async function pausedRollout() {
    const h = harness(3, { onFailure: 'pause' });
    await readyOn(h);
    const first = h.backend.target.version;
    h.backend.rollOut(v2());
    const goal = h.backend.converged();
    goal.catch(() => undefined);
    await h.step(2);
    h.fake.exit(h.backend.replicas.find((r) => r.version !== first)!.container!.containerId, 1);
    await h.step(2);
    await expect(goal).rejects.toMatchObject({ code: 'ROLLOUT_FAILED' });
    return { h, first };
  }

  it('pauses instead when told to: no more new replicas, the old ones serve', async () => {
    const { h, first } = await pausedRollout();
    await h.step(20);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3 });
    expect(h.backend.info().rollout).toMatchObject({ state: 'paused', targetVersion: v2().version });
    expect(h.backend.target.version).toBe(v2().version);
  });

  it('still replaces an old replica that fails while paused, with one of the last good version', async () => {
    const { h, first } = await pausedRollout();
    await h.step(5);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3 });

    const victim = h.backend.replicas[0]!;
    h.fake.exit(victim.container!.containerId, 137);
    await h.observe();
    await h.step(2);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 2, 'v1 failed': 1, 'v1 starting': 1 });
    await h.step(2);
    h.ready();
    await h.step(3);
    expect(byVersion(h, first)).toEqual({ 'v1 ready': 3 });
    const replacement = h.backend.replicaInfo().find((r) => r.restarts === 1)!;
    expect(replacement).toMatchObject({ version: first, lastError: `replica ${victim.id} exited with code 137` });
    expect(h.fake.containers.get(replacement.containerId)?.spec?.image).toBe('model:1');
    expect(h.backend.info().rollout).toMatchObject({ state: 'paused', targetVersion: v2().version });
  });

  it('keeps a rollout under way in the saved state, with the version to roll back to', async () => {
    const h = harness(3);
    await readyOn(h);
    const first = h.backend.target.version;
    h.backend.rollOut(v2());
    const saved = h.backend.saved();
    expect(saved.rollout).toMatchObject({ state: 'rolling', targetVersion: v2().version, previous: { image: 'model:1' } });
    const parsed = parseCheckpoint('state.json', JSON.parse(JSON.stringify({ version: 2, backends: [saved], endpoints: [] })));
    const restored = new BackendState(targetOf(parsed!.backends[0]!), {}, parsed!.backends[0]!.rollout);
    expect(restored.info().rollout).toMatchObject({ state: 'rolling', fromVersion: first });
    expect(restored.saved()).toEqual(saved);
    const broken = { ...saved, rollout: { ...saved.rollout, previous: { name: 'model' } } };
    expect(() => parseCheckpoint('state.json', { version: 2, backends: [broken], endpoints: [] })).toThrow(
      expect.objectContaining({ code: 'STATE_INVALID' }),
    );
  });

  it('scales a rolling backend for the autoscaler: the target and the version to roll back to, and undoes it', async () => {
    const h = harness(3);
    await readyOn(h);
    h.backend.rollOut(v2());
    const undo = h.backend.scaleTo(4);
    expect(h.backend.saved()).toMatchObject({ config: { numReplicas: 4 }, rollout: { previous: { config: { numReplicas: 4 } } } });
    undo();
    expect(h.backend.saved()).toMatchObject({ config: { numReplicas: 3 }, rollout: { previous: { config: { numReplicas: 3 } } } });
  });

  it('reads a state file written before autoscaling as fixed counts', () => {
    const { autoscaling, ...config } = saved(2).config;
    expect(autoscaling).toBeNull();
    const old = {
      ...saved(2),
      config,
      rollout: { state: 'completed', fromVersion: 'a', targetVersion: 'b', reason: null, previous: { ...saved(1), config } },
    };
    const parsed = parseCheckpoint('state.json', { version: 2, backends: [old], endpoints: [] });
    expect(parsed?.backends[0]?.config.autoscaling).toBeNull();
    expect(parsed?.backends[0]?.rollout?.previous?.config.autoscaling).toBeNull();
  });
});
