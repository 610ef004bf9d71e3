import { rmSync, statSync } from 'node:fs';
import { isAbsolute, join, posix, resolve } from 'node:path';
import type { BackendConfig, BackendInfo, CreateEndpointOptions, EndpointInfo, ReplicaInfo, ReplicaResources } from '../api.js';
import { settlesWithin, type Clock } from '../common/clock.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { shortId } from '../common/ids.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import type { Dispatcher, RoutingSnapshot } from '../proxy/dispatcher.js';
import { PROTOCOL, type LiveConfig, type ReplicaEntry } from '../replica/protocol.js';
import type { ContainerRuntime, ReplicaStatus, ReplicaTarget, ReplicaTransport } from '../runtime/container-runtime.js';
import { APP_DIR, SHIPPED_MODULE, type ImageBuilder } from '../runtime/image-builder.js';
import { confinementOf } from './confinement.js';
import { checkSupports, shippedModuleText, summarize, type ShippableDefinition } from './definition.js';
import { probeHealth, pushConfig } from './replica-client.js';
import { prepareReplicaFiles, readControlSecret } from './replica-files.js';
import type { ValidatedRuntimeEnv } from './runtime-env.js';
import type { Placement, Scheduler } from '../resources/scheduler.js';
import { StateStore } from './state-store.js';
import {
  validateBackendOptions,
  validateConfigPatch,
  validateEndpointOptions,
  validateName,
  validateProportion,
  validateTraffic,
} from './validation.js';

const READY_POLL_MS = 100;
const LOG_TAIL_LINES = 20;
const MAX_UNIX_SOCKET_PATH = 107;
const PROBE_TIMEOUT_MS = 2000;
const FAILED_PROBES_TO_REPLACE = 3;
const CONFIG_PUSH_TIMEOUT_MS = 60_000;
const NO_REPLICA_WAIT_MS = 30_000;
const STABLE_UPTIME_MS = 60_000;
const MAX_BACKOFF_MS = 30_000;

interface ReplicaHistory {
  restarts: number;
  lastError: string | null;
}

interface ReplicaRecord extends ReplicaHistory {
  id: string;
  /** For a plain HTTP container, its health path; undefined for replicas that speak the protocol. */
  healthPath: string | undefined;
  placement: Placement;
  containerId: string;
  target: ReplicaTarget;
  hostDir: string | undefined;
  /** Sent on every control call; undefined for plain HTTP containers. */
  controlSecret: string | undefined;
  state: ReplicaInfo['state'];
  startedAt: number;
  failedProbes: number;
}

interface BackendRecord {
  name: string;
  definition: ShippableDefinition;
  initArgs: unknown[];
  config: BackendConfig;
  resources: ReplicaResources;
  runtimeEnv: ValidatedRuntimeEnv;
  image: string;
  replicas: ReplicaRecord[];
  /** Histories of failed replicas whose replacements have not started yet. */
  replacements: ReplicaHistory[];
  consecutiveFailures: number;
  retryAt: number;
}

interface PersistedState {
  version: 1;
  backends: Array<Omit<BackendRecord, 'replicas' | 'replacements' | 'consecutiveFailures' | 'retryAt'>>;
  endpoints: EndpointRecord[];
}

interface EndpointRecord {
  name: string;
  route: string | null;
  methods: string[];
  traffic: Record<string, number>;
  shadows: Record<string, number>;
}

export interface ControllerDeps {
  config: FlotillaConfig;
  runtime: ContainerRuntime;
  images: ImageBuilder;
  scheduler: Scheduler;
  dispatcher: Dispatcher;
  logger: Logger;
  clock: Clock;
}

function failureFromLogs(logs: string): string {
  const lines = logs.trim().split('\n');
  for (const line of lines.reverse()) {
    try {
      const event = JSON.parse(line) as { event?: string; message?: string };
      if (event.event === 'init_failed' && event.message !== undefined) return event.message;
    } catch {
      continue;
    }
  }
  return `last log lines:\n${logs.trim()}`;
}

function liveConfigOf(config: BackendConfig, includeUserConfig: boolean): LiveConfig {
  const live: LiveConfig = { maxBatchSize: config.maxBatchSize, batchWaitTimeoutS: config.batchWaitTimeoutS };
  if (includeUserConfig) live.userConfig = config.userConfig;
  return live;
}

/** Whether a health answer means alive: 200 from the protocol, any 2xx or 3xx from a plain HTTP container. */
async function probe(replica: ReplicaRecord, timeoutMs: number): Promise<boolean> {
  const status = await probeHealth(replica.target, timeoutMs, replica.healthPath);
  return status !== undefined && (replica.healthPath === undefined ? status === 200 : status >= 200 && status < 400);
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

function backoffMs(consecutiveFailures: number): number {
  return consecutiveFailures <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (consecutiveFailures - 2));
}

/**
 * Owns the desired state (backends, endpoints, traffic) and the replicas that
 * serve it. API calls are validated first, then run one at a time; a call that
 * fails undoes what it started, so what was already running is untouched.
 * After every change the routing snapshot is pushed to the dispatcher, which
 * only ever routes to ready replicas. A periodic reconcile tick replaces
 * replicas that exited or stopped answering (with backoff when they keep
 * failing) and removes containers that are not in the desired state.
 */
export class Controller {
  private readonly backends = new Map<string, BackendRecord>();
  private readonly endpoints = new Map<string, EndpointRecord>();
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private tickTimer: NodeJS.Timeout | undefined;
  private tickPending = false;
  private readonly store: StateStore<PersistedState>;

  constructor(private readonly deps: ControllerDeps) {
    this.log = deps.logger.child({ component: 'controller' });
    this.store = new StateStore(join(deps.config.stateDir, 'state', `${deps.config.instance}.json`));
  }

  private get instanceLabels(): Record<string, string> {
    return { [LABELS.managed]: 'true', [LABELS.instance]: this.deps.config.instance };
  }

  private get runDir(): string {
    return join(this.deps.config.stateDir, 'run', this.deps.config.instance);
  }

  /**
   * Restores the checkpointed desired state and adopts the running containers
   * that serve it (no container is restarted); containers of backends that no
   * longer exist are removed. The first reconcile tick fills any gaps.
   */
  async init(): Promise<void> {
    this.store.lock(this.deps.config.instance);
    try {
      await this.restore();
    } catch (error) {
      this.store.unlock();
      throw error;
    }
    this.tickTimer = setInterval(() => void this.tick(), this.deps.config.healthCheckPeriodS * 1000);
    this.tickTimer.unref();
  }

  private async restore(): Promise<void> {
    const socketPath = join(this.runDir, shortId(), PROTOCOL.socketName);
    if (this.deps.config.transport === 'unix' && socketPath.length > MAX_UNIX_SOCKET_PATH) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `replica sockets under ${this.deps.config.stateDir} would be longer than ${MAX_UNIX_SOCKET_PATH} characters; use a shorter stateDir or the tcp transport`,
      );
    }
    const saved = this.store.load();
    for (const backend of saved?.backends ?? []) {
      this.backends.set(backend.name, { ...backend, replicas: [], replacements: [], consecutiveFailures: 0, retryAt: 0 });
    }
    for (const endpoint of saved?.endpoints ?? []) this.endpoints.set(endpoint.name, endpoint);
    const running = await this.deps.runtime.listReplicas(this.instanceLabels);
    const strays: ReplicaStatus[] = [];
    for (const status of running) {
      const adopted = this.adopt(status);
      if (!adopted) strays.push(status);
    }
    if (strays.length > 0) {
      this.log.warn('removing containers that are not in the desired state', { count: strays.length });
      await Promise.all(strays.map((status) => this.deps.runtime.stopReplica(status.containerId, 0)));
      for (const status of strays) {
        const id = status.labels[LABELS.replica];
        if (id !== undefined) rmSync(join(this.runDir, id), { recursive: true, force: true });
      }
    }
    const adoptedCount = [...this.backends.values()].reduce((sum, b) => sum + b.replicas.length, 0);
    if (saved !== undefined)
      this.log.info('restored state', { backends: this.backends.size, endpoints: this.endpoints.size, adopted: adoptedCount });
    this.publish();
    if (saved !== undefined) void this.tick();
  }

  /** Stops managing replicas without touching them, e.g. when the control plane exits; a later init() adopts them. */
  async detach(): Promise<void> {
    await this.queue.catch(() => undefined);
    this.stopped = true;
    clearInterval(this.tickTimer);
    this.store.unlock();
  }

  private adopt(status: ReplicaStatus): boolean {
    const record = this.backends.get(status.labels[LABELS.backend] ?? '');
    const id = status.labels[LABELS.replica];
    const placementLabel = status.labels[LABELS.placement];
    if (record === undefined || id === undefined || placementLabel === undefined || !status.running || status.target === undefined)
      return false;
    const placement = JSON.parse(placementLabel) as Placement;
    this.deps.scheduler.adopt(id, placement);
    record.replicas.push({
      id,
      healthPath: record.runtimeEnv.healthPath,
      placement,
      containerId: status.containerId,
      target: status.target,
      hostDir: status.hostDir,
      controlSecret: status.hostDir === undefined ? undefined : readControlSecret(status.hostDir),
      state: 'ready',
      startedAt: status.startedAt,
      failedProbes: 0,
      restarts: Number(status.labels[LABELS.restarts] ?? 0) || 0,
      lastError: status.labels[LABELS.lastError] ?? null,
    });
    return true;
  }

  private persist(): void {
    this.store.save({
      version: 1,
      backends: [...this.backends.values()].map(({ name, definition, initArgs, config, resources, runtimeEnv, image }) => ({
        name,
        definition,
        initArgs,
        config,
        resources,
        runtimeEnv,
        image,
      })),
      endpoints: [...this.endpoints.values()],
    });
  }

  async createBackend(name: string, shippable: ShippableDefinition, options?: unknown): Promise<void> {
    validateName(name, 'backend');
    const { initArgs, config, contextDir, runtimeEnv, resources } = validateBackendOptions(options);
    checkSupports(name, shippable, config);
    checkContainerSupports(name, runtimeEnv, config);
    const context = contextDir === undefined ? undefined : resolve(contextDir);
    if (context !== undefined && !statSync(context, { throwIfNoEntry: false })?.isDirectory()) {
      throw new FlotillaError('INVALID_ARGUMENT', `replicaOptions.runtimeEnv.context '${contextDir}' is not a directory`);
    }
    const checkFree = (): void => {
      if (this.stopped) throw new FlotillaError('SHUT_DOWN', 'Flotilla has been shut down; start a new client');
      if (this.backends.has(name))
        throw new FlotillaError('BACKEND_EXISTS', `backend '${name}' already exists; delete it or choose another name`);
      this.reserve({ name, resources }, config.numReplicas).forEach((slot) => this.deps.scheduler.release(slot.id));
    };
    checkFree();
    if (runtimeEnv.image !== undefined && !(await this.deps.runtime.imageExists(runtimeEnv.image))) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `replicaOptions.runtimeEnv.image '${runtimeEnv.image}' is not on the Docker engine; pull or build it first`,
      );
    }
    // Built outside the one-at-a-time queue, so that a long build does not hold up other calls or liveness checks.
    const image =
      runtimeEnv.image ??
      (await this.deps.images.backendImage({
        backend: name,
        ...(context === undefined ? {} : { contextDir: context }),
        ...(shippable.kind === 'import' ? {} : { shippedModule: shippedModuleText(shippable) }),
        runtime: runtimeEnv.runtime,
        packages: runtimeEnv.packages,
        dockerfile: runtimeEnv.dockerfile,
        buildArgs: runtimeEnv.buildArgs,
      }));
    return this.serialize(async () => {
      checkFree();
      const record: BackendRecord = {
        name,
        definition: shippable,
        initArgs,
        config,
        resources,
        runtimeEnv: { ...runtimeEnv, context },
        image,
        replicas: [],
        replacements: [],
        consecutiveFailures: 0,
        retryAt: 0,
      };
      this.backends.set(name, record);
      this.persist();
      try {
        await this.addReplicas(record, config.numReplicas, config);
      } catch (error) {
        this.backends.delete(name);
        this.persist();
        throw error;
      }
      this.publish();
      this.log.info('backend created', { backend: name, image, replicas: config.numReplicas });
    });
  }

  listBackends(): Record<string, BackendInfo> {
    return Object.fromEntries([...this.backends.values()].map((backend) => [backend.name, this.info(backend)]));
  }

  getBackendConfig(name: string): BackendInfo {
    return this.info(this.backend(name));
  }

  private info(backend: BackendRecord): BackendInfo {
    const runtimeEnv = Object.fromEntries(Object.entries(backend.runtimeEnv).filter(([, value]) => value !== undefined));
    return {
      ...structuredClone(backend.config),
      definition: summarize(backend.definition),
      initArgs: structuredClone(backend.initArgs),
      runtimeEnv: structuredClone(runtimeEnv),
      resources: structuredClone(backend.resources),
    };
  }

  listReplicas(name: string): ReplicaInfo[] {
    return this.backend(name).replicas.map((replica) => ({
      id: replica.id,
      state: replica.state,
      containerId: replica.containerId,
      startedAt: new Date(replica.startedAt).toISOString(),
      restarts: replica.restarts,
      lastError: replica.lastError,
      placement: { ...replica.placement, gpuIds: [...replica.placement.gpuIds] },
    }));
  }

  /**
   * Applies a partial config. Live settings (userConfig, batching) are pushed
   * to every replica first; if any replica refuses, those that took it get the
   * old settings back and the call fails with the config unchanged.
   */
  async updateBackendConfig(name: string, patch: unknown): Promise<void> {
    const changes = validateConfigPatch(patch);
    return this.serialize(async () => {
      const record = this.backend(name);
      const previous = record.config;
      const next = { ...previous, ...changes };
      checkSupports(name, record.definition, next);
      checkContainerSupports(name, record.runtimeEnv, next);
      const userConfigChanged = 'userConfig' in changes && JSON.stringify(next.userConfig) !== JSON.stringify(previous.userConfig);
      const liveChanged =
        userConfigChanged || next.maxBatchSize !== previous.maxBatchSize || next.batchWaitTimeoutS !== previous.batchWaitTimeoutS;
      const rollback = liveConfigOf(previous, userConfigChanged && previous.userConfig !== null);
      record.config = next;
      this.persist();
      const current = record.replicas.length;
      try {
        if (liveChanged) await this.pushLiveConfig(record, liveConfigOf(next, userConfigChanged), rollback);
        if (next.numReplicas > current) {
          try {
            await this.addReplicas(record, next.numReplicas - current, next);
          } catch (error) {
            if (liveChanged) await this.pushLiveConfig(record, rollback, undefined).catch(() => undefined);
            throw error;
          }
        }
      } catch (error) {
        record.config = previous;
        this.persist();
        throw error;
      }
      if (next.numReplicas < current) await this.removeReplicas(record, record.replicas.slice(next.numReplicas), true);
      this.publish();
      this.log.info('backend config updated', { backend: name, changes: Object.keys(changes) });
    });
  }

  async deleteBackend(name: string, options: { force?: boolean } = {}): Promise<void> {
    const force = options.force === true;
    return this.serialize(async () => {
      const record = this.backend(name);
      const users = [...this.endpoints.values()].filter((e) => name in e.traffic || name in e.shadows).map((e) => e.name);
      if (users.length > 0) {
        throw new FlotillaError(
          'BACKEND_IN_USE',
          `backend '${name}' is used by endpoint ${users.map((u) => `'${u}'`).join(', ')}; delete the endpoint or move its traffic first`,
          { endpoints: users },
        );
      }
      this.backends.delete(name);
      this.persist();
      await this.removeReplicas(record, record.replicas, !force);
      this.publish();
      this.log.info('backend deleted', { backend: name, force });
    });
  }

  async createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    validateName(name, 'endpoint');
    const { backend, route, methods } = validateEndpointOptions(options);
    return this.serialize(async () => {
      if (this.endpoints.has(name))
        throw new FlotillaError('ENDPOINT_EXISTS', `endpoint '${name}' already exists; delete it or choose another name`);
      if (!this.backends.has(backend)) {
        throw new FlotillaError(
          'BACKEND_NOT_FOUND',
          `endpoint '${name}' names backend '${backend}', which does not exist; create it first`,
        );
      }
      const owner = [...this.endpoints.values()].find((e) => route !== null && e.route === route);
      if (owner !== undefined) throw new FlotillaError('ROUTE_TAKEN', `route '${route}' is already served by endpoint '${owner.name}'`);
      this.endpoints.set(name, { name, route, methods, traffic: { [backend]: 1 }, shadows: {} });
      this.persist();
      this.publish();
      this.log.info('endpoint created', { endpoint: name, route, backend });
    });
  }

  listEndpoints(): Record<string, EndpointInfo> {
    return Object.fromEntries(
      [...this.endpoints.values()].map((e) => [
        e.name,
        { route: e.route, methods: [...e.methods], traffic: { ...e.traffic }, shadows: { ...e.shadows } },
      ]),
    );
  }

  async setTraffic(name: string, weights: unknown): Promise<void> {
    validateName(name, 'endpoint');
    const traffic = validateTraffic(weights);
    return this.serialize(async () => {
      const endpoint = this.endpoint(name);
      const missing = Object.keys(traffic).filter((backend) => !this.backends.has(backend));
      if (missing.length > 0) {
        throw new FlotillaError(
          'BACKEND_NOT_FOUND',
          `traffic of endpoint '${name}' names backend ${missing.map((m) => `'${m}'`).join(', ')}, which does not exist`,
        );
      }
      endpoint.traffic = traffic;
      this.persist();
      this.publish();
      this.log.info('traffic set', { endpoint: name, traffic });
    });
  }

  async shadowTraffic(name: string, backend: string, proportion: unknown): Promise<void> {
    validateName(name, 'endpoint');
    validateName(backend, 'backend');
    const share = validateProportion(proportion);
    return this.serialize(async () => {
      const endpoint = this.endpoint(name);
      if (!this.backends.has(backend)) throw new FlotillaError('BACKEND_NOT_FOUND', `shadow backend '${backend}' does not exist`);
      if (share === 0) delete endpoint.shadows[backend];
      else endpoint.shadows[backend] = share;
      this.persist();
      this.publish();
      this.log.info('shadow traffic set', { endpoint: name, backend, proportion: share });
    });
  }

  hasEndpoint(name: string): boolean {
    return this.endpoints.has(name);
  }

  /** Stops routing to the endpoint, then waits (up to its backends' grace period) for its requests in flight. */
  deleteEndpoint(name: string): Promise<void> {
    return this.serialize(async () => {
      const endpoint = this.endpoints.get(name);
      if (endpoint === undefined) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${name}' does not exist`);
      this.endpoints.delete(name);
      this.persist();
      this.publish();
      const graceS = Math.max(0, ...Object.keys(endpoint.traffic).map((b) => this.backends.get(b)?.config.gracefulShutdownTimeoutS ?? 0));
      await settlesWithin(this.deps.dispatcher.endpointRequests.idle(name), graceS * 1000);
      this.log.info('endpoint deleted', { endpoint: name });
    });
  }

  /** Drains and stops every replica this instance started, including any not in the desired state. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.stopped) return this.queue.then(() => undefined);
    return this.serialize(async () => {
      this.stopped = true;
      clearInterval(this.tickTimer);
      this.store.clear();
      this.store.unlock();
      this.endpoints.clear();
      await Promise.all([...this.backends.values()].map((record) => this.removeReplicas(record, record.replicas, true)));
      this.backends.clear();
      this.publish();
      const leftovers = await this.deps.runtime.listReplicas(this.instanceLabels);
      await Promise.all(leftovers.map((replica) => this.deps.runtime.stopReplica(replica.containerId, 0)));
      rmSync(this.runDir, { recursive: true, force: true });
      this.log.info('shut down');
    });
  }

  /** Runs a reconcile tick soon, e.g. after the proxy saw a replica fail. */
  async tick(): Promise<void> {
    if (this.tickPending || this.stopped) return;
    this.tickPending = true;
    try {
      await this.serialize(() => this.reconcile());
    } catch (error) {
      if (!isFlotillaError(error, 'SHUT_DOWN')) this.log.error('reconcile tick failed', { error: errorMessage(error) });
    } finally {
      this.tickPending = false;
    }
  }

  private endpoint(name: string): EndpointRecord {
    const record = this.endpoints.get(name);
    if (record === undefined) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${name}' does not exist`);
    return record;
  }

  private backend(name: string): BackendRecord {
    const record = this.backends.get(name);
    if (record === undefined) throw new FlotillaError('BACKEND_NOT_FOUND', `backend '${name}' does not exist`);
    return record;
  }

  private serialize<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.stopped) throw new FlotillaError('SHUT_DOWN', 'Flotilla has been shut down; start a new client');
      return operation();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private publish(): void {
    const snapshot: RoutingSnapshot = {
      endpoints: [...this.endpoints.values()].map(({ name, route, methods, traffic, shadows }) => ({
        name,
        route,
        methods,
        traffic,
        shadows,
      })),
      backends: [...this.backends.values()].map((b) => ({
        name: b.name,
        maxConcurrentQueries: b.config.maxConcurrentQueries,
        maxQueuedRequests: b.config.maxQueuedRequests,
        requestTimeoutS: b.config.requestTimeoutS,
        noReplicaWaitMs: b.config.numReplicas > 0 ? NO_REPLICA_WAIT_MS : 0,
        replicas: b.replicas.filter((r) => r.state === 'ready').map(({ id, target }) => ({ id, target })),
      })),
    };
    this.deps.dispatcher.update(snapshot);
  }

  private async reconcile(): Promise<void> {
    const observed = new Map((await this.deps.runtime.listReplicas(this.instanceLabels)).map((s) => [s.containerId, s]));
    const known = new Set<string>();
    for (const record of this.backends.values()) {
      record.replicas.forEach((replica) => known.add(replica.containerId));
      const ready = record.replicas.filter((replica) => replica.state === 'ready');
      const failures = await Promise.all(ready.map((replica) => this.checkLiveness(replica, observed.get(replica.containerId))));
      for (const [index, failure] of failures.entries()) {
        const replica = ready[index];
        if (failure !== undefined && replica !== undefined) await this.replaceFailed(record, replica, failure);
      }
      await this.restoreReplicaCount(record);
    }
    for (const [containerId, status] of observed) {
      if (known.has(containerId)) continue;
      this.log.warn('removing a container that is not in the desired state', { container: containerId.slice(0, 12), name: status.name });
      await this.deps.runtime.stopReplica(containerId, 0);
    }
  }

  /** Why a ready replica must be replaced, or undefined while it is alive. */
  private async checkLiveness(replica: ReplicaRecord, status: ReplicaStatus | undefined): Promise<string | undefined> {
    if (status === undefined) return 'disappeared (its container was removed)';
    if (!status.running) {
      if (status.oomKilled) return 'was killed for exceeding its memory limit (OOM)';
      const logs = await this.deps.runtime.logsTail(status.containerId, 3);
      const last = logs.trim().split('\n').pop() ?? '';
      return `exited with code ${status.exitCode ?? 'unknown'}${last === '' ? '' : `; last log line: ${last}`}`;
    }
    if (await probe(replica, PROBE_TIMEOUT_MS)) {
      replica.failedProbes = 0;
      return undefined;
    }
    replica.failedProbes += 1;
    return replica.failedProbes >= FAILED_PROBES_TO_REPLACE
      ? `stopped answering health checks (${replica.failedProbes} in a row)`
      : undefined;
  }

  private async replaceFailed(record: BackendRecord, replica: ReplicaRecord, reason: string): Promise<void> {
    const now = this.deps.clock.now();
    this.log.warn('replica failed; replacing it', { backend: record.name, replica: replica.id, reason });
    record.replicas = record.replicas.filter((r) => r !== replica);
    this.publish();
    await this.stopReplica(replica, 0);
    record.consecutiveFailures = now - replica.startedAt > STABLE_UPTIME_MS ? 1 : record.consecutiveFailures + 1;
    record.retryAt = now + backoffMs(record.consecutiveFailures);
    record.replacements.push({ restarts: replica.restarts + 1, lastError: `replica ${replica.id} ${reason}` });
  }

  private async restoreReplicaCount(record: BackendRecord): Promise<void> {
    while (record.replicas.length < record.config.numReplicas && this.deps.clock.now() >= record.retryAt) {
      const history = record.replacements.shift() ?? { restarts: 0, lastError: null };
      try {
        const [slot] = this.reserve(record, 1);
        await this.startReplica(record, record.config, history, slot!);
        this.publish();
      } catch (error) {
        record.replacements.unshift({ restarts: history.restarts + 1, lastError: errorMessage(error) });
        record.consecutiveFailures += 1;
        record.retryAt = this.deps.clock.now() + backoffMs(record.consecutiveFailures);
        this.log.error('replacement replica failed to start', {
          backend: record.name,
          error: errorMessage(error),
          retryInMs: record.retryAt,
        });
        return;
      }
    }
    if (record.replicas.length >= record.config.numReplicas) record.replacements = [];
    const surplus = record.replicas.filter((r) => r.state === 'ready').slice(record.config.numReplicas);
    if (surplus.length > 0) await this.removeReplicas(record, surplus, true);
  }

  private async pushLiveConfig(record: BackendRecord, live: LiveConfig, rollback: LiveConfig | undefined): Promise<void> {
    const targets = record.replicas.filter((replica) => replica.state === 'ready');
    const results = await Promise.allSettled(
      targets.map((replica) => pushConfig(replica.target, replica.controlSecret ?? '', live, CONFIG_PUSH_TIMEOUT_MS)),
    );
    const failed = results.findIndex((result) => result.status === 'rejected');
    if (failed < 0) return;
    if (rollback !== undefined) {
      const applied = targets.filter((_, index) => results[index]?.status === 'fulfilled');
      await Promise.allSettled(
        applied.map((replica) => pushConfig(replica.target, replica.controlSecret ?? '', rollback, CONFIG_PUSH_TIMEOUT_MS)),
      );
    }
    const reason = (results[failed] as PromiseRejectedResult).reason as unknown;
    const code = isFlotillaError(reason) ? reason.code : 'RECONFIGURE_FAILED';
    throw new FlotillaError(
      code,
      `reconfiguring backend '${record.name}' failed on replica ${targets[failed]?.id}: ${errorMessage(reason)}; the previous config stays in force`,
    );
  }

  /** Starts `count` replicas with `config`; if any fails, stops the others it started and throws the first failure. */
  private async addReplicas(record: BackendRecord, count: number, config: BackendConfig): Promise<void> {
    const history = { restarts: 0, lastError: null };
    const slots = this.reserve(record, count);
    const results = await Promise.allSettled(slots.map((slot) => this.startReplica(record, config, history, slot)));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure === undefined) return;
    const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    await this.removeReplicas(record, started, false);
    throw failure.reason;
  }

  /**
   * Takes replicas out of routing first; with `drain`, waits for their requests
   * in flight (up to gracefulShutdownTimeoutS) before stopping them.
   */
  private async removeReplicas(record: BackendRecord, replicas: ReplicaRecord[], drain: boolean): Promise<void> {
    if (replicas.length === 0) return;
    const leaving = new Set(replicas);
    replicas.forEach((replica) => (replica.state = 'draining'));
    this.publish();
    const graceMs = record.config.gracefulShutdownTimeoutS * 1000;
    await Promise.all(
      replicas.map(async (replica) => {
        if (!drain) return this.stopReplica(replica, 0);
        const started = this.deps.clock.now();
        await settlesWithin(this.deps.dispatcher.drained(record.name, replica.id), graceMs);
        const leftS = Math.ceil((graceMs - (this.deps.clock.now() - started)) / 1000);
        return this.stopReplica(replica, Math.max(1, leftS));
      }),
    );
    record.replicas = record.replicas.filter((replica) => !leaving.has(replica));
    this.publish();
  }

  private async stopReplica(replica: ReplicaRecord, timeoutS: number): Promise<void> {
    try {
      await this.deps.runtime.stopReplica(replica.containerId, timeoutS);
    } catch (error) {
      this.log.error('stopping replica failed', { replica: replica.id, container: replica.containerId, error: errorMessage(error) });
    }
    this.deps.scheduler.release(replica.id);
    if (replica.hostDir !== undefined) rmSync(replica.hostDir, { recursive: true, force: true });
  }

  /** Books resources for `count` new replicas, all or none; a replica that fails to start gives its slot back. */
  private reserve(record: Pick<BackendRecord, 'name' | 'resources'>, count: number): Array<{ id: string; placement: Placement }> {
    const slots: Array<{ id: string; placement: Placement }> = [];
    const free = this.deps.scheduler.free();
    try {
      for (let i = 0; i < count; i++) {
        const id = shortId();
        slots.push({ id, placement: this.deps.scheduler.reserve(id, record.resources) });
      }
    } catch (error) {
      slots.forEach((slot) => this.deps.scheduler.release(slot.id));
      if (isFlotillaError(error)) {
        const before = `${free.cpus} CPUs and ${free.memoryMb} MB were free before this request`;
        throw new FlotillaError(
          error.code,
          `backend '${record.name}' cannot add ${count} replica(s): ${error.message}; ${before}`,
          error.details,
        );
      }
      throw error;
    }
    return slots;
  }

  private entryOf(record: BackendRecord, config: BackendConfig): Omit<ReplicaEntry, 'controlSecret'> {
    const definition = record.definition;
    const module =
      definition.kind !== 'import'
        ? SHIPPED_MODULE
        : isAbsolute(definition.module)
          ? definition.module
          : posix.join(APP_DIR, definition.module);
    const exportName = definition.kind === 'import' ? definition.exportName : 'default';
    return { module, exportName, initArgs: record.initArgs, ...liveConfigOf(config, config.userConfig !== null) };
  }

  /** Starts one replica and waits until it is ready; it is listed as 'starting' meanwhile, and removed if it fails. */
  private async startReplica(
    record: BackendRecord,
    config: BackendConfig,
    history: ReplicaHistory,
    { id, placement }: { id: string; placement: Placement },
  ): Promise<ReplicaRecord> {
    const { runtime } = this.deps;
    const settings = this.deps.config;
    const httpPort = record.runtimeEnv.port;
    const transport: ReplicaTransport =
      settings.transport === 'unix' && httpPort === undefined
        ? { kind: 'unix' }
        : { kind: 'tcp', hostAddress: settings.replicaHost, containerPort: httpPort ?? PROTOCOL.tcpPort };
    const hostDir = httpPort === undefined ? join(this.runDir, id) : undefined;
    let status: ReplicaStatus;
    let controlSecret: string | undefined;
    try {
      const confinement = confinementOf(record.name, record.resources, settings, httpPort !== undefined);
      if (hostDir !== undefined) controlSecret = prepareReplicaFiles(hostDir, this.entryOf(record, config), settings.replicaUser);
      status = await runtime.startReplica({
        name: `flotilla-${settings.instance}-${record.name}-${id}`,
        image: record.image,
        labels: {
          ...this.instanceLabels,
          [LABELS.backend]: record.name,
          [LABELS.replica]: id,
          [LABELS.placement]: JSON.stringify(placement),
          [LABELS.restarts]: String(history.restarts),
          ...(history.lastError === null ? {} : { [LABELS.lastError]: history.lastError.slice(0, 1000) }),
        },
        env: {
          ...record.resources.env,
          NVIDIA_VISIBLE_DEVICES: placement.gpuIds.length > 0 ? placement.gpuIds.join(',') : 'void',
        },
        hostDir,
        transport,
        limits: { cpus: placement.cpus, memoryMb: placement.memoryMb, gpuIds: placement.gpuIds },
        confinement,
      });
    } catch (error) {
      this.deps.scheduler.release(id);
      if (hostDir !== undefined) rmSync(hostDir, { recursive: true, force: true });
      throw error;
    }
    const replica: ReplicaRecord = {
      id,
      healthPath: record.runtimeEnv.healthPath,
      placement,
      containerId: status.containerId,
      target: status.target as ReplicaTarget,
      hostDir,
      controlSecret,
      state: 'starting',
      startedAt: this.deps.clock.now(),
      failedProbes: 0,
      ...history,
    };
    record.replicas.push(replica);
    try {
      await this.waitReady(record.name, replica);
    } catch (error) {
      record.replicas = record.replicas.filter((r) => r !== replica);
      await this.stopReplica(replica, 0);
      throw error;
    }
    replica.state = 'ready';
    this.log.info('replica ready', { backend: record.name, replica: id, container: status.containerId.slice(0, 12) });
    return replica;
  }

  private async waitReady(backend: string, replica: ReplicaRecord): Promise<void> {
    const { clock, runtime, config } = this.deps;
    const deadline = clock.now() + config.readyTimeoutS * 1000;
    for (;;) {
      if (await probe(replica, 1000)) return;
      const status = await runtime.inspectReplica(replica.containerId);
      if (status === undefined || !status.running) {
        const logs = await runtime.logsTail(replica.containerId, LOG_TAIL_LINES);
        throw new FlotillaError(
          'REPLICA_START_FAILED',
          `a replica of backend '${backend}' exited while starting (exit code ${status?.exitCode ?? 'unknown'}): ${failureFromLogs(logs)}`,
        );
      }
      if (clock.now() > deadline) {
        const logs = await runtime.logsTail(replica.containerId, LOG_TAIL_LINES);
        throw new FlotillaError(
          'REPLICA_START_FAILED',
          `a replica of backend '${backend}' was not ready within ${config.readyTimeoutS} s; last log lines:\n${logs.trim()}`,
        );
      }
      await clock.sleep(READY_POLL_MS);
    }
  }
}
