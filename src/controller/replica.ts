import type { ReplicaInfo } from '../api.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import type { Placement } from '../resources/scheduler.js';
import type { ReplicaStatus, ReplicaTarget } from '../runtime/container-runtime.js';
import type { BackendTarget } from './target.js';
import { TIMING } from './constants.js';

export type ReplicaState = ReplicaInfo['state'] | 'stopped';

/** A replica as listReplicas reports it (one that has not stopped). */
export function infoOf(r: Replica): ReplicaInfo {
  return {
    id: r.id,
    state: r.state as ReplicaInfo['state'],
    containerId: r.container?.containerId ?? '',
    startedAt: new Date(r.container?.startedAt ?? 0).toISOString(),
    restarts: r.history.restarts,
    lastError: r.history.lastError,
    placement: { ...r.placement, gpuIds: [...r.placement.gpuIds] },
    version: r.version,
  };
}

export interface ReplicaHistory {
  restarts: number;
  lastError: string | null;
}

/** A container that runs (or ran) a replica. */
export interface Started {
  containerId: string;
  target: ReplicaTarget;
  hostDir: string | undefined;
  /** Sent on every control call (replica-files.ts); undefined for plain HTTP containers. */
  controlSecret: string | undefined;
  /** Epoch milliseconds the container started. */
  startedAt: number;
}

/** The I/O a replica needs; ReplicaLauncher is the real one. Every call may take long, none is awaited by the step. */
export interface ReplicaDriver {
  start(target: BackendTarget, replica: Replica): Promise<Started>;
  /** 'ready' once the replica answers its health check, 'waiting' before; throws why it will never be ready. */
  checkStarting(target: BackendTarget, replica: Replica, deadline: number): Promise<'ready' | 'waiting'>;
  probe(target: BackendTarget, replica: Replica): Promise<boolean>;
  /**
   * Why the replica's container stopped, in words for lastError, or undefined when asking the engine directly shows it
   * running after all (a listing can miss a container that is changing state).
   */
  exitReason(replica: Replica, listed: ReplicaStatus | undefined): Promise<string | undefined>;
  push(target: BackendTarget, replica: Replica): Promise<void>;
  /** Waits for the replica's requests in flight (at most graceMs), then stops it with the grace that is left. */
  drain(target: BackendTarget, replica: Replica, graceMs: number): Promise<void>;
  stop(replica: Replica): Promise<void>;
  /** Gives back the replica's resources and host directory. */
  release(replica: Replica): void;
}

/** What the reconcile step hands each replica. */
export interface StepContext {
  now: number;
  target: BackendTarget;
  /** The engine's last listing of this instance's containers, by replica id, and when it was asked for. */
  observed: { at: number; replicas: ReadonlyMap<string, ReplicaStatus> } | undefined;
  driver: ReplicaDriver;
  readyTimeoutMs: number;
  healthCheckPeriodMs: number;
  onFailed(replica: Replica): void;
  onPushed(replica: Replica): void;
  /** A replica refused the target's live config; true when that stopped a config change (the replica stays as it was). */
  onRefused(replica: Replica, error: unknown): boolean;
  /** Runs the step again soon, e.g. when an operation finished. */
  kick(): void;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

interface Task {
  done: boolean;
  finish(): void;
}

/**
 * One replica's state machine:
 *
 *                        ┌─new live config─► updating ─┐
 *                        │  ◄──pushed, or refused───────┘
 *   starting ──probe ok──► ready ──(scale down, delete, rollout)──► draining ──► stopped
 *      │                     │                                                    ▲
 *      └──start/probe fails──┴──exited, gone, 3 failed probes, unreachable──► failed
 *
 * Only `update()` (called by the reconcile step) moves it, and `update()`
 * never waits: it takes the outcome of the one operation the replica may
 * have had in flight, moves on, and launches the next operation.
 * A replica that is 'starting' is never routed to; an adopted one starts
 * there too and must pass a health check (and get the current live config,
 * unless it runs an older version that a rollout is replacing) before it is 'ready'.
 * A ready replica takes a new live config in place ('updating', still routed
 * to); a refusal that stops the change leaves it as it was, any other failed
 * push fails it.
 */
export class Replica {
  state: ReplicaState = 'starting';
  container: Started | undefined;
  failure: { error: FlotillaError; lastError: string } | undefined;
  /** When this control plane learnt of the container (its start returned, or it was adopted). */
  private knownAt = 0;
  private failedProbes = 0;
  private since: number;
  private lastProbeAt = Number.NEGATIVE_INFINITY;
  private healthy = false;
  private stopWith: { drain: boolean } | undefined;
  private task: Task | undefined;

  constructor(
    readonly id: string,
    readonly placement: Placement,
    readonly history: ReplicaHistory,
    /** The version it runs (versionOf). */
    readonly version: string,
    /** Hash of the live config it holds ('unknown' when a push may have half-applied). */
    public liveHash: string,
    now: number,
    /** Hash of the userConfig it holds (BackendTarget.userConfigHash), when known: the next push leaves an unchanged one out. */
    public userConfigHash: string | undefined,
    adopted?: Started,
  ) {
    this.since = now;
    if (adopted !== undefined) {
      this.container = adopted;
      this.knownAt = now;
    }
  }

  /** Asks the replica to leave; the step drains it (or stops it at once) when it gets to it. */
  retire(drain: boolean): void {
    if (this.state === 'starting' || this.isServing()) this.stopWith ??= { drain: drain && this.isServing() };
  }

  /** Ready, or taking a new live config while still routed to. */
  isServing(): boolean {
    return this.state === 'ready' || this.state === 'updating';
  }

  update(ctx: StepContext): void {
    if (this.task !== undefined) {
      if (!this.task.done) return;
      const task = this.task;
      this.task = undefined;
      task.finish();
    }
    if (this.stopWith !== undefined && (this.state === 'starting' || this.isServing())) this.move(ctx, 'draining');
    switch (this.state) {
      case 'starting':
        return this.stepStarting(ctx);
      case 'updating':
        // The push is done (or refused, which may have changed the target): the next step compares again.
        return this.move(ctx, 'ready');
      case 'ready':
        return this.stepReady(ctx);
      case 'draining': {
        const drain = this.stopWith?.drain ?? true;
        const graceMs = drain && this.container !== undefined ? ctx.target.config.gracefulShutdownTimeoutS * 1000 : 0;
        return this.launch(
          ctx,
          () => ctx.driver.drain(ctx.target, this, graceMs),
          () => this.move(ctx, 'stopped'),
        );
      }
      case 'failed':
        return this.launch(
          ctx,
          () => ctx.driver.stop(this),
          () => this.move(ctx, 'stopped'),
        );
      case 'stopped':
        return;
    }
  }

  private stepStarting(ctx: StepContext): void {
    if (this.container === undefined) {
      this.launch(
        ctx,
        () => ctx.driver.start(ctx.target, this),
        (outcome) => {
          if (!outcome.ok) return this.fail(ctx, outcome.error);
          this.container = outcome.value;
          this.knownAt = outcome.value.startedAt;
        },
      );
      return;
    }
    if (this.healthy) {
      if (!this.current(ctx) || this.liveHash === ctx.target.liveHash) return this.move(ctx, 'ready');
      return this.push(ctx);
    }
    if (ctx.now - this.lastProbeAt < TIMING.startingProbeMs) return;
    this.lastProbeAt = ctx.now;
    const deadline = this.since + ctx.readyTimeoutMs;
    this.launch(
      ctx,
      () => ctx.driver.checkStarting(ctx.target, this, deadline),
      (outcome) => {
        if (!outcome.ok) return this.fail(ctx, outcome.error);
        if (outcome.value === 'ready') this.healthy = true;
      },
    );
  }

  private stepReady(ctx: StepContext): void {
    const observed = ctx.observed;
    if (observed !== undefined && observed.at > this.knownAt) {
      const status = observed.replicas.get(this.id);
      if (status === undefined || !status.running || status.containerId !== this.container?.containerId) {
        const listed = status?.containerId === this.container?.containerId ? status : undefined;
        this.launch(
          ctx,
          () => ctx.driver.exitReason(this, listed),
          (outcome) => {
            if (!outcome.ok) this.fail(ctx, outcome.error);
            else if (outcome.value !== undefined) this.fail(ctx, `replica ${this.id} ${outcome.value}`);
            else this.knownAt = ctx.now;
          },
        );
        return;
      }
    }
    if (this.current(ctx) && this.liveHash !== ctx.target.liveHash) {
      this.move(ctx, 'updating');
      return this.push(ctx);
    }
    if (ctx.now - this.lastProbeAt < ctx.healthCheckPeriodMs) return;
    this.lastProbeAt = ctx.now;
    this.launch(
      ctx,
      () => ctx.driver.probe(ctx.target, this),
      (outcome) => {
        if (outcome.ok && outcome.value) {
          this.failedProbes = 0;
          return;
        }
        this.failedProbes += 1;
        if (this.failedProbes >= TIMING.failedProbesToReplace)
          this.fail(ctx, `replica ${this.id} stopped answering health checks (${this.failedProbes} in a row)`);
      },
    );
  }

  /** A replica of an older version keeps the live config it has until a rollout replaces it. */
  private current(ctx: StepContext): boolean {
    return this.version === ctx.target.version;
  }

  /** Pushes the target's live config; a refusal that stopped a config change leaves the replica as it was. */
  private push(ctx: StepContext): void {
    const { liveHash, userConfigHash } = ctx.target;
    this.launch(
      ctx,
      () => ctx.driver.push(ctx.target, this),
      (outcome) => {
        if (outcome.ok) {
          this.liveHash = liveHash;
          this.userConfigHash = userConfigHash;
          return ctx.onPushed(this);
        }
        const refused = !isFlotillaError(outcome.error, 'REPLICA_UNREACHABLE');
        if (!refused || !ctx.onRefused(this, outcome.error)) this.fail(ctx, outcome.error);
      },
    );
  }

  /** `reason` is an error (a failed start) or the words for lastError (a failed ready replica). */
  private fail(ctx: StepContext, reason: unknown): void {
    const lastError = typeof reason === 'string' ? reason : errorMessage(reason);
    const error = isFlotillaError(reason)
      ? reason
      : new FlotillaError('REPLICA_START_FAILED', `a replica of backend '${ctx.target.name}' failed: ${lastError}`);
    this.failure = { error, lastError };
    this.move(ctx, 'failed');
    ctx.onFailed(this);
  }

  private move(ctx: StepContext, state: ReplicaState): void {
    this.state = state;
    this.since = ctx.now;
    if (state === 'stopped') ctx.driver.release(this);
  }

  private launch<T>(ctx: StepContext, run: () => Promise<T>, then: (outcome: Outcome<T>) => void): void {
    let outcome: Outcome<T> | undefined;
    const task: Task = { done: false, finish: () => then(outcome!) };
    this.task = task;
    run()
      .then(
        (value) => (outcome = { ok: true, value }),
        (error: unknown) => (outcome = { ok: false, error }),
      )
      .finally(() => {
        task.done = true;
        ctx.kick();
      });
  }
}
