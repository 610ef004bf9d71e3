import { rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type {
  AutoscalingStatus,
  BackendConfig,
  BackendInfo,
  BuildInfo,
  CapacityInfo,
  CreateEndpointOptions,
  EndpointInfo,
  ReplicaInfo,
} from '../api.js';
import { settlesWithin, type Clock } from '../common/clock.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { shortId } from '../common/ids.js';
import { Limiter } from '../common/limiter.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import type { DataPlane, RoutingSnapshot } from '../dataplane/dispatcher.js';
import { PROTOCOL, type LiveConfig } from '../replica/protocol.js';
import type { Scheduler } from '../resources/scheduler.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import type { ImageBuilder } from '../runtime/image-builder.js';
import { Autoscaler, type AutoscalingMetrics } from './autoscaler.js';
import { withinBounds } from './autoscaling-policy.js';
import { BackendState, liveConfigOf, savedTarget, targetOf, type BackendTarget } from './backend-state.js';
import { CHECKPOINT_VERSION, parseCheckpoint, type EndpointRecord, type SavedBackend } from '../spec/saved-state.js';
import { adoptContainers } from './adoption.js';
import { confinementOf } from '../spec/confinement.js';
import { checkSupports, shippedFile, type ShippableDefinition } from '../spec/definition.js';
import { EndpointState } from './endpoint-state.js';
import { TIMING } from './constants.js';
import { instanceLabels, ReplicaLauncher, runDirOf, type ReplicaClient } from './launcher.js';
import type { EventRecorder } from './event-log.js';
import { Reconciler } from './reconciler.js';
import type { Replica, Started } from './replica.js';
import * as replicaClient from './replica-client.js';
import type { ValidatedRuntimeEnv } from '../spec/runtime-env.js';
import { InstanceLock, StateStore } from './state-store.js';
import {
  validateBackendOptions,
  validateConfigPatch,
  validateEndpointOptions,
  validateName,
  validateProportion,
  validateTraffic,
} from '../spec/validation.js';

const MAX_UNIX_SOCKET_PATH = 107;

export interface ControllerDeps {
  config: FlotillaConfig;
  runtime: ContainerRuntime;
  images: Pick<ImageBuilder, 'backendImage' | 'builds'>;
  scheduler: Scheduler;
  dispatcher: DataPlane;
  logger: Logger;
  clock: Clock;
  /** How replicas are probed and reconfigured; replica-client.ts unless a test fakes it. */
  replicaClient?: ReplicaClient;
  /** Where replica events go (docs/metrics.md#events). */
  events?: EventRecorder;
  /** Where autoscaling decisions and cold starts are counted (docs/metrics.md). */
  autoscalingMetrics?: AutoscalingMetrics;
}

/** A plain HTTP container (runtimeEnv image + port) cannot take userConfig or batch. */
function checkContainerSupports(backend: string, runtimeEnv: ValidatedRuntimeEnv, config: BackendConfig): void {
  if (runtimeEnv.port === undefined) return;
  if (config.userConfig !== null || config.maxBatchSize > 1) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' is a plain HTTP container (runtimeEnv.port): it cannot take userConfig or batching, which need the replica protocol`,
    );
  }
}

const shutDown = (): FlotillaError => new FlotillaError('SHUT_DOWN', 'Flotilla has been shut down; start a new client');

/**
 * The API facade. Every change is validated, the next desired state is saved,
 * and only then is memory changed (a failed save changes nothing); then the
 * reconciler converges on it. Calls wait on their goal (replicas ready,
 * drained, gone), never on each other: no call holds a lock while replicas
 * boot or drain. Only calls that push a live config to one backend wait for
 * each other, per backend.
 */
export class Controller {
  private readonly backends = new Map<string, BackendState>();
  private endpoints = new EndpointState();
  private readonly log: Logger;
  private readonly store: StateStore;
  private readonly lock: InstanceLock;
  private readonly launcher: ReplicaLauncher;
  private readonly client: ReplicaClient;
  private readonly reconciler: Reconciler;
  private readonly autoscaler: Autoscaler;
  /** Per backend, the capacity cap last logged, so that it is logged once per change. */
  private readonly capsLogged = new Map<string, string>();
  private readonly creating = new Set<string>();
  private readonly perBackend = new Map<string, Promise<unknown>>();
  private stopped = false;
  private shuttingDown: Promise<void> | undefined;
  private published = '';

  constructor(private readonly deps: ControllerDeps) {
    const { config, runtime, scheduler, clock, logger, dispatcher } = deps;
    this.log = logger.child({ component: 'controller' });
    const statePath = join(config.stateDir, 'state', `${config.instance}.json`);
    this.store = new StateStore(statePath);
    this.lock = new InstanceLock(`${statePath}.lock`, clock);
    this.client = deps.replicaClient ?? replicaClient;
    this.launcher = new ReplicaLauncher({
      settings: config,
      runtime,
      client: this.client,
      scheduler,
      clock,
      logger,
      limiter: new Limiter(config.maxConcurrentReplicaOps),
      drained: (backend, id) => dispatcher.drained(backend, id),
      cut: (target) => dispatcher.cut(target),
    });
    this.autoscaler = new Autoscaler(dispatcher, scheduler);
    this.reconciler = new Reconciler({
      backends: this.backends,
      runtime,
      driver: this.launcher,
      scheduler,
      clock,
      logger,
      labels: instanceLabels(config.instance),
      settings: config,
      autoscale: (now) => this.autoscale(now),
      onStep: () => {
        this.publish();
        this.countColdStarts();
      },
      onConfigsChanged: () => this.saveQuietly(),
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
    const socketPath = join(runDirOf(config), shortId(), PROTOCOL.socketName);
    if (config.transport === 'unix' && socketPath.length > MAX_UNIX_SOCKET_PATH) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `replica sockets under ${config.stateDir} would be longer than ${MAX_UNIX_SOCKET_PATH} characters; use a shorter stateDir or the tcp transport`,
      );
    }
    const saved = parseCheckpoint(this.store.path, this.store.load());
    for (const backend of saved?.backends ?? []) {
      this.backends.set(backend.name, new BackendState(targetOf(backend), backend.replicaConfigs, backend.rollout));
    }
    this.endpoints = new EndpointState(saved?.endpoints);
    const strays = adoptContainers(this.backends, await runtime.listReplicas(instanceLabels(config.instance)), scheduler, clock.now());
    if (strays.length > 0) {
      this.log.warn('removing containers that are not in the desired state', { count: strays.length });
      await Promise.all(strays.map((status) => runtime.stopReplica(status.containerId, 0)));
    }
    if (saved !== undefined) {
      const adopted = [...this.backends.values()].reduce((sum, b) => sum + b.replicas.length, 0);
      this.log.info('restored state', { backends: this.backends.size, endpoints: this.endpoints.size, adopted });
    }
    this.publish();
    this.reconciler.kick();
  }

  /** Stops managing replicas without touching them, e.g. when the control plane exits; a later init() adopts them. */
  detach(): Promise<void> {
    this.stopped = true;
    this.reconciler.stop();
    for (const backend of this.backends.values()) backend.abandon(shutDown());
    this.lock.release();
    return Promise.resolve();
  }

  /** Runs a reconcile observation soon, e.g. after the proxy saw a replica fail. */
  async tick(): Promise<void> {
    if (!this.stopped || this.shuttingDown !== undefined) await this.reconciler.observe();
  }

  async createBackend(name: string, shippable: ShippableDefinition, options?: unknown): Promise<void> {
    const spec = this.checkBackend(name, shippable, options);
    const checkFree = (): void => {
      if (this.stopped) throw shutDown();
      if (this.backends.has(name) || this.creating.has(name))
        throw new FlotillaError('BACKEND_EXISTS', `backend '${name}' already exists; delete it or choose another name`);
      this.checkFits(name, spec.resources, spec.config.numReplicas);
    };
    checkFree();
    this.creating.add(name);
    let state: BackendState;
    try {
      const target = await this.build(name, shippable, spec);
      this.creating.delete(name);
      checkFree();
      state = new BackendState(target);
      this.save([...this.savedBackends(), state.saved()]);
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
  }

  /**
   * Redeploys a backend. A new version is rolled out by the reconciler (BackendState.rollOut); the call resolves when
   * it completes and rejects with ROLLOUT_FAILED once it rolled back (or paused). The same version only changes config.
   */
  async updateBackend(name: string, shippable: ShippableDefinition, options?: unknown): Promise<void> {
    const spec = this.checkBackend(name, shippable, options);
    return this.exclusive(name, async () => {
      this.backend(name);
      const built = await this.build(name, shippable, spec);
      const state = this.backend(name);
      if (built.version === state.target.version) return this.applyConfig(state, spec.config, built);
      const autoscaling = built.config.autoscaling;
      // An autoscaled backend rolls out at the count it runs now.
      const target =
        autoscaling === null
          ? built
          : { ...built, config: { ...built.config, numReplicas: withinBounds(autoscaling, state.target.config.numReplicas) } };
      const want = target.config.numReplicas;
      const active = state.replicas.filter((r) => r.state !== 'draining' && r.state !== 'failed').length;
      if (want > active) this.checkFits(name, spec.resources, want - active);
      const from = state.target.version;
      const undo = state.rollOut(target);
      try {
        this.save(this.savedBackends());
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

  /** createBackend's and updateBackend's checks of their arguments, before anything is built. */
  private checkBackend(name: string, shippable: ShippableDefinition, options: unknown) {
    validateName(name, 'backend');
    const spec = validateBackendOptions(options);
    const { config, contextDir, runtimeEnv, resources } = spec;
    checkSupports(name, shippable, config, runtimeEnv.runtime);
    checkContainerSupports(name, runtimeEnv, config);
    confinementOf(name, resources, this.deps.config, runtimeEnv.port !== undefined);
    const context = contextDir === undefined ? undefined : resolve(contextDir);
    if (context !== undefined && !statSync(context, { throwIfNoEntry: false })?.isDirectory()) {
      throw new FlotillaError('INVALID_ARGUMENT', `replicaOptions.runtimeEnv.context '${contextDir}' is not a directory`);
    }
    return { ...spec, context };
  }

  /** Builds (or finds) the backend's image: the target it would run. */
  private async build(name: string, shippable: ShippableDefinition, spec: ReturnType<Controller['checkBackend']>): Promise<BackendTarget> {
    const { initArgs, config, runtimeEnv, resources, context } = spec;
    if (runtimeEnv.image !== undefined && !(await this.deps.runtime.imageExists(runtimeEnv.image))) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `replicaOptions.runtimeEnv.image '${runtimeEnv.image}' is not on the Docker engine; pull or build it first`,
      );
    }
    const built =
      runtimeEnv.image === undefined
        ? await this.deps.images.backendImage({
            backend: name,
            ...(context === undefined ? {} : { contextDir: context }),
            ...(shippable.kind === 'import' ? {} : { shippedFile: shippedFile(shippable) }),
            ...(shippable.kind === 'pickled' ? { pythonVersion: shippable.pythonVersion } : {}),
            runtime: runtimeEnv.runtime,
            packages: runtimeEnv.packages,
            ...(runtimeEnv.pip === undefined ? {} : { pip: runtimeEnv.pip }),
            ...(runtimeEnv.apt === undefined ? {} : { apt: runtimeEnv.apt }),
            dockerfile: runtimeEnv.dockerfile,
            buildArgs: runtimeEnv.buildArgs,
          })
        : { image: runtimeEnv.image };
    return targetOf({
      name,
      definition: shippable,
      initArgs,
      config,
      resources,
      runtimeEnv: { ...runtimeEnv, context },
      image: built.image,
      ...(built.contextDigest === undefined ? {} : { contextDigest: built.contextDigest }),
    });
  }

  /** Undoes a createBackend whose replicas failed: forgets the backend and waits until its containers are gone. */
  private async abandonCreate(state: BackendState): Promise<void> {
    if (this.stopped || this.backends.get(state.name) !== state || state.deleting !== undefined) return;
    try {
      this.save(this.savedBackends().filter((b) => b.name !== state.name));
    } catch (error) {
      this.log.error('could not forget a backend whose replicas failed', { backend: state.name, error: errorMessage(error) });
      return;
    }
    state.deleting = { drain: false };
    this.reconciler.kick();
    await state.converged().catch(() => undefined);
  }

  listBackends(): Record<string, BackendInfo> {
    return Object.fromEntries(this.liveBackends().map((backend) => [backend.name, this.infoOf(backend)]));
  }

  getBackendConfig(name: string): BackendInfo {
    return this.infoOf(this.backend(name));
  }

  private infoOf(backend: BackendState): BackendInfo {
    return { ...backend.info(), autoscalingStatus: this.autoscaler.status(backend) };
  }

  /** A request arrived for a backend that has no replica: step now, so that an autoscaled one starts a replica at once. */
  demand(backend: string): void {
    if (this.stopped) return;
    this.autoscaler.demand(backend);
    this.reconciler.kick();
  }

  /** The reconcile step's first part: each autoscaled backend's decision is saved, then set as its target. */
  private autoscale(now: number): void {
    if (this.stopped) return;
    const live = this.liveBackends();
    const autoscaled = new Set(live.filter((b) => b.target.config.autoscaling !== null).map((b) => b.name));
    this.autoscaler.keepOnly(autoscaled);
    for (const name of this.capsLogged.keys()) if (!autoscaled.has(name)) this.capsLogged.delete(name);
    for (const state of live) {
      const config = state.target.config.autoscaling;
      if (config === null || state.rolloutStatus?.state === 'paused') continue;
      const change = this.autoscaler.step(state, config, now);
      this.logCap(state.name, this.autoscaler.status(state));
      if (change === undefined) continue;
      const undo = state.scaleTo(change.to);
      try {
        this.save(this.savedBackends());
      } catch (error) {
        undo();
        this.log.error('could not save an autoscaling decision; trying again next step', {
          backend: state.name,
          error: errorMessage(error),
        });
        continue;
      }
      const { from, to, direction, reason } = change.decision;
      this.log.info(`autoscaling ${state.name} ${direction} from ${from} to ${to} replica(s)`, { backend: state.name, from, to, reason });
      this.deps.events?.record(
        'autoscaling.decided',
        { backend: state.name },
        `autoscaling ${state.name} from ${from} to ${to} replica(s): ${reason}`,
      );
      this.deps.autoscalingMetrics?.decision(state.name, direction);
    }
  }

  /** Logs (and records as an event) a capacity cap when it starts or changes, not on every step. */
  private logCap(name: string, status: AutoscalingStatus | null): void {
    const cap = status?.heldBack?.by === 'capacity' ? status.heldBack.message : '';
    if (cap === (this.capsLogged.get(name) ?? '')) return;
    if (cap === '') {
      this.capsLogged.delete(name);
      this.log.info('autoscaling no longer capped by capacity', { backend: name });
      return;
    }
    this.capsLogged.set(name, cap);
    this.log.warn(`autoscaling ${name} is capped by capacity: ${cap}`, { backend: name, running: status?.runningReplicas });
    this.deps.events?.record('autoscaling.capped', { backend: name }, `autoscaling ${name} is capped by capacity: ${cap}`);
  }

  private countColdStarts(): void {
    for (const { backend, seconds } of this.autoscaler.coldStartsEnded(this.deps.clock.now())) {
      this.log.info('cold start: the first replica is ready', { backend, seconds });
      this.deps.autoscalingMetrics?.coldStart(backend, seconds);
    }
  }

  listReplicas(name: string): ReplicaInfo[] {
    return this.backend(name).replicaInfo();
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
   * Applies a partial config. Live settings (userConfig, batching) are pushed
   * to every ready replica first; if any replica refuses, those that took it
   * get the old settings back and the call fails with the config unchanged.
   * A new replica count resolves once the backend runs exactly that many.
   */
  async updateBackendConfig(name: string, patch: unknown): Promise<void> {
    const changes = validateConfigPatch(patch);
    return this.exclusive(name, () => {
      const state = this.backend(name);
      return this.applyConfig(state, changes, state.target);
    });
  }

  /** updateBackendConfig's work, on `base` (the current target, or updateBackend's of the same version). */
  private async applyConfig(state: BackendState, changes: Partial<BackendConfig>, base: BackendTarget): Promise<void> {
    const name = state.name;
    const previous = state.target;
    const next = { ...previous.config, ...changes };
    if (changes.numReplicas !== undefined && changes.autoscaling === undefined) next.autoscaling = null;
    if (next.autoscaling !== null) next.numReplicas = withinBounds(next.autoscaling, previous.config.numReplicas);
    if (next.numReplicas !== previous.config.numReplicas && state.rolloutStatus?.state === 'paused') {
      throw new FlotillaError(
        'ROLLOUT_PAUSED',
        `backend '${name}' has a paused rollout (${state.rolloutStatus?.reason ?? ''}); call updateBackend with a working version, or the previous one, before scaling it`,
      );
    }
    checkSupports(name, previous.definition, next, previous.runtimeEnv.runtime);
    checkContainerSupports(name, previous.runtimeEnv, next);
    if (next.numReplicas > previous.config.numReplicas) {
      this.checkFits(name, previous.resources, next.numReplicas - state.replicas.filter((r) => r.state !== 'draining').length);
    }
    const userConfigChanged = 'userConfig' in changes && JSON.stringify(next.userConfig) !== JSON.stringify(previous.config.userConfig);
    const liveChanged =
      userConfigChanged ||
      next.maxBatchSize !== previous.config.maxBatchSize ||
      next.batchWaitTimeoutS !== previous.config.batchWaitTimeoutS;
    const target = targetOf({ ...savedTarget(base), config: next });
    this.retarget(state, target);
    const forward = { live: liveConfigOf(next, userConfigChanged), hash: target.liveHash };
    const back = {
      live: liveConfigOf(previous.config, userConfigChanged && previous.config.userConfig !== null),
      hash: previous.liveHash,
    };
    if (liveChanged) {
      try {
        await this.pushLive(state, forward, back);
      } catch (error) {
        this.retarget(state, previous);
        throw error;
      }
    }
    this.reconciler.kick();
    if (next.numReplicas !== previous.config.numReplicas) {
      try {
        await this.convergence(state);
      } catch (error) {
        if (this.backends.get(name) === state && state.deleting === undefined) {
          if (liveChanged) await this.pushLive(state, back, undefined).catch(() => undefined);
          this.retarget(state, previous);
          this.reconciler.kick();
        }
        throw error;
      }
    }
    this.log.info('backend config updated', { backend: name, changes: Object.keys(changes) });
  }

  /** Saves the backend with a new target, then sets it. */
  private retarget(state: BackendState, target: BackendTarget): void {
    this.save(this.savedBackends().map((b) => (b.name === state.name ? { ...state.saved(), ...savedTarget(target) } : b)));
    state.retarget(target);
  }

  /**
   * Pushes `push` to every ready replica; on a failure, those that took it get
   * `undo` (when given) and the call fails. Each replica's saved config hash
   * follows what it holds, 'unknown' when an undo failed too, so that the
   * reconciler (and a control plane adopting it later) pushes it again.
   */
  private async pushLive(state: BackendState, push: LivePush, undo: LivePush | undefined): Promise<void> {
    state.pushing = true;
    try {
      const targets = state.replicas.filter((r) => r.state === 'ready' && r.container !== undefined);
      const results = await Promise.allSettled(targets.map((r) => this.pushTo(r.container!, push.live)));
      const failed = results.findIndex((result) => result.status === 'rejected');
      const hashes = new Map<Replica, string>();
      targets.forEach((replica, index) => {
        if (results[index]?.status === 'fulfilled') hashes.set(replica, push.hash);
      });
      if (failed >= 0 && undo !== undefined) {
        const applied = [...hashes.keys()];
        const undone = await Promise.allSettled(applied.map((r) => this.pushTo(r.container!, undo.live)));
        applied.forEach((replica, index) => hashes.set(replica, undone[index]?.status === 'fulfilled' ? undo.hash : 'unknown'));
      }
      for (const [replica, hash] of hashes) {
        replica.liveHash = hash;
        state.replicaConfigs[replica.id] = hash;
      }
      this.saveQuietly();
      if (failed < 0) return;
      const reason = (results[failed] as PromiseRejectedResult).reason as unknown;
      const code = isFlotillaError(reason) ? reason.code : 'RECONFIGURE_FAILED';
      throw new FlotillaError(
        code,
        `reconfiguring backend '${state.name}' failed on replica ${targets[failed]?.id}: ${errorMessage(reason)}; the previous config stays in force`,
      );
    } finally {
      state.pushing = false;
    }
  }

  private pushTo(container: Started, config: LiveConfig): Promise<void> {
    return this.client.pushConfig(container.target, container.controlSecret ?? '', config, TIMING.configPushTimeoutMs);
  }

  /** Stops routing to the backend's replicas, lets their requests finish (unless forced), then removes them. */
  async deleteBackend(name: string, options: { force?: boolean } = {}): Promise<void> {
    const force = options.force === true;
    return this.exclusive(name, async () => {
      const state = this.backend(name);
      const users = this.endpoints.usersOf(name);
      if (users.length > 0) {
        throw new FlotillaError(
          'BACKEND_IN_USE',
          `backend '${name}' is used by endpoint ${users.map((u) => `'${u}'`).join(', ')}; delete the endpoint or move its traffic first`,
          { endpoints: users },
        );
      }
      this.save(this.savedBackends().filter((b) => b.name !== name));
      state.deleting = { drain: !force };
      this.reconciler.kick();
      await this.convergence(state);
      this.log.info('backend deleted', { backend: name, force });
    });
  }

  createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    return this.change(() => {
      validateName(name, 'endpoint');
      const { backend, route, methods, allowCallMethod } = validateEndpointOptions(options);
      if (this.endpoints.has(name))
        throw new FlotillaError('ENDPOINT_EXISTS', `endpoint '${name}' already exists; delete it or choose another name`);
      if (!this.isLive(backend)) {
        throw new FlotillaError(
          'BACKEND_NOT_FOUND',
          `endpoint '${name}' names backend '${backend}', which does not exist; create it first`,
        );
      }
      const owner = this.endpoints.routeOwner(route);
      if (owner !== undefined) throw new FlotillaError('ROUTE_TAKEN', `route '${route}' is already served by endpoint '${owner}'`);
      const record: EndpointRecord = {
        name,
        route,
        methods,
        traffic: { [backend]: 1 },
        shadows: {},
        ...(allowCallMethod ? { allowCallMethod } : {}),
      };
      this.save(this.savedBackends(), this.endpoints.with(record));
      this.endpoints.set(record);
      this.log.info('endpoint created', { endpoint: name, route, backend });
    });
  }

  listEndpoints(): Record<string, EndpointInfo> {
    return this.endpoints.info();
  }

  setTraffic(name: string, weights: unknown): Promise<void> {
    return this.change(() => {
      validateName(name, 'endpoint');
      const traffic = validateTraffic(weights);
      const endpoint = this.endpoints.get(name);
      const missing = Object.keys(traffic).filter((backend) => !this.isLive(backend));
      if (missing.length > 0) {
        throw new FlotillaError(
          'BACKEND_NOT_FOUND',
          `traffic of endpoint '${name}' names backend ${missing.map((m) => `'${m}'`).join(', ')}, which does not exist`,
        );
      }
      const record = { ...endpoint, traffic };
      this.save(this.savedBackends(), this.endpoints.with(record));
      this.endpoints.set(record);
      this.log.info('traffic set', { endpoint: name, traffic });
    });
  }

  shadowTraffic(name: string, backend: string, proportion: unknown): Promise<void> {
    return this.change(() => {
      validateName(name, 'endpoint');
      validateName(backend, 'backend');
      const share = validateProportion(proportion);
      const endpoint = this.endpoints.get(name);
      if (!this.isLive(backend)) throw new FlotillaError('BACKEND_NOT_FOUND', `shadow backend '${backend}' does not exist`);
      const shadows = { ...endpoint.shadows };
      if (share === 0) delete shadows[backend];
      else shadows[backend] = share;
      const record = { ...endpoint, shadows };
      this.save(this.savedBackends(), this.endpoints.with(record));
      this.endpoints.set(record);
      this.log.info('shadow traffic set', { endpoint: name, backend, proportion: share });
    });
  }

  hasEndpoint(name: string): boolean {
    return this.endpoints.has(name);
  }

  /** Stops routing to the endpoint, then waits (up to its backends' grace period) for its requests in flight. */
  async deleteEndpoint(name: string): Promise<void> {
    let endpoint: EndpointRecord | undefined;
    await this.change(() => {
      endpoint = this.endpoints.get(name);
      this.save(this.savedBackends(), this.endpoints.without(name));
      this.endpoints.delete(name);
    });
    const graceS = Math.max(
      0,
      ...Object.keys(endpoint!.traffic).map((b) => this.backends.get(b)?.target.config.gracefulShutdownTimeoutS ?? 0),
    );
    await settlesWithin(this.deps.dispatcher.endpointIdle(name), graceS * 1000);
    this.log.info('endpoint deleted', { endpoint: name });
  }

  /** Drains and stops every replica this instance started, including any not in the desired state. Idempotent. */
  shutdown(): Promise<void> {
    this.shuttingDown ??= (async () => {
      this.stopped = true;
      this.store.clear();
      this.endpoints.clear();
      const backends = [...this.backends.values()];
      for (const backend of backends) {
        backend.abandon(shutDown());
        backend.deleting = { drain: true };
      }
      this.publish();
      this.reconciler.kick();
      await Promise.all(backends.map((backend) => this.convergence(backend).catch(() => undefined)));
      this.reconciler.stop();
      const { runtime, config } = this.deps;
      const leftovers = await runtime.listReplicas(instanceLabels(config.instance)).catch(() => []);
      await Promise.all(leftovers.map((replica) => runtime.stopReplica(replica.containerId, 0).catch(() => undefined)));
      rmSync(runDirOf(config), { recursive: true, force: true });
      this.lock.release();
      this.log.info('shut down');
    })();
    return this.shuttingDown;
  }

  /** Waits until the backend's replicas match its target (or it is gone, when deleting). */
  private async convergence(state: BackendState): Promise<void> {
    if (!state.isConverged()) await state.converged();
  }

  /** Runs a change to the desired state that has nothing to wait for: it is atomic, since it never awaits. */
  private change(apply: () => void): Promise<void> {
    try {
      if (this.stopped) throw shutDown();
      apply();
      this.publish();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** Runs `operation` after the earlier ones on the same backend; calls on other backends do not wait. */
  private exclusive<T>(name: string, operation: () => Promise<T>): Promise<T> {
    const run = (this.perBackend.get(name) ?? Promise.resolve()).then(() => {
      if (this.stopped) throw shutDown();
      return operation();
    });
    const tail = run.catch(() => undefined);
    this.perBackend.set(name, tail);
    void tail.then(() => {
      if (this.perBackend.get(name) === tail) this.perBackend.delete(name);
    });
    return run;
  }

  /** Throws INSUFFICIENT_RESOURCES unless `count` more replicas fit now; books nothing. */
  private checkFits(name: string, resources: BackendTarget['resources'], count: number): void {
    const { scheduler } = this.deps;
    const { refusal } = scheduler.room(resources, count);
    if (refusal === undefined) return;
    const free = scheduler.free();
    const before = `${free.cpus} CPUs and ${free.memoryMb} MB were free before this request`;
    throw new FlotillaError(
      refusal.code,
      `backend '${name}' cannot add ${count} replica(s): ${refusal.message}; ${before}`,
      refusal.details,
    );
  }

  private liveBackends(): BackendState[] {
    return [...this.backends.values()].filter((b) => b.deleting === undefined);
  }

  private isLive(name: string): boolean {
    return this.backends.get(name)?.deleting === undefined && this.backends.has(name);
  }

  private backend(name: string): BackendState {
    const state = this.backends.get(name);
    if (state === undefined || state.deleting !== undefined)
      throw new FlotillaError('BACKEND_NOT_FOUND', `backend '${name}' does not exist`);
    return state;
  }

  private savedBackends(): SavedBackend[] {
    return this.liveBackends().map((b) => b.saved());
  }

  private save(backends: SavedBackend[], endpoints: EndpointRecord[] = this.endpoints.list()): void {
    if (this.stopped) throw shutDown();
    try {
      this.store.save({ version: CHECKPOINT_VERSION, backends, endpoints });
    } catch (error) {
      throw new FlotillaError(
        'STATE_SAVE_FAILED',
        `saving the state file ${this.store.path} failed (${errorMessage(error)}); nothing was changed. Check the disk and the permissions of stateDir`,
      );
    }
  }

  /** Saves what memory holds, for bookkeeping the reconciler changed (config hashes); a failure is logged. */
  private saveQuietly(): void {
    if (this.stopped) return;
    try {
      this.save(this.savedBackends());
    } catch (error) {
      this.log.error('could not save the state file', { error: errorMessage(error) });
    }
  }

  private publish(): void {
    const snapshot: RoutingSnapshot = {
      endpoints: this.endpoints.routing(),
      backends: [...this.backends.values()].map((b) => ({
        name: b.name,
        maxConcurrentQueries: b.target.config.maxConcurrentQueries,
        maxQueuedRequests: b.target.config.maxQueuedRequests,
        requestTimeoutS: b.target.config.requestTimeoutS,
        noReplicaWaitMs: b.noReplicaWaitMs(this.deps.config.coldStartTimeoutS * 1000),
        coldStart: b.target.config.autoscaling !== null,
        replicas: b.routable(),
      })),
    };
    const text = JSON.stringify(snapshot);
    if (text === this.published) return;
    this.published = text;
    this.deps.dispatcher.update(snapshot);
  }
}

/** A live config to push, and the hash of the config a replica holds once it took it. */
interface LivePush {
  live: LiveConfig;
  hash: string;
}
