import { createHash } from 'node:crypto';
import type { BackendConfig, BackendInfo, ReplicaInfo } from '../api.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { shortId } from '../common/ids.js';
import type { Logger } from '../common/logger.js';
import type { LiveConfig } from '../replica/protocol.js';
import type { Scheduler } from '../resources/scheduler.js';
import type { SavedBackend } from './checkpoint.js';
import { backoffMs, TIMING } from './constants.js';
import { summarize } from './definition.js';
import type { EventRecorder } from './event-log.js';
import { Replica, type ReplicaHistory, type ReplicaState, type StepContext } from './replica.js';

/** What a backend should run: the saved desired state, with the hashes its replicas are compared against. */
export interface BackendTarget extends Omit<SavedBackend, 'replicaConfigs'> {
  imageHash: string;
  liveHash: string;
}

const hash = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

export function liveConfigOf(config: BackendConfig, includeUserConfig: boolean): LiveConfig {
  const live: LiveConfig = { maxBatchSize: config.maxBatchSize, batchWaitTimeoutS: config.batchWaitTimeoutS };
  if (includeUserConfig) live.userConfig = config.userConfig;
  return live;
}

export function targetOf(saved: Omit<SavedBackend, 'replicaConfigs'>): BackendTarget {
  const { name, definition, initArgs, config, resources, runtimeEnv, image } = saved;
  return {
    name,
    definition,
    initArgs,
    config,
    resources,
    runtimeEnv,
    image,
    imageHash: hash(image),
    // A plain HTTP container takes no live config, so it never needs a push.
    liveHash: runtimeEnv.port === undefined ? hash(JSON.stringify(liveConfigOf(config, true))) : 'none',
  };
}

interface Waiter {
  resolve(): void;
  reject(error: unknown): void;
}

export interface BackendStepContext extends Omit<StepContext, 'target' | 'mayPush' | 'onFailed' | 'onPushed'> {
  scheduler: Scheduler;
  log: Logger;
  /** Called when the replicas' saved live-config hashes changed. */
  onConfigsChanged(backend: BackendState): void;
  /** Where replica events (started, ready, failed, replaced, stopped) go. */
  events?: EventRecorder;
}

/**
 * One backend: its target (what it should run, how many) and its replicas,
 * each in one state. `update()` is the backend's part of the reconcile step:
 * it steps every replica, forgets stopped ones, then converges on the target:
 * starts replicas that are missing (after a backoff when they keep failing),
 * retires surplus ones (starting before ready) and ones on an outdated image.
 * A target change (config, count) is only a new target; the step does the rest.
 * A failure that fails a waiting call holds the backend (no new replicas)
 * until the controller undoes the call with a new target or deletes it.
 * `converged()` resolves when every replica is ready on the current target
 * and their number is the target's; it rejects with the error of a replica
 * that failed to start meanwhile.
 */
export class BackendState {
  replicas: Replica[] = [];
  /** Set by deleteBackend: every replica leaves, draining unless forced, then the backend is dropped. */
  deleting: { drain: boolean } | undefined;
  /** True while the controller pushes a live config itself. */
  pushing = false;
  /** After a failure that failed a waiting call: no new replicas until the controller sets a target again. */
  private held = false;
  private consecutiveFailures = 0;
  private retryAt = 0;
  private replacements: ReplicaHistory[] = [];
  private waiters: Waiter[] = [];

  constructor(
    private current: BackendTarget,
    /** See SavedBackend.replicaConfigs. */
    public replicaConfigs: Record<string, string> = {},
  ) {}

  get name(): string {
    return this.current.name;
  }

  get target(): BackendTarget {
    return this.current;
  }

  /** A new target; the reconcile step converges on it (and starts replicas again after a failed call). */
  retarget(target: BackendTarget): void {
    this.current = target;
    this.held = false;
  }

  saved(): SavedBackend {
    const { name, definition, initArgs, config, resources, runtimeEnv, image } = this.target;
    return { name, definition, initArgs, config, resources, runtimeEnv, image, replicaConfigs: { ...this.replicaConfigs } };
  }

  converged(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
  }

  isConverged(): boolean {
    if (this.deleting !== undefined) return this.replicas.length === 0;
    const want = this.target.config.numReplicas;
    return (
      this.replicas.length === want &&
      this.replicas.every((r) => r.state === 'ready' && r.imageHash === this.target.imageHash && r.liveHash === this.target.liveHash)
    );
  }

  update(ctx: BackendStepContext): void {
    const step: StepContext = {
      ...ctx,
      target: this.target,
      mayPush: !this.pushing,
      onFailed: (replica) => this.failed(ctx, replica),
      onPushed: (replica) => {
        this.replicaConfigs[replica.id] = replica.liveHash;
        ctx.onConfigsChanged(this);
      },
    };
    const before = new Map(this.replicas.map((r) => [r, { state: r.state, started: r.container !== undefined }]));
    if (this.deleting !== undefined) this.replicas.forEach((r) => r.retire(this.deleting!.drain));
    for (const replica of this.replicas) replica.update(step);
    const leaving = this.replicas.filter((r) => r.state === 'stopped');
    if (leaving.length > 0) {
      this.replicas = this.replicas.filter((r) => r.state !== 'stopped');
      if (leaving.some((r) => r.id in this.replicaConfigs)) {
        leaving.forEach((r) => delete this.replicaConfigs[r.id]);
        ctx.onConfigsChanged(this);
      }
    }
    if (this.deleting === undefined) this.converge(ctx, step);
    if (ctx.events !== undefined) this.recordChanges(ctx.events, before);
    if (this.isConverged()) this.settle();
  }

  /** The events of what the step changed in each replica it began with, then of the replacements it started. */
  private recordChanges(events: EventRecorder, before: Map<Replica, { state: ReplicaState; started: boolean }>): void {
    for (const [replica, was] of before) {
      const subject = { backend: this.name, replica: replica.id };
      const what = `replica ${replica.id} of ${this.name}`;
      if (!was.started && replica.container !== undefined)
        events.record('replica.started', subject, `${what} started in container ${replica.container.containerId.slice(0, 12)}`);
      if (was.state === replica.state) continue;
      if (replica.state === 'ready') events.record('replica.ready', subject, `${what} is ready`);
      if (replica.state === 'failed')
        events.record('replica.failed', subject, `${what} failed: ${replica.failure?.lastError ?? 'unknown'}`);
      if (replica.state === 'stopped' && was.state === 'draining') events.record('replica.stopped', subject, `${what} stopped`);
    }
    for (const replica of this.replicas) {
      const { restarts, lastError } = replica.history;
      if (before.has(replica) || restarts === 0) continue;
      const message = `replica ${replica.id} of ${this.name} replaces a failed one (restart ${restarts}): ${lastError}`;
      events.record('replica.replaced', { backend: this.name, replica: replica.id }, message);
    }
  }

  private converge(ctx: BackendStepContext, step: StepContext): void {
    const want = this.target.config.numReplicas;
    let active = this.replicas.filter((r) => r.state === 'starting' || r.state === 'ready');
    const retire = (replica: Replica): void => {
      replica.retire(true);
      replica.update(step);
    };
    active.filter((r) => r.imageHash !== this.target.imageHash).forEach(retire);
    active = active.filter((r) => r.imageHash === this.target.imageHash);
    if (active.length > want) {
      const order = [...active.filter((r) => r.state === 'starting'), ...active.filter((r) => r.state === 'ready').reverse()];
      order.slice(0, active.length - want).forEach(retire);
      return;
    }
    if (active.length === want) {
      this.replacements = [];
      return;
    }
    if (this.held || ctx.now < this.retryAt) return;
    for (let i = active.length; i < want; i++) {
      const history = this.replacements.shift() ?? { restarts: 0, lastError: null };
      const id = shortId();
      try {
        const placement = ctx.scheduler.reserve(id, this.target.resources);
        const replica = new Replica(id, placement, history, this.target.imageHash, this.target.liveHash, ctx.now);
        this.replicas.push(replica);
        replica.update(step);
      } catch (error) {
        this.replacements.unshift({ restarts: history.restarts + 1, lastError: errorMessage(error) });
        this.backOff(ctx.now);
        const failure = isFlotillaError(error)
          ? new FlotillaError(error.code, `backend '${this.name}' cannot start a replica: ${error.message}`, error.details)
          : error;
        ctx.log.error('cannot start a replica', { backend: this.name, error: errorMessage(error) });
        this.settle(failure);
        return;
      }
    }
  }

  private failed(ctx: BackendStepContext, replica: Replica): void {
    if (this.deleting !== undefined) return;
    const reason = replica.failure?.lastError ?? 'failed';
    ctx.log.warn('replica failed; replacing it', { backend: this.name, replica: replica.id, reason });
    const uptime = ctx.now - (replica.container?.startedAt ?? ctx.now);
    if (uptime > TIMING.stableUptimeMs) this.consecutiveFailures = 0;
    this.backOff(ctx.now);
    this.replacements.push({ restarts: replica.history.restarts + 1, lastError: reason });
    this.settle(replica.failure?.error);
  }

  private backOff(now: number): void {
    this.consecutiveFailures += 1;
    this.retryAt = now + backoffMs(this.consecutiveFailures);
  }

  /** Rejects everyone waiting for convergence, e.g. when the controller stops. */
  abandon(error: FlotillaError): void {
    this.settle(error);
  }

  /** Resolves the waiters, or rejects them with `error` (and holds the backend, so that the failed call can undo itself). */
  private settle(error?: unknown): void {
    const waiters = this.waiters;
    if (error !== undefined && waiters.length > 0) this.held = true;
    this.waiters = [];
    for (const waiter of waiters) {
      if (error === undefined) waiter.resolve();
      else waiter.reject(error);
    }
  }

  info(): BackendInfo {
    const { config, definition, initArgs, runtimeEnv, resources } = this.target;
    const env = Object.fromEntries(Object.entries(runtimeEnv).filter(([, value]) => value !== undefined));
    return {
      ...structuredClone(config),
      definition: summarize(definition),
      initArgs: structuredClone(initArgs),
      runtimeEnv: structuredClone(env),
      resources: structuredClone(resources),
    };
  }

  replicaInfo(): ReplicaInfo[] {
    return this.replicas.flatMap((r) =>
      r.state === 'stopped'
        ? []
        : [
            {
              id: r.id,
              state: r.state,
              containerId: r.container?.containerId ?? '',
              startedAt: new Date(r.container?.startedAt ?? 0).toISOString(),
              restarts: r.history.restarts,
              lastError: r.history.lastError,
              placement: { ...r.placement, gpuIds: [...r.placement.gpuIds] },
            },
          ],
    );
  }

  /** The ready replicas the proxy may route to. */
  routable(): Array<{ id: string; target: NonNullable<Replica['container']>['target'] }> {
    return this.replicas.flatMap((r) =>
      r.state === 'ready' && r.container !== undefined ? [{ id: r.id, target: r.container.target }] : [],
    );
  }

  noReplicaWaitMs(): number {
    return this.deleting === undefined && this.target.config.numReplicas > 0 ? TIMING.noReplicaWaitMs : 0;
  }
}
