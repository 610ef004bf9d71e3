import type { Readable } from 'node:stream';
import { FlotillaError } from '../common/errors.js';
import type {
  ContainerRuntime,
  ImageBuild,
  ImageSummary,
  InstanceOwner,
  LogOptions,
  ReplicaSpec,
  ReplicaStatus,
} from './container-runtime.js';

/**
 * A ContainerRuntime whose every call gives up after a timeout with
 * ENGINE_UNAVAILABLE, so that an engine that stops answering fails the
 * operations that need it instead of hanging them. A stop gets its grace
 * period on top; image builds are not timed (they take as long as they take).
 */
export class TimedRuntime implements ContainerRuntime {
  constructor(
    private readonly inner: ContainerRuntime,
    private readonly timeoutMs: number,
  ) {}

  private timed<T>(what: string, call: Promise<T>, extraMs = 0): Promise<T> {
    const ms = this.timeoutMs + extraMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new FlotillaError(
              'ENGINE_UNAVAILABLE',
              `the Docker engine did not answer ${what} within ${Math.round(ms / 1000)} s; check that it runs (docker info), or raise engineTimeoutS`,
            ),
          ),
        ms,
      );
    });
    return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
  }

  ping(): Promise<void> {
    return this.timed('a ping', this.inner.ping());
  }

  imageExists(tag: string): Promise<boolean> {
    return this.timed(`an inspection of image ${tag}`, this.inner.imageExists(tag));
  }

  buildImage(build: ImageBuild): Promise<void> {
    return this.inner.buildImage(build);
  }

  startReplica(spec: ReplicaSpec): Promise<ReplicaStatus> {
    return this.timed(`the start of ${spec.name}`, this.inner.startReplica(spec));
  }

  inspectReplica(containerId: string): Promise<ReplicaStatus | undefined> {
    return this.timed(`an inspection of container ${containerId.slice(0, 12)}`, this.inner.inspectReplica(containerId));
  }

  listReplicas(labels: Record<string, string>): Promise<ReplicaStatus[]> {
    return this.timed('a container listing', this.inner.listReplicas(labels));
  }

  stopReplica(containerId: string, timeoutS: number): Promise<void> {
    return this.timed(`the stop of container ${containerId.slice(0, 12)}`, this.inner.stopReplica(containerId, timeoutS), timeoutS * 1000);
  }

  logsTail(containerId: string, lines: number): Promise<string> {
    return this.timed(`a log read of container ${containerId.slice(0, 12)}`, this.inner.logsTail(containerId, lines));
  }

  streamLogs(containerId: string, options: LogOptions): Promise<Readable> {
    return this.timed(`a log stream of container ${containerId.slice(0, 12)}`, this.inner.streamLogs(containerId, options));
  }

  /** Bounded by its own timeout. */
  pullImage(tag: string, timeoutMs: number): Promise<void> {
    return this.inner.pullImage(tag, timeoutMs);
  }

  listImages(labels: Record<string, string>): Promise<ImageSummary[]> {
    return this.timed('an image listing', this.inner.listImages(labels));
  }

  imagesOfContainers(): Promise<Set<string>> {
    return this.timed('a container listing', this.inner.imagesOfContainers());
  }

  removeImage(id: string): Promise<boolean> {
    return this.timed(`the removal of image ${id.slice(0, 19)}`, this.inner.removeImage(id));
  }

  tagImage(image: string, tag: string): Promise<void> {
    return this.timed(`the tagging of image ${image}`, this.inner.tagImage(image, tag));
  }

  removeTag(tag: string): Promise<boolean> {
    return this.timed(`the removal of tag ${tag}`, this.inner.removeTag(tag));
  }

  readInstanceOwner(instance: string): Promise<InstanceOwner | undefined> {
    return this.timed(`a read of instance ${instance}'s marker`, this.inner.readInstanceOwner(instance));
  }

  claimInstance(instance: string, owner: InstanceOwner): Promise<InstanceOwner | undefined> {
    return this.timed(`a claim of instance ${instance}'s marker`, this.inner.claimInstance(instance, owner));
  }

  writeInstanceOwner(instance: string, owner: InstanceOwner): Promise<void> {
    return this.timed(`a write of instance ${instance}'s marker`, this.inner.writeInstanceOwner(instance, owner));
  }

  removeInstanceOwner(instance: string, nonce: string): Promise<void> {
    return this.timed(`the removal of instance ${instance}'s marker`, this.inner.removeInstanceOwner(instance, nonce));
  }
}
