import type { Readable } from 'node:stream';
import Docker from 'dockerode';
import { FlotillaError, errorMessage, isFlotillaError } from '../../common/errors.js';
import { LABELS } from '../../common/labels.js';
import { hideUrlCredentials } from '../../common/redact.js';
import { PROTOCOL } from '../../replica/protocol.js';
import type {
  ContainerRuntime,
  ImageBuild,
  ImageSummary,
  InstanceOwner,
  LogOptions,
  ReplicaConfinement,
  ReplicaLimits,
  ReplicaSpec,
  ReplicaStatus,
  ReplicaTarget,
} from '../container-runtime.js';
import {
  byLabels,
  isNotFound,
  logsTail,
  orUndefined,
  progressDone,
  streamLogs,
  type LogSource,
  type ProgressEvent,
} from './engine-calls.js';

const BUILD_LOG_TAIL = 30;
// eslint-disable-next-line no-control-regex
const ANSI_ESCAPE = /\x1b\[[0-9;?]*[A-Za-z]/g;

const CPU_PERIOD_US = 100_000;

/**
 * Docker's resource fields for the limits: 1024 CPU shares per reserved CPU (a weight under contention, no cap), a CFS
 * quota only for a cpuLimit, memory without swap, GPUs by id.
 */
export function hostResources(limits: ReplicaLimits): Docker.HostConfig {
  const resources: Docker.HostConfig = { CpuShares: Math.max(2, Math.round(1024 * limits.cpus)) };
  if (limits.cpuLimit !== null) {
    resources.CpuPeriod = CPU_PERIOD_US;
    resources.CpuQuota = Math.max(1000, Math.round(limits.cpuLimit * CPU_PERIOD_US));
  }
  if (limits.memoryMb !== null) {
    resources.Memory = limits.memoryMb * 1024 * 1024;
    resources.MemorySwap = resources.Memory;
  }
  if (limits.gpuIds.length > 0) {
    resources.DeviceRequests = [{ Driver: 'nvidia', DeviceIDs: limits.gpuIds, Capabilities: [['gpu']] }];
  }
  return resources;
}

const NO_ICC = 'com.docker.network.bridge.enable_icc';

/** What a replica may take of the host's disk and memory beyond its limits: its logs (rotated) and its /tmp tmpfs. */
export interface ReplicaBounds {
  logMaxMb: number;
  logFiles: number;
  tmpMb: number;
}

export const DEFAULT_BOUNDS: ReplicaBounds = { logMaxMb: 10, logFiles: 3, tmpMb: 256 };

/** The engine keeps at most logFiles files of logMaxMb MiB of a replica's output. */
export function logConfig(bounds: ReplicaBounds): { Type: string; Config: Record<string, string> } {
  return { Type: 'json-file', Config: { 'max-size': `${bounds.logMaxMb}m`, 'max-file': String(bounds.logFiles) } };
}

/**
 * Docker's confinement fields: no capabilities, no privilege gain, an init as PID 1 (reaps zombies, forwards signals),
 * a pids limit, and optionally a read-only root filesystem with a tmpfs /tmp of tmpMb.
 */
function hostConfinement(confinement: ReplicaConfinement, bounds: ReplicaBounds): Docker.HostConfig {
  return {
    CapDrop: ['ALL'],
    ...(confinement.capAdd.length > 0 ? { CapAdd: confinement.capAdd } : {}),
    SecurityOpt: ['no-new-privileges'],
    Init: true,
    PidsLimit: confinement.pidsLimit,
    ReadonlyRootfs: confinement.readOnlyRootfs,
    ...(confinement.readOnlyRootfs ? { Tmpfs: { '/tmp': `rw,nosuid,nodev,mode=1777,size=${bounds.tmpMb}m` } } : {}),
    NetworkMode: confinement.network.kind === 'none' ? 'none' : confinement.network.name,
  };
}

function startFailure(spec: ReplicaSpec, error: unknown): FlotillaError {
  const message = errorMessage(error);
  if (spec.limits.gpuIds.length > 0 && /could not select device driver "nvidia"|unknown or invalid runtime name: nvidia/i.test(message)) {
    return new FlotillaError(
      'GPU_RUNTIME_MISSING',
      `replica ${spec.name} asks for GPU ${spec.limits.gpuIds.join(', ')}, but the Docker engine has no NVIDIA container runtime; ` +
        'install the NVIDIA Container Toolkit on a GPU host (docs/resources.md) or remove replicaOptions.numGpus',
    );
  }
  return new FlotillaError('REPLICA_START_FAILED', `starting container ${spec.name} failed: ${message}`);
}

function hostDirOf(info: Docker.ContainerInspectInfo): string | undefined {
  return info.Mounts.find((m) => m.Destination === PROTOCOL.socketDir)?.Source;
}

/** A published port means tcp; otherwise the socket in the mounted directory. */
function targetOf(info: Docker.ContainerInspectInfo): ReplicaTarget | undefined {
  const binding = Object.values(info.NetworkSettings.Ports ?? {}).find((bindings) => bindings?.[0] !== undefined)?.[0];
  if (binding) return { host: binding.HostIp || '127.0.0.1', port: Number(binding.HostPort) };
  const hostDir = hostDirOf(info);
  if (hostDir !== undefined && Object.keys(info.HostConfig.PortBindings ?? {}).length === 0) {
    return { socketPath: `${hostDir}/${PROTOCOL.socketName}` };
  }
  return undefined;
}

function statusOf(info: Docker.ContainerInspectInfo): ReplicaStatus {
  return {
    containerId: info.Id,
    name: info.Name.replace(/^\//, ''),
    labels: info.Config.Labels ?? {},
    running: info.State.Running,
    exitCode: info.State.Running ? undefined : info.State.ExitCode,
    oomKilled: info.State.OOMKilled,
    startedAt: Date.parse(info.State.StartedAt),
    target: targetOf(info),
    hostDir: hostDirOf(info),
  };
}

/** Replicas as containers on one Docker engine (src/runtime/docker/ is the only folder that imports dockerode). */
export class DockerRuntime implements ContainerRuntime {
  protected readonly docker: Docker;
  protected networkQueue: Promise<unknown> = Promise.resolve();

  constructor(
    socketPath: string,
    protected readonly bounds: ReplicaBounds = DEFAULT_BOUNDS,
  ) {
    this.docker = new Docker({ socketPath });
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (error) {
      throw new FlotillaError(
        'ENGINE_UNAVAILABLE',
        `no Docker engine answers (${errorMessage(error)}); start one (scripts/engine.sh) or set FLOTILLA_DOCKER_SOCKET`,
      );
    }
  }

  async imageExists(tag: string): Promise<boolean> {
    return (await orUndefined(this.docker.getImage(tag).inspect())) !== undefined;
  }

  async pullImage(tag: string, timeoutMs: number): Promise<void> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const stream = await this.docker.pull(tag, { abortSignal: abort.signal });
      const aborted = new Promise<never>((_, reject) =>
        abort.signal.addEventListener('abort', () => reject(new Error(`no answer within ${timeoutMs / 1000} s`))),
      );
      await Promise.race([progressDone(this.docker, stream), aborted]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Fails with BUILD_FAILED and the end of the build's output; credentials in URLs never reach the error or onLog. */
  async buildImage(build: ImageBuild): Promise<void> {
    const log: string[] = [];
    let failure: string | undefined;
    const stream = await this.docker.buildImage(build.context, {
      t: build.tag,
      labels: build.labels,
      rm: true,
      forcerm: true,
      ...(build.dockerfile === undefined ? {} : { dockerfile: build.dockerfile }),
      ...(build.buildArgs === undefined ? {} : { buildargs: build.buildArgs }),
    });
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (error: Error | null) => (error ? reject(error) : resolve()),
        (event: ProgressEvent) => {
          const text = hideUrlCredentials(event.error ?? event.stream ?? event.status ?? '');
          if (event.error !== undefined || event.errorDetail !== undefined) {
            failure = hideUrlCredentials(event.errorDetail?.message ?? event.error ?? '');
          }
          for (const line of text.replace(ANSI_ESCAPE, '').split('\n')) {
            if (line.trim() === '') continue;
            log.push(line);
            if (log.length > BUILD_LOG_TAIL) log.shift();
            build.onLog?.(line);
          }
        },
      );
    }).catch((error: unknown) => {
      failure ??= hideUrlCredentials(errorMessage(error));
    });
    if (failure !== undefined) {
      throw new FlotillaError('BUILD_FAILED', `building image ${build.tag} failed: ${failure}\n${log.join('\n')}`, {
        tag: build.tag,
        log,
      });
    }
  }

  /** Creates the isolated network if it is missing; one that exists must be a bridge with inter-container traffic off. */
  protected ensureNetwork(name: string): Promise<void> {
    const run = this.networkQueue.then(async () => {
      let info = await this.settleNetwork(name);
      if (info === undefined) {
        await this.docker
          .createNetwork({
            Name: name,
            Driver: 'bridge',
            CheckDuplicate: true,
            Options: { [NO_ICC]: 'false' },
            Labels: { [LABELS.managed]: 'true' },
          })
          .catch((error: unknown) => {
            if ((error as { statusCode?: number }).statusCode !== 409) throw error;
          });
        info = await this.settleNetwork(name);
      }
      if (info?.Driver !== 'bridge' || info.Options?.[NO_ICC] !== 'false') {
        throw new FlotillaError(
          'INVALID_ARGUMENT',
          `Docker network '${name}' lets containers reach each other (it needs driver bridge and ${NO_ICC}=false); ` +
            'remove it (docker network rm) so that Flotilla creates it, or set replicaNetwork to another name',
        );
      }
    });
    this.networkQueue = run.catch(() => undefined);
    return run;
  }

  /**
   * The one network of that name. The engine does not make a create atomic: control planes that start at once can each
   * create one, and a name that matches two cannot be used. Every one of them keeps the oldest and removes the others.
   */
  private async settleNetwork(name: string): Promise<Docker.NetworkInspectInfo | undefined> {
    for (let attempt = 0; ; attempt++) {
      const [kept, ...others] = (await this.docker.listNetworks({ filters: { name: [name] } }))
        .filter((network) => network.Name === name)
        .sort((a, b) => a.Created.localeCompare(b.Created) || a.Id.localeCompare(b.Id));
      if (kept === undefined) return undefined;
      await Promise.all(
        others.map((other) =>
          this.docker
            .getNetwork(other.Id)
            .remove()
            .catch(() => undefined),
        ),
      );
      const info = await this.inspectNetwork(kept.Id);
      if (info !== undefined || attempt === 3) return info;
    }
  }

  protected inspectNetwork(name: string): Promise<Docker.NetworkInspectInfo | undefined> {
    return orUndefined(this.docker.getNetwork(name).inspect() as Promise<Docker.NetworkInspectInfo>);
  }

  async listImages(labels: Record<string, string>): Promise<ImageSummary[]> {
    const images = await this.docker.listImages({ all: true, filters: byLabels(labels) });
    return images.map((image) => ({
      id: image.Id,
      tags: (image.RepoTags ?? []).filter((tag) => tag !== '<none>:<none>'),
      parentId: image.ParentId,
    }));
  }

  async imagesOfContainers(): Promise<Set<string>> {
    return new Set((await this.docker.listContainers({ all: true })).map((container) => container.ImageID));
  }

  async removeImage(id: string): Promise<boolean> {
    const tags = (await orUndefined(this.docker.getImage(id).inspect()))?.RepoTags;
    if (tags === undefined) return true;
    // Tag by tag, never forced: the engine refuses (409) while a container uses it.
    for (const reference of tags.length > 0 ? tags : [id]) if (!(await this.removeTag(reference))) return false;
    return true;
  }

  async tagImage(image: string, tag: string): Promise<void> {
    const at = tag.lastIndexOf(':');
    await this.docker.getImage(image).tag({ repo: tag.slice(0, at), tag: tag.slice(at + 1) });
  }

  async removeTag(tag: string): Promise<boolean> {
    try {
      await this.docker.getImage(tag).remove();
      return true;
    } catch (error) {
      const status = (error as { statusCode?: number }).statusCode;
      if (status === 404) return true;
      if (status === 409) return false;
      throw error;
    }
  }

  /** An instance's marker is a labelled volume, which costs the engine nothing but a directory. */
  private markerOf(instance: string): Docker.Volume {
    return this.docker.getVolume(`flotilla-instance-${instance}`);
  }

  async readInstanceOwner(instance: string): Promise<InstanceOwner | undefined> {
    try {
      const info = (await this.markerOf(instance).inspect()) as { Labels?: Record<string, string> | null };
      const owner = info.Labels?.[LABELS.owner];
      return owner === undefined ? undefined : (JSON.parse(owner) as InstanceOwner);
    } catch (error) {
      if (isNotFound(error) || error instanceof SyntaxError) return undefined;
      throw error;
    }
  }

  /** The engine's volume create is the atomic step: for a name it already has, it returns that volume unchanged. */
  async claimInstance(instance: string, owner: InstanceOwner): Promise<InstanceOwner | undefined> {
    await this.docker.createVolume({
      Name: `flotilla-instance-${instance}`,
      Labels: { [LABELS.managed]: 'true', [LABELS.instance]: instance, [LABELS.owner]: JSON.stringify(owner) },
    });
    return this.readInstanceOwner(instance);
  }

  async writeInstanceOwner(instance: string, owner: InstanceOwner): Promise<void> {
    await this.markerOf(instance)
      .remove()
      .catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
    await this.docker.createVolume({
      Name: `flotilla-instance-${instance}`,
      Labels: { [LABELS.managed]: 'true', [LABELS.instance]: instance, [LABELS.owner]: JSON.stringify(owner) },
    });
  }

  async removeInstanceOwner(instance: string, nonce: string): Promise<void> {
    if ((await this.readInstanceOwner(instance))?.nonce !== nonce) return;
    await this.markerOf(instance)
      .remove()
      .catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
  }

  async startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    const port = spec.transport.kind === 'tcp' ? `${spec.transport.containerPort}/tcp` : undefined;
    const env = { ...spec.env };
    if (spec.transport.kind === 'tcp') env[PROTOCOL.env.port] = String(spec.transport.containerPort);
    else env[PROTOCOL.env.socket] = `${PROTOCOL.socketDir}/${PROTOCOL.socketName}`;
    if (spec.hostDir !== undefined) env[PROTOCOL.env.entryFile] = `${PROTOCOL.socketDir}/${PROTOCOL.entryName}`;
    const { network } = spec.confinement;
    if (network.kind === 'isolated') {
      await this.ensureNetwork(network.name).catch((error: unknown) => {
        throw isFlotillaError(error)
          ? error
          : new FlotillaError('REPLICA_START_FAILED', `preparing network ${network.name} failed: ${errorMessage(error)}`);
      });
    }
    const container = await this.docker
      .createContainer({
        name: spec.name,
        Image: spec.image,
        User: spec.confinement.user,
        Env: Object.entries(env).map(([key, value]) => `${key}=${value}`),
        Labels: spec.labels,
        ExposedPorts: port === undefined ? undefined : { [port]: {} },
        HostConfig: {
          ...hostResources(spec.limits),
          ...hostConfinement(spec.confinement, this.bounds),
          LogConfig: logConfig(this.bounds),
          // Over tcp the replica only reads its entry there: nothing it writes can reach the host's disk.
          Binds:
            spec.hostDir === undefined ? undefined : [`${spec.hostDir}:${PROTOCOL.socketDir}${spec.transport.kind === 'tcp' ? ':ro' : ''}`],
          PortBindings:
            spec.transport.kind === 'tcp' && port !== undefined
              ? { [port]: [{ HostIp: spec.transport.hostAddress, HostPort: '' }] }
              : undefined,
        },
      })
      .catch((error: unknown) => {
        throw new FlotillaError('REPLICA_START_FAILED', `creating container ${spec.name} failed: ${errorMessage(error)}`);
      });
    try {
      await container.start();
      return statusOf(await container.inspect());
    } catch (error) {
      await container.remove({ force: true }).catch(() => undefined);
      throw startFailure(spec, error);
    }
  }

  async inspectReplica(containerId: string): Promise<ReplicaStatus | undefined> {
    const info = await orUndefined(this.docker.getContainer(containerId).inspect());
    return info === undefined ? undefined : statusOf(info);
  }

  async listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]> {
    const containers = await this.docker.listContainers({ all: true, filters: byLabels(labels) });
    const statuses = await Promise.all(containers.map((c) => this.inspectReplica(c.Id)));
    return statuses.filter((s): s is ReplicaStatus => s !== undefined);
  }

  async stopReplica(containerId: string, timeoutS: number): Promise<void> {
    const container = this.docker.getContainer(containerId);
    try {
      await container.stop({ t: timeoutS });
    } catch (error) {
      const status = (error as { statusCode?: number }).statusCode;
      if (status !== 304 && status !== 404) throw error;
    }
    try {
      await container.remove({ force: true });
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }

  /** Where a replica's logs are read: its container. */
  protected logSource(containerId: string): LogSource {
    const container = this.docker.getContainer(containerId);
    return {
      buffered: (query) => container.logs({ ...query, follow: false }),
      following: (query) => container.logs({ ...query, follow: true }),
    };
  }

  streamLogs(id: string, options: LogOptions): Promise<Readable> {
    return streamLogs(this.docker, this.logSource(id), options);
  }

  logsTail(id: string, lines: number): Promise<string> {
    return logsTail(this.logSource(id), lines);
  }
}
