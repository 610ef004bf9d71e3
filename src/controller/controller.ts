import { chmodSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { isAbsolute, join, posix, resolve } from 'node:path';
import type { BackendConfig, BackendDefinition, CreateEndpointOptions, EndpointInfo } from '../api.js';
import type { Clock } from '../common/clock.js';
import { FlotillaError, errorMessage } from '../common/errors.js';
import { shortId } from '../common/ids.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import type { Dispatcher, RoutingSnapshot } from '../proxy/dispatcher.js';
import { PROTOCOL, type ReplicaEntry } from '../replica/protocol.js';
import type { ContainerRuntime, ReplicaStatus, ReplicaTarget, ReplicaTransport } from '../runtime/container-runtime.js';
import { APP_DIR, SHIPPED_MODULE, type ImageBuilder } from '../runtime/image-builder.js';
import { shippedModuleText, toShippable, type ShippableDefinition } from './definition.js';
import { probeHealth } from './health-probe.js';
import { validateBackendOptions, validateConfigPatch, validateEndpointOptions, validateName } from './validation.js';

const GRACEFUL_SHUTDOWN_S = 20;
const READY_POLL_MS = 100;
const LOG_TAIL_LINES = 20;
const MAX_UNIX_SOCKET_PATH = 107;

interface ReplicaRecord {
  id: string;
  containerId: string;
  target: ReplicaTarget;
  hostDir: string | undefined;
}

interface BackendRecord {
  name: string;
  definition: ShippableDefinition;
  initArgs: unknown[];
  config: BackendConfig;
  contextDir: string | undefined;
  image: string;
  replicas: ReplicaRecord[];
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

/**
 * Owns the desired state (backends, endpoints, traffic) and the replicas that
 * serve it. API calls are validated first, then run one at a time; a call that
 * fails undoes what it started, so what was already running is untouched.
 * After every change the routing snapshot is pushed to the dispatcher.
 */
export class Controller {
  private readonly backends = new Map<string, BackendRecord>();
  private readonly endpoints = new Map<string, EndpointRecord>();
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(private readonly deps: ControllerDeps) {
    this.log = deps.logger.child({ component: 'controller' });
  }

  private get instanceLabels(): Record<string, string> {
    return { [LABELS.managed]: 'true', [LABELS.instance]: this.deps.config.instance };
  }

  private get runDir(): string {
    return join(this.deps.config.stateDir, 'run', this.deps.config.instance);
  }

  /** Removes containers a previous run of this instance left behind (there is no checkpoint to adopt them from yet). */
  async init(): Promise<void> {
    const socketPath = join(this.runDir, shortId(), PROTOCOL.socketName);
    if (this.deps.config.transport === 'unix' && socketPath.length > MAX_UNIX_SOCKET_PATH) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `replica sockets under ${this.deps.config.stateDir} would be longer than ${MAX_UNIX_SOCKET_PATH} characters; use a shorter stateDir or the tcp transport`,
      );
    }
    const leftovers = await this.deps.runtime.listReplicas(this.instanceLabels);
    if (leftovers.length > 0) {
      this.log.warn('removing containers left by an earlier run', { count: leftovers.length });
      await Promise.all(leftovers.map((replica) => this.deps.runtime.stopReplica(replica.containerId, 0)));
    }
    rmSync(this.runDir, { recursive: true, force: true });
    this.publish();
  }

  async createBackend(name: string, definition: BackendDefinition, options?: unknown): Promise<void> {
    validateName(name, 'backend');
    const shippable = toShippable(definition);
    const { initArgs, config, contextDir } = validateBackendOptions(options);
    const context = contextDir === undefined ? undefined : resolve(contextDir);
    if (context !== undefined && !statSync(context, { throwIfNoEntry: false })?.isDirectory()) {
      throw new FlotillaError('INVALID_ARGUMENT', `replicaOptions.runtimeEnv.context '${contextDir}' is not a directory`);
    }
    return this.serialize(async () => {
      if (this.backends.has(name))
        throw new FlotillaError('BACKEND_EXISTS', `backend '${name}' already exists; delete it or choose another name`);
      const image = await this.deps.images.backendImage({
        backend: name,
        ...(context === undefined ? {} : { contextDir: context }),
        ...(shippable.kind === 'import' ? {} : { shippedModule: shippedModuleText(shippable) }),
      });
      const record: BackendRecord = { name, definition: shippable, initArgs, config, contextDir: context, image, replicas: [] };
      await this.addReplicas(record, config.numReplicas);
      this.backends.set(name, record);
      this.publish();
      this.log.info('backend created', { backend: name, image, replicas: config.numReplicas });
    });
  }

  listBackends(): Record<string, BackendConfig> {
    return Object.fromEntries([...this.backends.values()].map((backend) => [backend.name, { ...backend.config }]));
  }

  getBackendConfig(name: string): BackendConfig {
    return { ...this.backend(name).config };
  }

  async updateBackendConfig(name: string, patch: unknown): Promise<void> {
    const changes = validateConfigPatch(patch);
    return this.serialize(async () => {
      const record = this.backend(name);
      const next = { ...record.config, ...changes };
      const current = record.replicas.length;
      if (next.numReplicas > current) await this.addReplicas(record, next.numReplicas - current);
      record.config = next;
      if (next.numReplicas < current) await this.removeReplicas(record, record.replicas.slice(next.numReplicas));
      this.publish();
      this.log.info('backend config updated', { backend: name, config: next });
    });
  }

  deleteBackend(name: string): Promise<void> {
    return this.serialize(async () => {
      const record = this.backend(name);
      const users = [...this.endpoints.values()].filter((e) => name in e.traffic || name in e.shadows).map((e) => `'${e.name}'`);
      if (users.length > 0) {
        throw new FlotillaError(
          'BACKEND_IN_USE',
          `backend '${name}' is used by endpoint ${users.join(', ')}; delete the endpoint or move its traffic first`,
          { endpoints: users },
        );
      }
      this.backends.delete(name);
      await this.removeReplicas(record, record.replicas);
      this.log.info('backend deleted', { backend: name });
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

  hasEndpoint(name: string): boolean {
    return this.endpoints.has(name);
  }

  deleteEndpoint(name: string): Promise<void> {
    return this.serialize(async () => {
      if (!this.endpoints.delete(name)) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${name}' does not exist`);
      this.publish();
      this.log.info('endpoint deleted', { endpoint: name });
    });
  }

  /** Stops every replica this instance started, including any not in the desired state. */
  shutdown(): Promise<void> {
    return this.serialize(async () => {
      this.stopped = true;
      const records = [...this.backends.values()];
      this.backends.clear();
      this.endpoints.clear();
      this.publish();
      await Promise.all(records.map((record) => this.removeReplicas(record, record.replicas)));
      const leftovers = await this.deps.runtime.listReplicas(this.instanceLabels);
      await Promise.all(leftovers.map((replica) => this.deps.runtime.stopReplica(replica.containerId, 0)));
      rmSync(this.runDir, { recursive: true, force: true });
      this.log.info('shut down');
    });
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
      endpoints: [...this.endpoints.values()].map(({ name, route, methods, traffic }) => ({ name, route, methods, traffic })),
      backends: [...this.backends.values()].map((b) => ({
        name: b.name,
        maxConcurrentQueries: b.config.maxConcurrentQueries,
        replicas: b.replicas.map(({ id, target }) => ({ id, target })),
      })),
    };
    this.deps.dispatcher.update(snapshot);
  }

  /** Starts `count` replicas; if any fails, stops the others it started and throws the first failure. */
  private async addReplicas(record: BackendRecord, count: number): Promise<void> {
    const results = await Promise.allSettled(Array.from({ length: count }, () => this.startReplica(record)));
    const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure !== undefined) {
      await Promise.all(started.map((replica) => this.stopReplica(replica, 0)));
      throw failure.reason;
    }
    record.replicas.push(...started);
  }

  /** Takes replicas out of routing first, then stops them, letting in-flight requests finish. */
  private async removeReplicas(record: BackendRecord, replicas: ReplicaRecord[]): Promise<void> {
    const leaving = new Set(replicas.map((r) => r.id));
    record.replicas = record.replicas.filter((r) => !leaving.has(r.id));
    this.publish();
    await Promise.all(replicas.map((replica) => this.stopReplica(replica, GRACEFUL_SHUTDOWN_S)));
  }

  private async stopReplica(replica: ReplicaRecord, timeoutS: number): Promise<void> {
    try {
      await this.deps.runtime.stopReplica(replica.containerId, timeoutS);
    } catch (error) {
      this.log.error('stopping replica failed', { replica: replica.id, container: replica.containerId, error: errorMessage(error) });
    }
    if (replica.hostDir !== undefined) rmSync(replica.hostDir, { recursive: true, force: true });
  }

  private entryOf(record: BackendRecord): ReplicaEntry {
    const definition = record.definition;
    if (definition.kind !== 'import') return { module: SHIPPED_MODULE, exportName: 'default', initArgs: record.initArgs };
    const module = isAbsolute(definition.module) ? definition.module : posix.join(APP_DIR, definition.module);
    return { module, exportName: definition.exportName, initArgs: record.initArgs };
  }

  private async startReplica(record: BackendRecord): Promise<ReplicaRecord> {
    const { config, runtime } = this.deps;
    const id = shortId();
    let transport: ReplicaTransport;
    let hostDir: string | undefined;
    if (config.transport === 'unix') {
      hostDir = join(this.runDir, id);
      mkdirSync(hostDir, { recursive: true });
      chmodSync(hostDir, 0o777);
      transport = { kind: 'unix', hostDir };
    } else {
      transport = { kind: 'tcp', hostAddress: config.replicaHost };
    }
    const log = this.log.child({ backend: record.name, replica: id });
    let status: ReplicaStatus;
    try {
      status = await runtime.startReplica({
        name: `flotilla-${config.instance}-${record.name}-${id}`,
        image: record.image,
        labels: { ...this.instanceLabels, [LABELS.backend]: record.name, [LABELS.replica]: id },
        env: { [PROTOCOL.env.entry]: JSON.stringify(this.entryOf(record)) },
        user: config.replicaUser,
        transport,
      });
    } catch (error) {
      if (hostDir !== undefined) rmSync(hostDir, { recursive: true, force: true });
      throw error;
    }
    const replica = { id, containerId: status.containerId, target: status.target as ReplicaTarget, hostDir };
    try {
      await this.waitReady(record.name, replica);
    } catch (error) {
      await this.stopReplica(replica, 0);
      throw error;
    }
    log.info('replica ready', { container: status.containerId.slice(0, 12) });
    return replica;
  }

  private async waitReady(backend: string, replica: ReplicaRecord): Promise<void> {
    const { clock, runtime, config } = this.deps;
    const deadline = clock.now() + config.readyTimeoutS * 1000;
    for (;;) {
      if ((await probeHealth(replica.target, 1000)) === 200) return;
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
