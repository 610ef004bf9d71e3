import type { Readable } from 'node:stream';
import type { NodeCapacity } from '../resources/scheduler.js';

/** Where the proxy reaches a replica: a unix socket on this host, or a TCP address. */
export type ReplicaTarget = { socketPath: string } | { host: string; port: number };

/** unix: a socket in the spec's hostDir; tcp: the container's port (8000 for protocol replicas) published on hostAddress. */
export type ReplicaTransport = { kind: 'unix' } | { kind: 'tcp'; hostAddress: string; containerPort: number };

/** isolated: a bridge network (created if missing) on which containers cannot reach each other; none: no network at all. */
export type ReplicaNetwork = { kind: 'isolated'; name: string } | { kind: 'none' };

/** How the container is confined beyond its resource limits: every replica drops all capabilities and runs under an init. */
export interface ReplicaConfinement {
  /** uid:gid to run as; undefined keeps the image's own user. */
  user: string | undefined;
  /** Capabilities given back after dropping all, e.g. SETUID for an image that switches to its own user. */
  capAdd: string[];
  /** The root filesystem is read-only, with a tmpfs /tmp. */
  readOnlyRootfs: boolean;
  network: ReplicaNetwork;
  /** At most this many processes and threads. */
  pidsLimit: number;
}

/** What the container may use: CPUs (shares, and a quota only with cpuLimit), memory (no swap) and the GPUs it may see. */
export interface ReplicaLimits {
  /** CPUs reserved: the container's CPU shares. */
  cpus: number;
  /** A hard cap in CPUs (CFS quota); null for none. */
  cpuLimit: number | null;
  memoryMb: number | null;
  gpuIds: string[];
}

export interface ReplicaSpec {
  name: string;
  image: string;
  labels: Record<string, string>;
  env: Record<string, string>;
  /** A host directory bind-mounted at /run/flotilla: the entry file, and the unix socket. */
  hostDir: string | undefined;
  transport: ReplicaTransport;
  /** Seconds a stop gives the replica after SIGTERM before it is killed, where the engine fixes that at start (Swarm). */
  stopGraceS: number;
  limits: ReplicaLimits;
  confinement: ReplicaConfinement;
  /** On a cluster: the node the scheduler placed the replica on. */
  node?: string;
}

export interface ReplicaStatus {
  containerId: string;
  name: string;
  labels: Record<string, string>;
  running: boolean;
  exitCode: number | undefined;
  oomKilled: boolean;
  /** Epoch milliseconds the container last started. */
  startedAt: number;
  target: ReplicaTarget | undefined;
  /** The host directory mounted at /run/flotilla, if any. */
  hostDir: string | undefined;
  /** Why the engine lost the replica without it exiting (its cluster node went down), if it did. */
  lost?: string;
}

/** The control plane that serves an instance on an engine, as its marker records it. */
export interface InstanceOwner {
  adminUrl: string;
  httpUrl: string;
  pid: number;
  /** Tells this start of a control plane from any other. */
  nonce: string;
  /** The host name of the control plane's machine (or container), and when it claimed the instance. */
  host?: string;
  startedAt?: string;
}

export interface LogOptions {
  follow: boolean;
  /** Lines of history; 'all' for every line (with since: every line since then). */
  tail: number | 'all';
  timestamps?: boolean;
  since?: number;
}

export interface ImageSummary {
  id: string;
  tags: string[];
  /** The image it was built on; '' for none (or when the builder did not record it). */
  parentId: string;
}

export interface ImageBuild {
  tag: string;
  context: Readable;
  labels: Record<string, string>;
  /** Path of the Dockerfile inside the context (default Dockerfile). */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  onLog?: (line: string) => void;
}

/**
 * What the controller needs from a container engine, in Flotilla's own types.
 * DockerRuntime is the implementation; nothing else sees the engine's types.
 */
export interface ContainerRuntime {
  ping(): Promise<void>;
  imageExists(tag: string): Promise<boolean>;
  /** Pulls an image from its registry; rejects when that fails or takes longer than timeoutMs. */
  pullImage(tag: string, timeoutMs: number): Promise<void>;
  buildImage(build: ImageBuild): Promise<void>;
  startReplica(spec: ReplicaSpec): Promise<ReplicaStatus>;
  inspectReplica(containerId: string): Promise<ReplicaStatus | undefined>;
  listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]>;
  /** Images, intermediate ones too, that carry all these labels. */
  listImages(labels: Record<string, string>): Promise<ImageSummary[]>;
  /** Ids of the images of every container on the engine, running or not. */
  imagesOfContainers(): Promise<Set<string>>;
  /** Removes an image (all its tags) and the untagged layers only it used; false when the engine refuses (in use). */
  removeImage(id: string): Promise<boolean>;
  /** Adds `tag` to the image `image` names (a tag or id). */
  tagImage(image: string, tag: string): Promise<void>;
  /** Removes one tag; the image goes with its last tag unless other images are built on it. False when the engine refuses (in use). */
  removeTag(tag: string): Promise<boolean>;
  /** The owner recorded in the instance's marker on this engine, if there is one. */
  readInstanceOwner(instance: string): Promise<InstanceOwner | undefined>;
  /**
   * Creates the instance's marker recording `owner` unless the instance has one, and returns the owner the marker
   * records (`owner` when this call created it; undefined when it records none that can be read). Atomic on the engine.
   */
  claimInstance(instance: string, owner: InstanceOwner): Promise<InstanceOwner | undefined>;
  /** Records `owner` in the instance's marker, replacing any other. */
  writeInstanceOwner(instance: string, owner: InstanceOwner): Promise<void>;
  /** Removes the instance's marker if it still records the owner with this nonce. */
  removeInstanceOwner(instance: string, nonce: string): Promise<void>;
  /** Sends SIGTERM, waits up to timeoutS for the replica to exit, then removes the container. */
  stopReplica(containerId: string, timeoutS: number): Promise<void>;
  logsTail(containerId: string, lines: number): Promise<string>;
  /**
   * The container's stdout and stderr as one text stream; with follow, it stays open until the container stops. With
   * timestamps, each line starts with its RFC 3339 time and a space; since (epoch seconds) skips older lines.
   */
  streamLogs(containerId: string, options: LogOptions): Promise<Readable>;
  /** On a cluster: every node with its capacity and readiness. A runtime without it runs on this machine alone. */
  listNodes?(): Promise<NodeCapacity[]>;
}
