import { join } from 'node:path';
import type {
  BackendConfig,
  BackendInfo,
  BuildInfo,
  CapacityInfo,
  CreateEndpointOptions,
  EndpointInfo,
  EventKind,
  ReplicaInfo,
} from '../api.js';
import { settlesWithin, type Clock } from '../common/clock.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { KeyedQueue, Limiter } from '../common/limiter.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import type { DataPlane } from '../dataplane/dispatcher.js';
import type { Scheduler } from '../resources/scheduler.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import type { ImageBuilder } from '../runtime/image-builder.js';
import { AutoscaleLoop, Autoscaler, type AutoscalingMetrics } from './autoscaler.js';
import { BackendState } from './backend-state.js';
import { patchedConfig, rolloutTarget, savedTarget, targetOf, type BackendTarget } from './target.js';
import type { EndpointRecord } from '../spec/saved-state.js';
import { adoptContainers } from './adoption.js';
import { checkSupports, type ShippableDefinition } from '../spec/definition.js';
import { configChangeEvents } from './api-events.js';
import { buildTarget, checkBackend, checkContainerSupports, checkFits } from './backend-build.js';
import { DesiredState, shutDown } from './desired-state.js';
import { checkSocketPaths, instanceLabels, ReplicaLauncher, type ReplicaClient } from './launcher.js';
import type { EventRecorder, EventSubject } from './event-log.js';
import { Reconciler } from './reconciler.js';
import * as replicaClient from './replica-client.js';
import { ACTIVE } from './replica-set.js';
import { InstanceLock, StateStore } from './state-store.js';
import { validateConfigPatch } from '../spec/validation.js';

export interface ControllerDeps {
  config: FlotillaConfig;
  runtime: ContainerRuntime;
  images: Pick<ImageBuilder, 'backendImage' | 'builds'>;
  scheduler: Scheduler;
  dispatcher: DataPlane;
  logger: Logger;
  clock: Clock;
  /** How the launcher probes and reconfigures replicas; replica-client.ts unless a test fakes it. */
  replicaClient?: ReplicaClient;
  /** Where API and replica events go (docs/metrics.md#events). */
  events?: EventRecorder;
  /** Where autoscaling decisions and cold starts are counted (docs/metrics.md). */
  autoscalingMetrics?: AutoscalingMetrics;
}

/**
 * The API facade. Every change is validated, the next desired state is saved,
 * and only then is memory changed (a failed save changes nothing): a goal set
 * on the backend (BackendState's reconfigure, rollOut, scaleTo, delete), which
 * the reconciler converges on. Calls wait on their goal (replicas ready,
 * configured, drained, gone), never on each other: no call holds a lock while
 * replicas boot or drain. Only calls that change one backend wait for each
 * other, per backend. A call that succeeds is recorded as an event.
 */
export class Controller {
  private readonly desired: DesiredState;
  private readonly backends: Map<string, BackendState>;
  private readonly log: Logger;
  private readonly store: StateStore;
  private readonly lock: InstanceLock;
  private readonly launcher: ReplicaLauncher;
  private readonly reconciler: Reconciler;
  private readonly autoscaler: Autoscaler;
  private readonly creating = new Set<string>();
  private readonly perBackend = new KeyedQueue();
  private shuttingDown: Promise<void> | undefined;
  private published = '';

  constructor(private readonly deps: ControllerDeps) {
    const { config, runtime, scheduler, clock, logger, dispatcher } = deps;
    this.log = logger.child({ component: 'controller' });
    const statePath = join(config.stateDir, 'state', `${config.instance}.json`);
    this.store = new StateStore(statePath);
    this.desired = new DesiredState(this.store, this.log);
    this.backends = this.desired.backends;
    this.lock = new InstanceLock(`${statePath}.lock`, clock);
    const launcher = (this.launcher = new ReplicaLauncher({
      settings: config,
      runtime,
      client: deps.replicaClient ?? replicaClient,
      scheduler,
      clock,
      logger,
      limiter: new Limiter(config.maxConcurrentReplicaOps),
      drained: (backend, id) => dispatcher.drained(backend, id),
      cut: (target) => dispatcher.cut(target),
    }));
    this.autoscaler = new Autoscaler(dispatcher, scheduler);
    const autoscaling = new AutoscaleLoop({
      autoscaler: this.autoscaler,
      backends: () => (this.desired.stopped ? [] : this.desired.live()),
      save: () => this.desired.save(this.desired.savedBackends()),
      logger,
      ...(deps.events === undefined ? {} : { events: deps.events }),
      ...(deps.autoscalingMetrics === undefined ? {} : { metrics: deps.autoscalingMetrics }),
    });
    this.reconciler = new Reconciler({
      backends: this.backends,
      runtime,
      driver: launcher,
      scheduler,
      clock,
      logger,
      labels: instanceLabels(config.instance),
      settings: config,
      autoscaling,
      onStep: () => this.publish(),
      onConfigsChanged: () => this.desired.saveQuietly(),
      ...(deps.events === undefined ? {} : { events: deps.events }),
    });
  }

  /**
   * Claims the instance, restores the saved desired state (refusing a file it
   * cannot read before touching any container) and adopts the running
   * containers that serve it; others are removed. The reconciler fills gaps.
   */
  async init(): Promise<void> {
    this.lock.acquire(this.deps.config.instance);
    try {
      await this.restore();
    } catch (error) {
      this.lock.release();
      throw error;
    }
    this.reconciler.start();
  }

  private async restore(): Promise<void> {
    const { config, runtime, scheduler, clock } = this.deps;
    checkSocketPaths(config);
    const restored = this.desired.load();
    const strays = adoptContainers(this.backends, await runtime.listReplicas(instanceLabels(config.instance)), scheduler, clock.now());
    if (strays.length > 0) {
      this.log.warn('removing containers that are not in the desired state', { count: strays.length });
      await Promise.all(strays.map((status) => runtime.stopReplica(status.containerId, 0)));
    }
    if (restored) {
      const adopted = [...this.backends.values()].reduce((sum, b) => sum + b.replicas.length, 0);
      this.log.info('restored state', { backends: this.backends.size, endpoints: this.desired.endpoints.size, adopted });
    }
    this.publish();
    this.reconciler.kick();
  }

  /** Stops managing replicas without touching them, e.g. when the control plane exits; a later init() adopts them. */
  detach(): Promise<void> {
    this.desired.stopped = true;
    this.reconciler.stop();
    for (const backend of this.backends.values()) backend.abandon(shutDown());
    this.lock.release();
    return Promise.resolve();
  }

  /** Runs a reconcile observation soon, e.g. after the proxy saw a replica fail. */
  async tick(): Promise<void> {
    if (!this.desired.stopped || this.shuttingDown !== undefined) await this.reconciler.observe();
  }

  async createBackend(name: string, shippable: ShippableDefinition, options?: unknown): Promise<void> {
    const spec = checkBackend(name, shippable, options, this.deps.config);
    const checkFree = (): void => {
      if (this.desired.stopped) throw shutDown();
      if (this.backends.has(name) || this.creating.has(name))
        throw new FlotillaError('BACKEND_EXISTS', `backend '${name}' already exists; delete it or choose another name`);
      checkFits(this.deps.scheduler, name, spec.resources, spec.config.numReplicas);
    };
    checkFree();
    this.creating.add(name);
    let state: BackendState;
    try {
      const target = await buildTarget(this.deps, name, shippable, spec);
      this.creating.delete(name);
      checkFree();
      state = new BackendState(target);
      this.desired.save([...this.desired.savedBackends(), state.saved()]);
      this.backends.set(name, state);
    } finally {
      this.creating.delete(name);
    }
    this.reconciler.kick();
    try {
      await this.convergence(state);
    } catch (error) {
      await this.abandonCreate(state);
      throw error;
    }
    this.log.info('backend created', { backend: name, image: state.target.image, replicas: spec.config.numReplicas });
    this.record('backend.created', { backend: name }, `backend ${name} created with ${state.target.config.numReplicas} replica(s)`);
  }

  /**
   * Redeploys a backend. A new version is rolled out by the reconciler (BackendState.rollOut); the call resolves when
   * it completes and rejects with ROLLOUT_FAILED once it rolled back (or paused). The same version only changes config.
   */
  async updateBackend(name: string, shippable: ShippableDefinition, options?: unknown): Promise<void> {
    const spec = checkBackend(name, shippable, options, this.deps.config);
    return this.exclusive(name, async () => {
      this.desired.backend(name);
      const built = await buildTarget(this.deps, name, shippable, spec);
      const state = this.desired.backend(name);
      if (built.version === state.target.version) return this.applyConfig(state, spec.config, built);
      const target = rolloutTarget(built, state.target);
      const want = target.config.numReplicas;
      const active = state.count({ states: ACTIVE });
      if (want > active) checkFits(this.deps.scheduler, name, spec.resources, want - active);
      const from = state.target.version;
      const undo = state.rollOut(target);
      try {
        this.desired.save(this.desired.savedBackends());
      } catch (error) {
        undo();
        throw error;
      }
      this.log.info('rolling out a new version', { backend: name, from, to: target.version });
      this.reconciler.kick();
      try {
        await this.convergence(state);
      } catch (error) {
        if (isFlotillaError(error, 'ROLLOUT_FAILED') && state.rolloutStatus?.state === 'rolling-back') {
          await this.convergence(state).catch(() => undefined);
        }
        throw error;
      }
      this.log.info('rollout completed', { backend: name, version: target.version });
    });
  }

  /** Undoes a createBackend whose replicas failed: forgets the backend and waits until its containers are gone. */
  private async abandonCreate(state: BackendState): Promise<void> {
    if (this.desired.stopped || this.backends.get(state.name) !== state || state.deleting !== undefined) return;
    try {
      this.desired.save(this.desired.savedBackends().filter((b) => b.name !== state.name));
    } catch (error) {
      this.log.error('could not forget a backend whose replicas failed', { backend: state.name, error: errorMessage(error) });
      return;
    }
    state.delete(false);
    this.reconciler.kick();
    await state.converged().catch(() => undefined);
  }

  listBackends(): Record<string, BackendInfo> {
    return Object.fromEntries(this.desired.live().map((backend) => [backend.name, this.infoOf(backend)]));
  }

  getBackendConfig(name: string): BackendInfo {
    return this.infoOf(this.desired.backend(name));
  }

  private infoOf(backend: BackendState): BackendInfo {
    return { ...backend.info(), autoscalingStatus: this.autoscaler.status(backend) };
  }

  /** A request arrived for a backend that has no replica: step now, so that an autoscaled one starts a replica at once. */
  demand(backend: string): void {
    if (this.desired.stopped) return;
    this.autoscaler.demand(backend);
    this.reconciler.kick();
  }

  listReplicas(name: string): ReplicaInfo[] {
    return this.desired.backend(name).replicaInfo();
  }

  builds(): BuildInfo[] {
    return this.deps.images.builds();
  }

  capacity(): CapacityInfo {
    const { scheduler } = this.deps;
    const { cpus, memoryMb, gpus } = scheduler.capacity;
    return { total: { cpus, memoryMb, gpus: gpus.map((gpu) => gpu.id) }, free: scheduler.free() };
  }

  /**
   * Applies a partial config: a new target of the same version. A new live
   * config (userConfig, batching) is taken by the ready replicas in place; if
   * one refuses it, the backend rolls back to the previous config, pushes it to
   * those that took it, and the call fails. A new replica count resolves once
   * the backend runs exactly that many; if one fails to start, the previous
   * config is restored the same way.
   */
  async updateBackendConfig(name: string, patch: unknown): Promise<void> {
    const changes = validateConfigPatch(patch);
    return this.exclusive(name, async () => {
      const state = this.desired.backend(name);
      const before = state.info();
      await this.applyConfig(state, changes, state.target);
      for (const [kind, message] of configChangeEvents(name, patch as Record<string, unknown>, before))
        this.record(kind, { backend: name }, message);
    });
  }

  /** updateBackendConfig's work, on `base` (the current target, or updateBackend's of the same version). */
  private async applyConfig(state: BackendState, changes: Partial<BackendConfig>, base: BackendTarget): Promise<void> {
    const name = state.name;
    const previous = state.target;
    const next = patchedConfig(previous.config, changes);
    if (next.numReplicas !== previous.config.numReplicas && state.rolloutStatus?.state === 'paused') {
      throw new FlotillaError(
        'ROLLOUT_PAUSED',
        `backend '${name}' has a paused rollout (${state.rolloutStatus?.reason ?? ''}); call updateBackend with a working version, or the previous one, before scaling it`,
      );
    }
    checkSupports(name, previous.definition, next, previous.runtimeEnv.runtime);
    checkContainerSupports(name, previous.runtimeEnv, next);
    if (next.numReplicas > previous.config.numReplicas) {
      checkFits(this.deps.scheduler, name, previous.resources, next.numReplicas - state.count({ states: [...ACTIVE, 'failed'] }));
    }
    const target = targetOf({ ...savedTarget(base), config: next });
    this.desired.saveTarget(state, target);
    state.reconfigure(target);
    this.reconciler.kick();
    const scaled = next.numReplicas !== previous.config.numReplicas;
    const liveChanged = target.liveHash !== previous.liveHash;
    try {
      if (scaled) await this.convergence(state);
      else if (liveChanged) await this.configuration(state);
    } catch (error) {
      if (this.backends.get(name) !== state || state.deleting !== undefined) throw error;
      // A refused live config was rolled back by the backend itself; a replica that failed to start is undone here.
      if (state.target.liveHash !== previous.liveHash || scaled) {
        this.desired.saveTarget(state, previous);
        state.retarget(previous);
        this.reconciler.kick();
      }
      if (liveChanged) await this.configuration(state).catch(() => undefined);
      throw error;
    }
    this.log.info('backend config updated', { backend: name, changes: Object.keys(changes) });
  }

  /** Stops routing to the backend's replicas, lets their requests finish (unless forced), then removes them. */
  async deleteBackend(name: string, options: { force?: boolean } = {}): Promise<void> {
    const force = options.force === true;
    return this.exclusive(name, async () => {
      const state = this.desired.backend(name);
      this.desired.endpoints.checkUnused(name);
      this.desired.save(this.desired.savedBackends().filter((b) => b.name !== name));
      state.delete(!force);
      this.reconciler.kick();
      await this.convergence(state);
      this.log.info('backend deleted', { backend: name, force });
      this.record('backend.deleted', { backend: name }, `backend ${name} deleted${force ? ' (forced)' : ''}`);
    });
  }

  createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    return this.change(() => {
      const record = this.desired.endpoints.creating(name, options, (backend) => this.desired.isLive(backend));
      const [backend] = Object.keys(record.traffic);
      const where = record.route === null ? 'for handles only' : `at ${record.route}`;
      this.setEndpoint(record, 'endpoint.created', { endpoint: name, backend }, `endpoint ${name} created ${where}, serving ${backend}`);
    });
  }

  listEndpoints(): Record<string, EndpointInfo> {
    return this.desired.endpoints.info();
  }

  setTraffic(name: string, weights: unknown): Promise<void> {
    return this.change(() => {
      const record = this.desired.endpoints.withTraffic(name, weights, (backend) => this.desired.isLive(backend));
      const split = Object.entries(record.traffic).map(([backend, weight]) => `${backend} ${weight}`);
      this.setEndpoint(record, 'traffic.set', { endpoint: name }, `endpoint ${name} traffic: ${split.join(', ')}`);
    });
  }

  shadowTraffic(name: string, backend: string, proportion: unknown): Promise<void> {
    return this.change(() => {
      const record = this.desired.endpoints.withShadow(name, backend, proportion, (b) => this.desired.isLive(b));
      const share = record.shadows[backend];
      const what = share === undefined ? `no longer shadows to ${backend}` : `shadows ${share} of its requests to ${backend}`;
      this.setEndpoint(record, 'shadow.set', { endpoint: name, backend }, `endpoint ${name} ${what}`);
    });
  }

  /** Saves the endpoint, then sets it, and records the change. */
  private setEndpoint(record: EndpointRecord, kind: EventKind, subject: EventSubject, message: string): void {
    this.desired.save(this.desired.savedBackends(), this.desired.endpoints.with(record));
    this.desired.endpoints.set(record);
    this.log.info(message, subject);
    this.record(kind, subject, message);
  }

  hasEndpoint(name: string): boolean {
    return this.desired.endpoints.has(name);
  }

  /** Stops routing to the endpoint, then waits (up to its backends' grace period) for its requests in flight. */
  async deleteEndpoint(name: string): Promise<void> {
    let endpoint: EndpointRecord | undefined;
    await this.change(() => {
      endpoint = this.desired.endpoints.get(name);
      this.desired.save(this.desired.savedBackends(), this.desired.endpoints.without(name));
      this.desired.endpoints.delete(name);
    });
    const graceS = Math.max(
      0,
      ...Object.keys(endpoint!.traffic).map((b) => this.backends.get(b)?.target.config.gracefulShutdownTimeoutS ?? 0),
    );
    await settlesWithin(this.deps.dispatcher.endpointIdle(name), graceS * 1000);
    this.log.info('endpoint deleted', { endpoint: name });
    this.record('endpoint.deleted', { endpoint: name }, `endpoint ${name} deleted`);
  }

  /** Drains and stops every replica this instance started, including any not in the desired state. Idempotent. */
  shutdown(): Promise<void> {
    this.shuttingDown ??= (async () => {
      this.desired.clear();
      const backends = [...this.backends.values()];
      for (const backend of backends) {
        backend.abandon(shutDown());
        backend.delete(true);
      }
      this.publish();
      this.reconciler.kick();
      await Promise.all(backends.map((backend) => this.convergence(backend).catch(() => undefined)));
      this.reconciler.stop();
      await this.launcher.removeAll();
      this.lock.release();
      this.log.info('shut down');
    })();
    return this.shuttingDown;
  }

  /** Waits until the backend's replicas match its target (or it is gone, when deleting). */
  private async convergence(state: BackendState): Promise<void> {
    if (!state.isConverged()) await state.converged();
  }

  /** Waits until the backend's ready replicas hold its target's live config. */
  private async configuration(state: BackendState): Promise<void> {
    if (!state.isConfigured()) await state.configured();
  }

  /** Runs a change to the desired state that has nothing to wait for: it is atomic, since it never awaits. */
  private change(apply: () => void): Promise<void> {
    try {
      if (this.desired.stopped) throw shutDown();
      apply();
      this.publish();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Runs `operation` after the earlier ones on the same backend; calls on other backends do not wait. */
  private exclusive<T>(name: string, operation: () => Promise<T>): Promise<T> {
    return this.perBackend.run(name, () => {
      if (this.desired.stopped) throw shutDown();
      return operation();
    });
  }

  private record(kind: EventKind, subject: EventSubject, message: string): void {
    this.deps.events?.record(kind, subject, message);
  }

  private publish(): void {
    const snapshot = this.desired.routing(this.deps.config.coldStartTimeoutS * 1000);
    const text = JSON.stringify(snapshot);
    if (text === this.published) return;
    this.published = text;
    this.deps.dispatcher.update(snapshot);
  }
}
