import type { Readable } from 'node:stream';
import type { Clock } from '../../../src/common/clock.js';
import type { ContainerRuntime, ImageSummary, InstanceOwner, ReplicaSpec, ReplicaStatus } from '../../../src/runtime/container-runtime.js';

interface FakeContainer {
  status: ReplicaStatus;
  spec: ReplicaSpec | undefined;
  logs: string;
}

/** Containers in memory; each gets a TCP target 127.0.0.1:<n>. `hang` makes every call wait forever, like a stuck engine. */
export class FakeRuntime implements ContainerRuntime {
  readonly containers = new Map<string, FakeContainer>();
  readonly stops: Array<{ containerId: string; timeoutS: number }> = [];
  startsInFlight = 0;
  maxStartsInFlight = 0;
  hang = false;
  /** While set, starts wait for it. */
  startGate: Promise<void> | undefined;
  /** Logs a container started from a spec gets, e.g. an init_failed event. */
  logsFor: (spec: ReplicaSpec) => string = () => '';
  private next = 1;
  private readonly owners = new Map<string, InstanceOwner>();

  constructor(private readonly clock: Clock) {}

  private async call<T>(value: () => T): Promise<T> {
    if (this.hang) await new Promise(() => undefined);
    return value();
  }

  ping(): Promise<void> {
    return this.call(() => undefined);
  }
  imageExists(): Promise<boolean> {
    return this.call(() => true);
  }
  buildImage(): Promise<void> {
    return this.call(() => undefined);
  }

  async startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    this.startsInFlight += 1;
    this.maxStartsInFlight = Math.max(this.maxStartsInFlight, this.startsInFlight);
    try {
      const created = await this.call(() => this.add(spec.labels, spec, false));
      if (this.startGate !== undefined) await this.startGate;
      return await this.call(() => this.run(created.containerId));
    } finally {
      this.startsInFlight -= 1;
    }
  }

  /** A container as if started by an earlier control plane; not `running`, it is only created (Docker reports exit code 0). */
  add(labels: Record<string, string>, spec?: ReplicaSpec, running = true): ReplicaStatus {
    const n = this.next++;
    const status: ReplicaStatus = {
      containerId: `c${n}`.padEnd(64, '0'),
      name: spec?.name ?? `container-${n}`,
      labels,
      running,
      exitCode: running ? undefined : 0,
      oomKilled: false,
      startedAt: this.clock.now(),
      target: { host: '127.0.0.1', port: 10_000 + n },
      hostDir: spec?.hostDir,
    };
    this.containers.set(status.containerId, { status, spec, logs: spec === undefined ? '' : this.logsFor(spec) });
    return { ...status };
  }

  private run(containerId: string): ReplicaStatus {
    const container = this.containers.get(containerId)!;
    container.status = { ...container.status, running: true, exitCode: undefined, startedAt: this.clock.now() };
    return { ...container.status };
  }

  exit(containerId: string, exitCode: number): void {
    const container = this.containers.get(containerId)!;
    container.status = { ...container.status, running: false, exitCode };
  }

  /** The engine lost the replica without it exiting, as a cluster does when the replica's node goes down. */
  lose(containerId: string, lost: string): void {
    const container = this.containers.get(containerId)!;
    container.status = { ...container.status, running: false, exitCode: undefined, lost };
  }

  inspectReplica(containerId: string): Promise<ReplicaStatus | undefined> {
    return this.call(() => {
      const found = this.containers.get(containerId);
      return found === undefined ? undefined : { ...found.status };
    });
  }
  listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]> {
    return this.call(() =>
      [...this.containers.values()]
        .map((c) => ({ ...c.status }))
        .filter((s) => Object.entries(labels).every(([key, value]) => s.labels[key] === value)),
    );
  }
  stopReplica(containerId: string, timeoutS: number): Promise<void> {
    return this.call(() => {
      this.stops.push({ containerId, timeoutS });
      this.containers.delete(containerId);
    });
  }
  logsTail(containerId: string): Promise<string> {
    return this.call(() => this.containers.get(containerId)?.logs ?? '');
  }
  streamLogs(): Promise<Readable> {
    return Promise.reject(new Error('not in the fake'));
  }
  pullImage(): Promise<void> {
    return Promise.reject(new Error('no registry in the fake'));
  }
  listImages(): Promise<ImageSummary[]> {
    return this.call(() => []);
  }
  imagesOfContainers(): Promise<Set<string>> {
    return this.call(() => new Set([...this.containers.values()].map((c) => c.spec?.image ?? '')));
  }
  removeImage(): Promise<boolean> {
    return this.call(() => true);
  }
  tagImage(): Promise<void> {
    return this.call(() => undefined);
  }
  removeTag(): Promise<boolean> {
    return this.call(() => true);
  }
  readInstanceOwner(instance: string): Promise<InstanceOwner | undefined> {
    return this.call(() => this.owners.get(instance));
  }
  claimInstance(instance: string, owner: InstanceOwner): Promise<InstanceOwner | undefined> {
    return this.call(() => {
      if (!this.owners.has(instance)) this.owners.set(instance, owner);
      return this.owners.get(instance);
    });
  }
  writeInstanceOwner(instance: string, owner: InstanceOwner): Promise<void> {
    return this.call(() => void this.owners.set(instance, owner));
  }
  removeInstanceOwner(instance: string, nonce: string): Promise<void> {
    return this.call(() => {
      if (this.owners.get(instance)?.nonce === nonce) this.owners.delete(instance);
    });
  }
}
