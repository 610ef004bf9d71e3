import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { FlotillaError, errorMessage, isFlotillaError } from '../../common/errors.js';
import { sleep } from '../../common/clock.js';
import { LABELS } from '../../common/labels.js';
import { PROTOCOL } from '../../replica/protocol.js';
import type { NodeCapacity } from '../../resources/scheduler.js';
import type { ImageBuild, ReplicaSpec, ReplicaStatus } from '../container-runtime.js';
import { DockerRuntime, logConfig, type ReplicaBounds } from './docker-runtime.js';
import { byLabels, isNotFound, orUndefined, progressDone, type LogSource } from './engine-calls.js';

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
  /** The overlay network of replicas and the control plane. */
  network: string;
  /** The overlay must be encrypted. */
  encrypted: boolean;
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
    bounds?: ReplicaBounds,
  ) {
    super(socketPath, bounds);
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

  /**
   * The image by digest in the registry, pushing it there first unless the registry has it: a digest the engine recorded
   * at an earlier push is checked with the registry (one that lost it, restarted without its volume or pruned, gets
   * the image again), so that no start runs into a pull that cannot succeed.
   */
  private async pushed(tag: string): Promise<string> {
    const prefix = `${this.swarm.registry}/`;
    // A tag of another registry (a first part with a dot or a port) moves to ours under its path.
    const remote = tag.startsWith(prefix) ? tag : `${prefix}${tag.replace(/^[^/]*[.:][^/]*\//, '')}`;
    const repository = remote.replace(/:[^:/]*$/, '');
    const digestOf = async () =>
      (await this.docker.getImage(tag).inspect()).RepoDigests.find((digest) => digest.startsWith(`${repository}@`));
    const known = await digestOf();
    if (known !== undefined && (await this.inRegistry(known))) return known;
    const [, name = remote, version = 'latest'] = /^(.*?)(?::([^:/]+))?$/.exec(remote) ?? [];
    await this.docker.getImage(tag).tag({ repo: name, tag: version });
    const stream = await this.docker.getImage(remote).push({ authconfig: { serveraddress: this.swarm.registry } });
    await progressDone(this.docker, stream).catch((error: unknown) => {
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

  private inRegistry(digest: string): Promise<boolean> {
    return this.docker
      .getImage(digest)
      .distribution()
      .then(
        () => true,
        () => false,
      );
  }

  /**
   * Creates the replicas' overlay if it is missing: encrypted unless the settings say otherwise (IPsec between nodes,
   * so that requests and control secrets never cross the wire in clear) and not attachable (only services join it, no
   * `docker run --network`). One that exists must be a Swarm overlay, encrypted when that is asked for.
   */
  protected override ensureNetwork(name: string): Promise<void> {
    const run = this.networkQueue.then(async () => {
      let info = await this.inspectNetwork(name);
      if (info === undefined) {
        await this.docker
          .createNetwork({
            Name: name,
            Driver: 'overlay',
            Attachable: false,
            ...(this.swarm.encrypted ? { Options: { encrypted: 'true' } } : {}),
            CheckDuplicate: true,
            Labels: { [LABELS.managed]: 'true' },
          })
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
      if (this.swarm.encrypted && info.Options?.encrypted === undefined) {
        throw new FlotillaError(
          'INVALID_ARGUMENT',
          `the Swarm overlay network '${name}' is not encrypted, so requests and control secrets would cross nodes in clear; ` +
            'recreate it with --opt encrypted (the stack file does), or set FLOTILLA_SWARM_ENCRYPTED=false where the nodes cannot run IPsec',
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
    const secrets = spec.hostDir === undefined ? [] : [await this.entrySecret(spec, spec.hostDir)];
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
              ? [{ Type: 'tmpfs', Source: '', Target: '/tmp', TmpfsOptions: { SizeBytes: this.bounds.tmpMb * 1024 * 1024, Mode: 0o1777 } }]
              : [],
            Secrets: secrets,
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
          LogDriver: { Name: logConfig(this.bounds).Type, Options: logConfig(this.bounds).Config },
          Placement: { Constraints: spec.node === undefined ? [] : [`node.hostname==${spec.node}`] },
          Networks: [{ Target: this.swarm.network }],
        },
        Mode: { Replicated: { Replicas: 1 } },
        EndpointSpec: { Mode: 'dnsrr' },
      })
      .catch(async (error: unknown) => {
        await this.removeEntry(spec.name);
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

  /**
   * The entry file (control secret, initArgs, userConfig) as a Swarm secret mounted where the replica protocol reads it,
   * readable by the replica user only: Swarm keeps secrets encrypted and never hands their data back through its API.
   */
  private async entrySecret(
    spec: ReplicaSpec,
    hostDir: string,
  ): Promise<Docker.SecretReference & { SecretID: string; SecretName: string }> {
    const data = await readFile(join(hostDir, PROTOCOL.entryName));
    const name = `${spec.name}-entry`;
    const secret = (await this.docker.createSecret({
      Name: name,
      Labels: { ...instanceOf(spec.labels), [LABELS.replica]: spec.labels[LABELS.replica] ?? '' },
      Data: data.toString('base64'),
    })) as { id?: string; ID?: string };
    const [uid = '0', gid = '0'] = (spec.confinement.user ?? '0:0').split(':');
    return {
      SecretID: secret.ID ?? secret.id ?? '',
      SecretName: name,
      File: { Name: `${PROTOCOL.socketDir}/${PROTOCOL.entryName}`, UID: uid, GID: gid, Mode: 0o400 },
    };
  }

  /** Removes a replica's entry: its secret, and the config that replicas started by earlier versions of Flotilla got. */
  private async removeEntry(serviceName: string): Promise<void> {
    const filters = { filters: { name: [`${serviceName}-entry`] } };
    const [secrets, configs] = (await Promise.all([this.docker.listSecrets(filters), this.docker.listConfigs(filters)])) as Array<
      Array<{ ID: string }>
    >;
    await Promise.all([
      ...(secrets ?? []).map((secret) =>
        this.docker
          .getSecret(secret.ID)
          .remove()
          .catch(() => undefined),
      ),
      ...(configs ?? []).map((config) =>
        this.docker
          .getConfig(config.ID)
          .remove()
          .catch(() => undefined),
      ),
    ]);
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
    const info = await orUndefined(this.docker.getService(serviceId).inspect() as Promise<ServiceInfo>);
    if (info === undefined) return undefined;
    const [tasks, ready] = await Promise.all([this.tasksOf([info.ID]), this.readyNodes()]);
    return this.statusOf(info, tasks, ready);
  }

  override async listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]> {
    const services = (await this.docker.listServices({ filters: byLabels(labels) })) as ServiceInfo[];
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
    await this.removeEntry(info.Spec.Name);
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
