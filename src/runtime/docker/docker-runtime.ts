import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import Docker from 'dockerode';
import { FlotillaError, errorMessage, isFlotillaError } from '../../common/errors.js';
import { LABELS } from '../../common/labels.js';
import { PROTOCOL } from '../../replica/protocol.js';
import type { NodeCapacity } from '../../resources/scheduler.js';
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
import { sleep } from '../../common/clock.js';

const BUILD_LOG_TAIL = 30;
// eslint-disable-next-line no-control-regex
const ANSI_ESCAPE = /\x1b\[[0-9;?]*[A-Za-z]/g;

interface BuildEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

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

/**
 * Docker's confinement fields: no capabilities, no privilege gain, an init as PID 1 (reaps zombies, forwards signals),
 * a pids limit, and optionally a read-only root filesystem with a tmpfs /tmp.
 */
function hostConfinement(confinement: ReplicaConfinement): Docker.HostConfig {
  return {
    CapDrop: ['ALL'],
    ...(confinement.capAdd.length > 0 ? { CapAdd: confinement.capAdd } : {}),
    SecurityOpt: ['no-new-privileges'],
    Init: true,
    PidsLimit: confinement.pidsLimit,
    ReadonlyRootfs: confinement.readOnlyRootfs,
    ...(confinement.readOnlyRootfs ? { Tmpfs: { '/tmp': 'rw,nosuid,nodev,mode=1777' } } : {}),
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

function isNotFound(error: unknown): boolean {
  return (error as { statusCode?: number }).statusCode === 404;
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

interface LogQuery {
  stdout: boolean;
  stderr: boolean;
  tail?: number;
  timestamps?: boolean;
  since?: number;
}

/** A replica's log output, read whole or followed. */
interface LogSource {
  buffered(query: LogQuery): Promise<Buffer>;
  following(query: LogQuery): Promise<NodeJS.ReadableStream>;
}

/** The only module that talks to the Docker engine (through dockerode). */
export class DockerRuntime implements ContainerRuntime {
  protected readonly docker: Docker;
  protected networkQueue: Promise<unknown> = Promise.resolve();

  constructor(socketPath: string) {
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
    try {
      await this.docker.getImage(tag).inspect();
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async pullImage(tag: string, timeoutMs: number): Promise<void> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const stream = await this.docker.pull(tag, { abortSignal: abort.signal });
      await new Promise<void>((resolve, reject) => {
        abort.signal.addEventListener('abort', () => reject(new Error(`no answer within ${timeoutMs / 1000} s`)));
        this.docker.modem.followProgress(stream, (error: Error | null, events: BuildEvent[] = []) => {
          const failed = events.find((event) => event.error !== undefined);
          if (error ?? failed) reject(error ?? new Error(failed?.error));
          else resolve();
        });
      });
    } finally {
      clearTimeout(timer);
    }
  }

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
        (event: BuildEvent) => {
          const text = event.error ?? event.stream ?? event.status;
          if (event.error !== undefined || event.errorDetail !== undefined) {
            failure = event.errorDetail?.message ?? event.error;
          }
          for (const line of (text ?? '').replace(ANSI_ESCAPE, '').split('\n')) {
            if (line.trim() === '') continue;
            log.push(line);
            if (log.length > BUILD_LOG_TAIL) log.shift();
            build.onLog?.(line);
          }
        },
      );
    }).catch((error: unknown) => {
      failure ??= errorMessage(error);
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
      let info = await this.inspectNetwork(name);
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
        info = await this.inspectNetwork(name);
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

  protected async inspectNetwork(name: string): Promise<Docker.NetworkInspectInfo | undefined> {
    try {
      return (await this.docker.getNetwork(name).inspect()) as Docker.NetworkInspectInfo;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async listImages(labels: Record<string, string>): Promise<ImageSummary[]> {
    const images = await this.docker.listImages({
      all: true,
      filters: { label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) },
    });
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
    try {
      const { RepoTags: tags } = await this.docker.getImage(id).inspect();
      // Tag by tag, never forced: the engine refuses (409) while a container uses it.
      for (const reference of tags.length > 0 ? tags : [id]) await this.docker.getImage(reference).remove();
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
          ...hostConfinement(spec.confinement),
          Binds: spec.hostDir === undefined ? undefined : [`${spec.hostDir}:${PROTOCOL.socketDir}`],
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
    try {
      return statusOf(await this.docker.getContainer(containerId).inspect());
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: { label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) },
    });
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

  async streamLogs(id: string, options: LogOptions): Promise<Readable> {
    const source = this.logSource(id);
    const output = new PassThrough();
    const query = {
      stdout: true,
      stderr: true,
      ...(options.tail === 'all' ? {} : { tail: options.tail }),
      timestamps: options.timestamps === true,
      ...(options.since === undefined ? {} : { since: options.since }),
    };
    if (!options.follow) {
      output.end(demultiplex(await source.buffered(query)));
      return output;
    }
    const stream = await source.following(query);
    this.docker.modem.demuxStream(stream, output, output);
    // demuxStream writes without waiting: the engine's stream pauses while the output is full.
    stream.on('data', () => {
      if (output.writableNeedDrain) stream.pause();
    });
    output.on('drain', () => stream.resume());
    stream.on('end', () => output.end());
    stream.on('error', (error: Error) => output.destroy(error));
    output.on('close', () => (stream as unknown as { destroy(): void }).destroy());
    return output;
  }

  async logsTail(id: string, lines: number): Promise<string> {
    try {
      return demultiplex(await this.logSource(id).buffered({ stdout: true, stderr: true, tail: lines }));
    } catch (error) {
      return `(logs unavailable: ${errorMessage(error)})`;
    }
  }
}

/** Docker multiplexes stdout and stderr of non-TTY containers in 8-byte-headed frames. */
function demultiplex(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(offset + 4);
    parts.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}

/** The runtime the settings select: one engine, or the Swarm whose manager is the engine at the socket. */
export function engineRuntime(config: {
  runtime: 'docker' | 'swarm';
  dockerSocket: string;
  swarmRegistry: string;
  swarmNetwork: string;
}): DockerRuntime | SwarmRuntime {
  return config.runtime === 'swarm'
    ? new SwarmRuntime(config.dockerSocket, { registry: config.swarmRegistry, network: config.swarmNetwork })
    : new DockerRuntime(config.dockerSocket);
}

/** What the Swarm API reports of a task, as far as Flotilla reads it. */
interface SwarmTask {
  ID: string;
  ServiceID: string;
  NodeID?: string;
  CreatedAt: string;
  DesiredState: string;
  Status: { State: string; Timestamp?: string; Err?: string; ContainerStatus?: { ExitCode?: number } };
  NetworksAttachments?: Array<{ Network: { Spec: { Name: string } }; Addresses?: string[] }>;
}

interface SwarmNode {
  ID: string;
  Description: {
    Hostname: string;
    Resources: {
      NanoCPUs: number;
      MemoryBytes: number;
      GenericResources?: Array<{
        NamedResourceSpec?: { Kind: string; Value: string };
        DiscreteResourceSpec?: { Kind: string; Value: number };
      }>;
    };
  };
  Spec: { Availability: string; Role: string; Labels?: Record<string, string> };
  Status: { State: string };
}

export interface SwarmSettings {
  /** host[:port] of the registry that every node pulls from. */
  registry: string;
  /** The attachable overlay network of replicas and the control plane. */
  network: string;
}

/** Where Swarm keeps what a ReplicaStatus needs beyond Flotilla's own labels. */
const SWARM_LABELS = { port: 'dev.flotilla.swarm.port', hostDir: 'dev.flotilla.swarm.host-dir' } as const;
const TASK_OVER = new Set(['complete', 'shutdown', 'failed', 'rejected', 'orphaned', 'remove']);
const NANO = 1e9;
const TASK_POLL_MS = 250;
const ADDRESS_WAIT_MS = 20_000;

/**
 * Replicas as Swarm services on a cluster whose manager is the engine at the socket: one service per replica with one
 * task (restart policy none: Flotilla replaces replicas itself), endpoint mode dnsrr on the instance's overlay network,
 * pinned to the node Flotilla's scheduler chose, reserving and limiting its CPUs and memory. GPUs are the nodes' generic
 * resources named gpu, but Flotilla books them itself (fractions included) and hands the ids in NVIDIA_VISIBLE_DEVICES:
 * reserving them in Swarm too gets tasks rejected by Swarm's constraint enforcer ("assigned node no longer meets
 * constraints") when a node is updated. Images are pushed to the registry and started by digest. A replica is running while its task
 * is not over and its node is ready; it is addressed by its task's address on the overlay.
 */
export class SwarmRuntime extends DockerRuntime {
  constructor(
    socketPath: string,
    private readonly swarm: SwarmSettings,
  ) {
    super(socketPath);
  }

  /** The engine must answer and be a manager of an active Swarm. */
  override async ping(): Promise<void> {
    await super.ping();
    const { Swarm: swarm } = (await this.docker.info()) as { Swarm?: { LocalNodeState?: string; ControlAvailable?: boolean } };
    if (swarm?.LocalNodeState !== 'active' || swarm.ControlAvailable !== true) {
      throw new FlotillaError(
        'ENGINE_UNAVAILABLE',
        `runtime swarm needs a Swarm manager, but this Docker engine is ${swarm?.LocalNodeState === 'active' ? 'a Swarm worker' : 'not in a Swarm'}; ` +
          'point FLOTILLA_DOCKER_SOCKET at a manager (docker swarm init makes one), or set FLOTILLA_RUNTIME=docker',
      );
    }
  }

  /** Every node with its CPUs, memory and the GPUs it advertises (generic resource gpu); ready when up and active. */
  async listNodes(): Promise<NodeCapacity[]> {
    const nodes = (await this.docker.listNodes()) as SwarmNode[];
    return nodes.map((node) => ({
      name: node.Description.Hostname,
      ready: node.Status.State === 'ready' && node.Spec.Availability === 'active',
      attributes: {
        'node.id': node.ID,
        'node.role': node.Spec.Role,
        ...Object.fromEntries(Object.entries(node.Spec.Labels ?? {}).map(([key, value]) => [`node.labels.${key}`, value])),
      },
      capacity: {
        cpus: node.Description.Resources.NanoCPUs / NANO,
        memoryMb: Math.floor(node.Description.Resources.MemoryBytes / (1024 * 1024)),
        gpus: (node.Description.Resources.GenericResources ?? []).flatMap((resource) =>
          resource.NamedResourceSpec?.Kind === 'gpu' ? [{ id: resource.NamedResourceSpec.Value }] : [],
        ),
      },
    }));
  }

  override async buildImage(build: ImageBuild): Promise<void> {
    await super.buildImage(build);
    await this.pushed(build.tag);
  }

  /** The image by digest in the registry, pushing it there first unless it already is. */
  private async pushed(tag: string): Promise<string> {
    const prefix = `${this.swarm.registry}/`;
    // A tag of another registry (a first part with a dot or a port) moves to ours under its path.
    const remote = tag.startsWith(prefix) ? tag : `${prefix}${tag.replace(/^[^/]*[.:][^/]*\//, '')}`;
    const repository = remote.replace(/:[^:/]*$/, '');
    const digestOf = async () =>
      (await this.docker.getImage(tag).inspect()).RepoDigests.find((digest) => digest.startsWith(`${repository}@`));
    const known = await digestOf();
    if (known !== undefined) return known;
    const [, name = remote, version = 'latest'] = /^(.*?)(?::([^:/]+))?$/.exec(remote) ?? [];
    await this.docker.getImage(tag).tag({ repo: name, tag: version });
    const stream = await this.docker.getImage(remote).push({ authconfig: { serveraddress: this.swarm.registry } });
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(stream, (error: Error | null, events: BuildEvent[] = []) => {
        const failed = events.find((event) => event.error !== undefined);
        if (error ?? failed) reject(error ?? new Error(failed?.error));
        else resolve();
      });
    }).catch((error: unknown) => {
      throw new FlotillaError(
        'REPLICA_START_FAILED',
        `pushing image ${tag} to the registry ${this.swarm.registry} failed: ${errorMessage(error)}; check that every node's engine trusts it (insecure-registries for plain HTTP)`,
      );
    });
    const pushed = await digestOf();
    if (pushed === undefined)
      throw new FlotillaError('REPLICA_START_FAILED', `image ${tag} has no digest in ${this.swarm.registry} after its push`);
    return pushed;
  }

  protected override ensureNetwork(name: string): Promise<void> {
    const run = this.networkQueue.then(async () => {
      let info = await this.inspectNetwork(name);
      if (info === undefined) {
        await this.docker
          .createNetwork({ Name: name, Driver: 'overlay', Attachable: true, CheckDuplicate: true, Labels: { [LABELS.managed]: 'true' } })
          .catch((error: unknown) => {
            if ((error as { statusCode?: number }).statusCode !== 409) throw error;
          });
        info = await this.inspectNetwork(name);
      }
      if (info?.Driver !== 'overlay' || info.Scope !== 'swarm') {
        throw new FlotillaError(
          'INVALID_ARGUMENT',
          `Docker network '${name}' is not a Swarm overlay network; remove it so that Flotilla creates it, or set swarmNetwork to another name`,
        );
      }
    });
    this.networkQueue = run.catch(() => undefined);
    return run;
  }

  override async startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    const port = spec.transport.kind === 'tcp' ? spec.transport.containerPort : PROTOCOL.tcpPort;
    const env: Record<string, string> = { ...spec.env, [PROTOCOL.env.port]: String(port) };
    const image = await this.pushed(spec.image);
    await this.ensureNetwork(this.swarm.network).catch((error: unknown) => {
      throw isFlotillaError(error)
        ? error
        : new FlotillaError('REPLICA_START_FAILED', `preparing network ${this.swarm.network} failed: ${errorMessage(error)}`);
    });
    const configs = spec.hostDir === undefined ? [] : [await this.entryConfig(spec, spec.hostDir)];
    if (spec.hostDir !== undefined) env[PROTOCOL.env.entryFile] = `${PROTOCOL.socketDir}/${PROTOCOL.entryName}`;
    const { limits, confinement } = spec;
    const labels = {
      ...spec.labels,
      [SWARM_LABELS.port]: String(port),
      ...(spec.hostDir === undefined ? {} : { [SWARM_LABELS.hostDir]: spec.hostDir }),
    };
    const created = (await this.docker
      .createService({
        Name: spec.name,
        Labels: labels,
        TaskTemplate: {
          ContainerSpec: {
            Image: image,
            Labels: spec.labels,
            Env: Object.entries(env).map(([key, value]) => `${key}=${value}`),
            User: confinement.user,
            Init: true,
            ReadOnly: confinement.readOnlyRootfs,
            CapabilityDrop: ['ALL'],
            ...(confinement.capAdd.length > 0 ? { CapabilityAdd: confinement.capAdd } : {}),
            Mounts: confinement.readOnlyRootfs
              ? [{ Type: 'tmpfs', Source: '', Target: '/tmp', TmpfsOptions: { SizeBytes: 0, Mode: 0o1777 } }]
              : [],
            Configs: configs,
            StopGracePeriod: Math.round(spec.stopGraceS * NANO),
          },
          Resources: {
            Reservations: {
              NanoCPUs: Math.round(limits.cpus * NANO),
              ...(limits.memoryMb === null ? {} : { MemoryBytes: limits.memoryMb * 1024 * 1024 }),
            },
            Limits: {
              ...(limits.cpuLimit === null ? {} : { NanoCPUs: Math.round(limits.cpuLimit * NANO) }),
              ...(limits.memoryMb === null ? {} : { MemoryBytes: limits.memoryMb * 1024 * 1024 }),
              Pids: confinement.pidsLimit,
            },
          },
          RestartPolicy: { Condition: 'none' },
          Placement: { Constraints: spec.node === undefined ? [] : [`node.hostname==${spec.node}`] },
          Networks: [{ Target: this.swarm.network }],
        },
        Mode: { Replicated: { Replicas: 1 } },
        EndpointSpec: { Mode: 'dnsrr' },
      })
      .catch(async (error: unknown) => {
        await this.removeConfigs(spec.name);
        throw new FlotillaError('REPLICA_START_FAILED', `creating Swarm service ${spec.name} failed: ${errorMessage(error)}`);
      })) as { id?: string; ID?: string };
    const id = created.ID ?? created.id ?? '';
    const deadline = Date.now() + ADDRESS_WAIT_MS;
    for (;;) {
      const status = await this.inspectReplica(id);
      if (status?.target !== undefined || status?.running === false || Date.now() > deadline) {
        if (status?.target !== undefined && status.running) return status;
        const task = (await this.tasksOf([id]))[0];
        await this.stopReplica(id, 0).catch(() => undefined);
        throw new FlotillaError(
          'REPLICA_START_FAILED',
          `Swarm did not start ${spec.name}: ${task?.Status.Err ?? task?.Status.State ?? 'no task'}${spec.node === undefined ? '' : ` (on node ${spec.node})`}`,
        );
      }
      await sleep(TASK_POLL_MS);
    }
  }

  /** The entry file as a Swarm config mounted where the replica protocol reads it, readable by the replica user only. */
  private async entryConfig(spec: ReplicaSpec, hostDir: string): Promise<Docker.ConfigReference> {
    const data = await readFile(join(hostDir, PROTOCOL.entryName));
    const name = `${spec.name}-entry`;
    const config = (await this.docker.createConfig({
      Name: name,
      Labels: { ...instanceOf(spec.labels), [LABELS.replica]: spec.labels[LABELS.replica] ?? '' },
      Data: data.toString('base64'),
    })) as { id?: string; ID?: string };
    const [uid = '0', gid = '0'] = (spec.confinement.user ?? '0:0').split(':');
    return {
      ConfigID: config.ID ?? config.id ?? '',
      ConfigName: name,
      File: { Name: `${PROTOCOL.socketDir}/${PROTOCOL.entryName}`, UID: uid, GID: gid, Mode: 0o400 },
    };
  }

  private async removeConfigs(serviceName: string): Promise<void> {
    const configs = (await this.docker.listConfigs({ filters: { name: [`${serviceName}-entry`] } })) as Array<{ ID: string }>;
    await Promise.all(
      configs.map((config) =>
        this.docker
          .getConfig(config.ID)
          .remove()
          .catch(() => undefined),
      ),
    );
  }

  private async tasksOf(serviceIds: string[]): Promise<SwarmTask[]> {
    if (serviceIds.length === 0) return [];
    const tasks = (await this.docker.listTasks({ filters: { service: serviceIds } }).catch((error: unknown) => {
      if (isNotFound(error)) return []; // a service that is gone has no tasks
      throw error;
    })) as SwarmTask[];
    return tasks.sort((a, b) => Date.parse(b.CreatedAt) - Date.parse(a.CreatedAt));
  }

  private statusOf(info: ServiceInfo, tasks: SwarmTask[], readyNodes: Set<string>): ReplicaStatus {
    const labels = info.Spec.Labels ?? {};
    const task = tasks.find((t) => t.ServiceID === info.ID);
    const over = task === undefined ? false : TASK_OVER.has(task.Status.State) || task.DesiredState !== 'running';
    const nodeReady = task?.NodeID === undefined || readyNodes.has(task.NodeID);
    const address = task?.NetworksAttachments?.find((a) => a.Network.Spec.Name === this.swarm.network)?.Addresses?.[0];
    const { [SWARM_LABELS.port]: port, [SWARM_LABELS.hostDir]: hostDir, ...own } = labels;
    const running = !over && nodeReady;
    return {
      containerId: info.ID,
      name: info.Spec.Name,
      labels: own,
      running,
      exitCode: running ? undefined : task?.Status.ContainerStatus?.ExitCode,
      ...(nodeReady ? {} : { lost: 'was lost with its node, which Swarm reports down' }),
      oomKilled: false,
      startedAt: Date.parse(task?.CreatedAt ?? info.CreatedAt),
      target: address === undefined ? undefined : { host: address.replace(/\/\d+$/, ''), port: Number(port ?? PROTOCOL.tcpPort) },
      hostDir,
    };
  }

  private async readyNodes(): Promise<Set<string>> {
    const nodes = (await this.docker.listNodes()) as SwarmNode[];
    return new Set(nodes.filter((node) => node.Status.State === 'ready').map((node) => node.ID));
  }

  override async inspectReplica(serviceId: string): Promise<ReplicaStatus | undefined> {
    let info: ServiceInfo;
    try {
      info = (await this.docker.getService(serviceId).inspect()) as ServiceInfo;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    const [tasks, ready] = await Promise.all([this.tasksOf([info.ID]), this.readyNodes()]);
    return this.statusOf(info, tasks, ready);
  }

  override async listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]> {
    const services = (await this.docker.listServices({
      filters: { label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) },
    })) as ServiceInfo[];
    const [tasks, ready] = await Promise.all([this.tasksOf(services.map((s) => s.ID)), this.readyNodes()]);
    return services.map((info) => this.statusOf(info, tasks, ready));
  }

  /**
   * Scales the service to no task (Swarm sends SIGTERM, then SIGKILL after its stop grace period), waits up to timeoutS
   * plus that grace for the task to end (unless its node is down), then removes the service and its entry config.
   */
  override async stopReplica(serviceId: string, timeoutS: number): Promise<void> {
    const service = this.docker.getService(serviceId);
    let info: ServiceInfo;
    try {
      info = (await service.inspect()) as ServiceInfo;
      await service.update({ ...info.Spec, version: info.Version.Index, Mode: { Replicated: { Replicas: 0 } } });
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
    const grace = (info.Spec.TaskTemplate?.ContainerSpec?.StopGracePeriod ?? 0) / NANO;
    const deadline = Date.now() + (timeoutS + grace) * 1000;
    while (Date.now() < deadline) {
      const [tasks, ready] = await Promise.all([this.tasksOf([serviceId]), this.readyNodes()]);
      if (!tasks.some((task) => !TASK_OVER.has(task.Status.State) && task.NodeID !== undefined && ready.has(task.NodeID))) break;
      await sleep(TASK_POLL_MS);
    }
    await service.remove().catch((error: unknown) => {
      if (!isNotFound(error)) throw error;
    });
    await this.removeConfigs(info.Spec.Name);
  }

  override async imagesOfContainers(): Promise<Set<string>> {
    const used = await super.imagesOfContainers();
    const services = (await this.docker.listServices()) as ServiceInfo[];
    const references = new Set(services.map((s) => s.Spec.TaskTemplate?.ContainerSpec?.Image ?? ''));
    for (const image of await this.docker.listImages()) {
      if ((image.RepoDigests ?? []).some((digest) => references.has(digest))) used.add(image.Id);
    }
    return used;
  }

  /** Where a replica's logs are read: its service (Swarm fetches them from the node). */
  protected override logSource(serviceId: string): LogSource {
    const service = this.docker.getService(serviceId);
    return {
      buffered: async (query) => (await service.logs({ ...query, follow: false })) as unknown as Buffer,
      following: async (query) => (await service.logs({ ...query, follow: true })) as NodeJS.ReadableStream,
    };
  }
}

interface ServiceInfo {
  ID: string;
  CreatedAt: string;
  Version: { Index: number };
  Spec: Docker.ServiceSpec & { Name: string; Labels?: Record<string, string>; TaskTemplate?: Docker.ContainerTaskSpec };
}

function instanceOf(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([key]) => key === LABELS.managed || key === LABELS.instance));
}
