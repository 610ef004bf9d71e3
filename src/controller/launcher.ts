import { rmSync } from 'node:fs';
import { isAbsolute, join, posix } from 'node:path';
import { settlesWithin, type Clock } from '../common/clock.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import type { Limiter } from '../common/limiter.js';
import { shortId } from '../common/ids.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import { PROTOCOL, type LiveConfig, type ReplicaEntry } from '../replica/protocol.js';
import type { Scheduler } from '../resources/scheduler.js';
import type { ContainerRuntime, ReplicaSpec, ReplicaStatus, ReplicaTarget, ReplicaTransport } from '../runtime/container-runtime.js';
import { APP_DIR, SHIPPED_DIR } from '../runtime/image-builder.js';
import { shippedFileName } from '../spec/definition.js';
import { liveConfigOf, type BackendTarget } from './target.js';
import { confinementOf } from '../spec/confinement.js';
import { TIMING } from './constants.js';
import type { Replica, ReplicaDriver, Started } from './replica.js';
import { prepareReplicaFiles } from './replica-files.js';

/** How the launcher talks to a replica over its transport (replica-client.ts; a fake in unit tests). */
export interface ReplicaClient {
  probeHealth(target: ReplicaTarget, timeoutMs: number, path?: string): Promise<number | undefined>;
  pushConfig(target: ReplicaTarget, controlSecret: string, config: LiveConfig, timeoutMs: number): Promise<void>;
}

export type LauncherSettings = Pick<
  FlotillaConfig,
  'instance' | 'stateDir' | 'transport' | 'replicaHost' | 'replicaUser' | 'replicaPidsLimit' | 'replicaNetwork'
>;

export interface LauncherDeps {
  settings: LauncherSettings;
  runtime: ContainerRuntime;
  client: ReplicaClient;
  scheduler: Scheduler;
  clock: Clock;
  logger: Logger;
  /** Bounds the container starts and stops that run at once (maxConcurrentReplicaOps). */
  limiter: Limiter;
  /** Resolves once no request of the backend is in flight on the replica (Dispatcher.drained). */
  drained(backend: string, replicaId: string): Promise<void>;
  /** Cuts the connections to a failed replica's address (Dispatcher.cut). */
  cut(target: ReplicaTarget): void;
}

function failureFromLogs(logs: string): string {
  for (const line of logs.trim().split('\n').reverse()) {
    try {
      const event = JSON.parse(line) as { event?: string; message?: string };
      if (event.event === PROTOCOL.initFailedEvent && event.message !== undefined) return event.message;
    } catch {
      continue;
    }
  }
  return `last log lines:\n${logs.trim()}`;
}

export function instanceLabels(instance: string): Record<string, string> {
  return { [LABELS.managed]: 'true', [LABELS.instance]: instance };
}

const MAX_UNIX_SOCKET_PATH = 107;

/** Refuses a stateDir under which replica sockets would be longer than a unix socket path may be. */
export function checkSocketPaths(settings: Pick<LauncherSettings, 'stateDir' | 'instance' | 'transport'>): void {
  const socketPath = join(runDirOf(settings), shortId(), PROTOCOL.socketName);
  if (settings.transport === 'unix' && socketPath.length > MAX_UNIX_SOCKET_PATH) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `replica sockets under ${settings.stateDir} would be longer than ${MAX_UNIX_SOCKET_PATH} characters; use a shorter stateDir or the tcp transport`,
    );
  }
}

export function runDirOf(settings: Pick<LauncherSettings, 'stateDir' | 'instance'>): string {
  return join(settings.stateDir, 'run', settings.instance);
}

/**
 * Starts, probes, reconfigures, drains and stops replica containers: the
 * replica state machine's I/O. `specOf` is the one place a container spec is
 * assembled.
 */
export class ReplicaLauncher implements ReplicaDriver {
  constructor(private readonly deps: LauncherDeps) {}

  entryOf(target: BackendTarget): Omit<ReplicaEntry, 'controlSecret'> {
    const definition = target.definition;
    const module =
      definition.kind !== 'import'
        ? posix.join(SHIPPED_DIR, shippedFileName(definition))
        : isAbsolute(definition.module)
          ? definition.module
          : posix.join(APP_DIR, definition.module);
    const exportName = definition.kind === 'import' ? definition.exportName : 'default';
    return { module, exportName, initArgs: target.initArgs, ...liveConfigOf(target.config, target.config.userConfig !== null) };
  }

  /** The container spec; `hostDir` holds the entry file (protocol replicas) and, with the unix transport, the socket. */
  specOf(target: BackendTarget, replica: Replica, hostDir: string | undefined): ReplicaSpec {
    const { settings } = this.deps;
    const httpPort = target.runtimeEnv.port;
    const { placement, history } = replica;
    const transport: ReplicaTransport =
      settings.transport === 'unix' && httpPort === undefined
        ? { kind: 'unix' }
        : { kind: 'tcp', hostAddress: settings.replicaHost, containerPort: httpPort ?? PROTOCOL.tcpPort };
    return {
      name: `flotilla-${settings.instance}-${target.name}-${replica.id}`,
      image: target.image,
      labels: {
        ...instanceLabels(settings.instance),
        [LABELS.backend]: target.name,
        [LABELS.replica]: replica.id,
        [LABELS.placement]: JSON.stringify(placement),
        [LABELS.restarts]: String(history.restarts),
        [LABELS.version]: target.version,
        [LABELS.configHash]: target.liveHash,
        ...(history.lastError === null ? {} : { [LABELS.lastError]: history.lastError.slice(0, 1000) }),
      },
      env: {
        ...target.resources.env,
        NVIDIA_VISIBLE_DEVICES: placement.gpuIds.length > 0 ? placement.gpuIds.join(',') : 'void',
      },
      hostDir,
      transport,
      stopGraceS: target.config.gracefulShutdownTimeoutS,
      limits: {
        cpus: placement.cpus,
        cpuLimit: target.resources.cpuLimit ?? null,
        memoryMb: placement.memoryMb,
        gpuIds: placement.gpuIds,
      },
      confinement: confinementOf(target.name, target.resources, settings, httpPort !== undefined),
      ...(placement.node === undefined ? {} : { node: placement.node }),
    };
  }

  async start(target: BackendTarget, replica: Replica): Promise<Started> {
    const { settings, runtime, clock } = this.deps;
    const hostDir = target.runtimeEnv.port === undefined ? join(runDirOf(settings), replica.id) : undefined;
    try {
      const spec = this.specOf(target, replica, hostDir);
      const controlSecret = hostDir === undefined ? undefined : prepareReplicaFiles(hostDir, this.entryOf(target), settings.replicaUser);
      this.deps.logger.info('starting replica', { component: 'controller', backend: target.name, replica: replica.id });
      const status = await this.deps.limiter.run(() => runtime.startReplica(spec));
      if (status.target === undefined) throw new FlotillaError('REPLICA_START_FAILED', `container ${status.name} has no address`);
      return { containerId: status.containerId, target: status.target, hostDir, controlSecret, startedAt: clock.now() };
    } catch (error) {
      if (hostDir !== undefined) rmSync(hostDir, { recursive: true, force: true });
      const mayLackImage = !isFlotillaError(error) || isFlotillaError(error, 'REPLICA_START_FAILED');
      if (!mayLackImage || (await runtime.imageExists(target.image).catch(() => true))) throw error;
      throw new FlotillaError(
        'IMAGE_MISSING',
        `image ${target.image} of backend '${target.name}' is no longer on the Docker engine (removed by docker rmi or a prune); ` +
          'update the backend with its code again (update_backend: the same code rebuilds the image), or delete and deploy it',
        { image: target.image },
      );
    }
  }

  async checkStarting(target: BackendTarget, replica: Replica, deadline: number): Promise<'ready' | 'waiting'> {
    const { runtime, clock } = this.deps;
    const container = replica.container!;
    if (await this.healthy(target, container.target, 1000)) {
      this.deps.logger.info('replica ready', {
        component: 'controller',
        backend: target.name,
        replica: replica.id,
        container: container.containerId.slice(0, 12),
      });
      return 'ready';
    }
    const status = await runtime.inspectReplica(container.containerId);
    if (status === undefined || !status.running) {
      const logs = await runtime.logsTail(container.containerId, TIMING.logTailLines).catch(() => '');
      throw new FlotillaError(
        'REPLICA_START_FAILED',
        `a replica of backend '${target.name}' exited while starting (exit code ${status?.exitCode ?? 'unknown'}): ${failureFromLogs(logs)}`,
      );
    }
    if (clock.now() > deadline) {
      const logs = await runtime.logsTail(container.containerId, TIMING.logTailLines).catch(() => '');
      throw new FlotillaError(
        'REPLICA_START_FAILED',
        `a replica of backend '${target.name}' was not ready within ${Math.round((deadline - container.startedAt) / 1000)} s; last log lines:\n${logs.trim()}`,
      );
    }
    return 'waiting';
  }

  probe(target: BackendTarget, replica: Replica): Promise<boolean> {
    return this.healthy(target, replica.container!.target, TIMING.probeTimeoutMs);
  }

  async exitReason(replica: Replica, listed: ReplicaStatus | undefined): Promise<string | undefined> {
    const status = listed ?? (await this.deps.runtime.inspectReplica(replica.container!.containerId));
    if (status === undefined) return 'disappeared (its container was removed)';
    if (status.running) return undefined;
    if (status.lost !== undefined) return status.lost;
    if (status.oomKilled) return 'was killed for exceeding its memory limit (OOM)';
    const logs = await this.deps.runtime.logsTail(status.containerId, 3).catch(() => '');
    const last = logs.trim().split('\n').pop() ?? '';
    return `exited with code ${status.exitCode ?? 'unknown'}${last === '' ? '' : `; last log line: ${last}`}`;
  }

  /** The target's live config; its userConfig only when the replica may hold another one (reconfigure is not called again). */
  push(target: BackendTarget, replica: Replica): Promise<void> {
    const held = replica.userConfigHash;
    const live = liveConfigOf(target.config, held === undefined ? target.config.userConfig !== null : held !== target.userConfigHash);
    const { target: address, controlSecret } = replica.container!;
    return this.deps.client.pushConfig(address, controlSecret ?? '', live, TIMING.configPushTimeoutMs);
  }

  async drain(target: BackendTarget, replica: Replica, graceMs: number): Promise<void> {
    if (replica.container === undefined) return;
    const started = this.deps.clock.now();
    if (graceMs > 0) await settlesWithin(this.deps.drained(target.name, replica.id), graceMs);
    const leftS = graceMs > 0 ? Math.max(1, Math.ceil((graceMs - (this.deps.clock.now() - started)) / 1000)) : 0;
    await this.stopContainer(replica, leftS);
  }

  /** A failed replica: its in-flight requests are cut (to be retried elsewhere when idempotent), its container stopped at once. */
  stop(replica: Replica): Promise<void> {
    if (replica.container !== undefined) this.deps.cut(replica.container.target);
    return this.stopContainer(replica, 0);
  }

  /** Stops every container of this instance at once, and removes the replicas' host directories (shutdown). */
  async removeAll(): Promise<void> {
    const { runtime, settings } = this.deps;
    const leftovers = await runtime.listReplicas(instanceLabels(settings.instance)).catch(() => []);
    await Promise.all(leftovers.map((replica) => runtime.stopReplica(replica.containerId, 0).catch(() => undefined)));
    rmSync(runDirOf(settings), { recursive: true, force: true });
  }

  release(replica: Replica): void {
    this.deps.scheduler.release(replica.id);
    const hostDir = replica.container?.hostDir ?? join(runDirOf(this.deps.settings), replica.id);
    rmSync(hostDir, { recursive: true, force: true });
  }

  private async stopContainer(replica: Replica, timeoutS: number): Promise<void> {
    if (replica.container === undefined) return;
    try {
      const { containerId } = replica.container;
      await this.deps.limiter.run(() => this.deps.runtime.stopReplica(containerId, timeoutS));
    } catch (error) {
      this.deps.logger.error('stopping replica failed', {
        component: 'launcher',
        replica: replica.id,
        container: replica.container.containerId.slice(0, 12),
        error: errorMessage(error),
      });
    }
  }

  /** Whether a health answer means alive: 200 from the protocol, any 2xx or 3xx from a plain HTTP container. */
  private async healthy(target: BackendTarget, address: ReplicaTarget, timeoutMs: number): Promise<boolean> {
    const healthPath = target.runtimeEnv.healthPath;
    const status = await this.deps.client.probeHealth(address, timeoutMs, healthPath);
    if (status === undefined) return false;
    return healthPath === undefined && target.runtimeEnv.port === undefined ? status === 200 : status >= 200 && status < 400;
  }
}
