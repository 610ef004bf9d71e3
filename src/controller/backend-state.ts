import type { BackendInfo, ReplicaInfo, RolloutStatus } from '../api.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { shortId } from '../common/ids.js';
import type { Logger } from '../common/logger.js';
import type { Placement, Scheduler } from '../resources/scheduler.js';
import type { SavedBackend, SavedRollout } from '../spec/saved-state.js';
import { backoffMs, TIMING } from './constants.js';
import type { EventRecorder } from './event-log.js';
import { infoOf, Replica, type ReplicaHistory, type StepContext } from './replica.js';
import { recordReplicaChanges, replicaMoments } from './replica-events.js';
import { ACTIVE, LEAVING, ReplicaSet, SERVING, type ReplicaQuery } from './replica-set.js';
import { infoOfTarget, savedTarget, targetOf, type BackendTarget } from './target.js';

interface Waiter {
  /** converged(): the replicas match the target; configured(): the ready ones of its version hold its live config. */
  goal: 'converged' | 'configured';
  resolve(): void;
  reject(error: unknown): void;
}

export interface BackendStepContext extends Omit<StepContext, 'target' | 'onFailed' | 'onPushed' | 'onRefused'> {
  scheduler: Scheduler;
  log: Logger;
  rollout: { maxSurge: number; onFailure: 'rollback' | 'pause' };
  /** Called when what is saved of the backend changed: the replicas' live-config hashes, a rollout's progress. */
  onConfigsChanged(backend: BackendState): void;
  /** Where replica events (started, ready, failed, replaced, stopped) go. */
  events?: EventRecorder;
}

const ROLLING: ReadonlySet<RolloutStatus['state']> = new Set(['rolling', 'in-place', 'rolling-back']);

/**
 * One backend: its target (what it should run, how many) and its replicas,
 * each in one state. `update()` is the backend's part of the reconcile step:
 * it steps every replica, forgets stopped ones, then converges on the target:
 * starts replicas that are missing (after a backoff when they keep failing)
 * and retires surplus ones (starting before ready).
 * A target change (config, count) is only a new target; the step does the rest.
 * A failure that fails a waiting call holds the backend (no new replicas)
 * until the controller undoes the call with a new target or deletes it.
 *
 * A new live config of the same version (`reconfigure`) is pushed to the
 * ready replicas in place ('updating'), and no new replica starts until they
 * took it. A replica that refuses it stops the change: the previous config
 * becomes the target again, and the step pushes it back to those that took it.
 *
 * A target of another version (`rollOut`) is a rolling update: replicas of the
 * new version start beside the old ones (at most maxSurge above numReplicas,
 * and only as capacity allows), and an old one is retired only once a new one
 * is ready, so that the ready replicas never drop below numReplicas. Without
 * room to surge, one old replica is retired (drained) at a time and its
 * place taken by a new one ('in-place'; the ready replicas drop by one at most).
 * A replica of the new version that fails stops the rollout: the previous
 * version becomes the target again and is rolled back to the same way
 * ('rolling-back'), or, with onFailure 'pause', no more new replicas start and
 * the old ones keep serving ('paused').
 *
 * `converged()` resolves when every replica is ready on the current target
 * and their number is the target's; it rejects with the error of a replica
 * that failed to start meanwhile, ROLLOUT_FAILED, or a refused live config.
 * `configured()` resolves once the target's live config is in force.
 */
export class BackendState {
  private readonly set = new ReplicaSet();
  private deleteAs: { drain: boolean } | undefined;
  /** After a failure that failed a waiting call: no new replicas until the controller sets a target again. */
  private held = false;
  private consecutiveFailures = 0;
  private retryAt = 0;
  /** What the next replacements inherit; `node` is where the replica they replace failed, avoided when another fits. */
  private replacements: Array<ReplicaHistory & { node?: string }> = [];
  private waiters: Waiter[] = [];
  private rollout: RolloutStatus | undefined;
  /** The last good target while a rollout is under way, rolled back to when it fails. */
  private previous: BackendTarget | undefined;
  /** A rollout the next step records as started. */
  private announce = false;
  /** While a new live config is pushed: the target it replaced, rolled back to when a replica refuses it. */
  private configFrom: BackendTarget | undefined;

  constructor(
    private current: BackendTarget,
    /** See SavedBackend.replicaConfigs. */
    public replicaConfigs: Record<string, string> = {},
    saved?: SavedRollout,
  ) {
    if (saved !== undefined) {
      const { previous, ...status } = saved;
      this.rollout = status;
      this.previous = previous === undefined ? undefined : targetOf(previous);
    }
  }

  get name(): string {
    return this.current.name;
  }

  get target(): BackendTarget {
    return this.current;
  }

  /** The replicas, in the order they were started or adopted. */
  get replicas(): readonly Replica[] {
    return this.set.all;
  }

  count(query: ReplicaQuery = {}): number {
    return this.set.count(query);
  }

  /** Set by delete(): every replica leaves, draining unless forced, then the backend is dropped. */
  get deleting(): Readonly<{ drain: boolean }> | undefined {
    return this.deleteAs;
  }

  /** A running container taken over at startup (adoption.ts). */
  adopt(replica: Replica): void {
    this.set.add(replica);
  }

  /** A new target, taken as it is (an undo, or a test's); the step converges on it and starts replicas again after a failed call. */
  retarget(target: BackendTarget): void {
    this.current = target;
    this.held = false;
    this.configFrom = undefined;
  }

  /** A new config of the same version; a new live config is pushed to the replicas, and rolled back if one refuses it. */
  reconfigure(target: BackendTarget): void {
    const from = this.current;
    this.retarget(target);
    if (target.liveHash !== from.liveHash && target.version === from.version) this.configFrom = from;
  }

  /** Every replica leaves, draining (or stopped at once), and then the backend; converged() resolves when they are gone. */
  delete(drain: boolean): void {
    this.deleteAs = { drain };
  }

  /**
   * The autoscaler's replica count, for the target and for the targets it would roll back to; nothing else
   * changes (a held backend stays held). Returns what undoes it (when saving it failed).
   */
  scaleTo(count: number): () => void {
    const before = { current: this.current, previous: this.previous, configFrom: this.configFrom };
    const scaled = (target: BackendTarget): BackendTarget => ({ ...target, config: { ...target.config, numReplicas: count } });
    this.current = scaled(this.current);
    if (this.previous !== undefined) this.previous = scaled(this.previous);
    if (this.configFrom !== undefined) this.configFrom = scaled(this.configFrom);
    return () => Object.assign(this, before);
  }

  /**
   * A target of another version, rolled out replica by replica; the last good version stays the one to roll back to.
   * Returns what undoes it (when saving it failed).
   */
  rollOut(target: BackendTarget): () => void {
    const before = { current: this.current, held: this.held, rollout: this.rollout, previous: this.previous, configFrom: this.configFrom };
    const lastGood = this.previous ?? this.current;
    this.rollout = { state: 'rolling', fromVersion: this.current.version, targetVersion: target.version, reason: null };
    this.previous = lastGood.version === target.version ? undefined : lastGood;
    this.consecutiveFailures = 0;
    this.retryAt = 0;
    this.replacements = [];
    this.announce = true;
    this.retarget(target);
    return () => Object.assign(this, before, { announce: false });
  }

  saved(): SavedBackend {
    const rollout: SavedRollout | undefined =
      this.rollout === undefined
        ? undefined
        : { ...this.rollout, ...(this.previous === undefined ? {} : { previous: savedTarget(this.previous) }) };
    return {
      ...savedTarget(this.target),
      replicaConfigs: { ...this.replicaConfigs },
      ...(rollout === undefined ? {} : { rollout }),
    };
  }

  converged(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ goal: 'converged', resolve, reject });
    });
  }

  configured(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ goal: 'configured', resolve, reject });
    });
  }

  isConverged(): boolean {
    if (this.deleteAs !== undefined) return this.replicas.length === 0;
    const want = this.target.config.numReplicas;
    const { version, liveHash } = this.target;
    return this.replicas.length === want && this.count({ states: ['ready'], version, liveHash }) === want;
  }

  /** Whether every serving replica of the target's version holds the target's live config. */
  isConfigured(): boolean {
    const { version, liveHash } = this.target;
    return this.count({ states: SERVING, version }) === this.count({ states: ['ready'], version, liveHash });
  }

  update(ctx: BackendStepContext): void {
    const step: StepContext = {
      ...ctx,
      target: this.target,
      onFailed: (replica) => this.failed(ctx, replica),
      onPushed: (replica) => {
        this.replicaConfigs[replica.id] = replica.liveHash;
        ctx.onConfigsChanged(this);
      },
      onRefused: (replica, error) => this.refused(ctx, replica, error),
    };
    const before = replicaMoments(this.replicas);
    if (this.deleteAs !== undefined) this.replicas.forEach((r) => r.retire(this.deleteAs!.drain));
    for (const replica of this.replicas) replica.update(this.stepFor(replica, step));
    const leaving = this.set.removeStopped();
    if (leaving.length > 0) {
      if (leaving.some((r) => r.id in this.replicaConfigs)) {
        leaving.forEach((r) => delete this.replicaConfigs[r.id]);
        ctx.onConfigsChanged(this);
      }
    }
    if (this.announce && this.rollout !== undefined) {
      this.announce = false;
      const { fromVersion, targetVersion } = this.rollout;
      ctx.events?.record(
        'rollout.started',
        { backend: this.name },
        `rolling out version ${targetVersion} of ${this.name} (from ${fromVersion})`,
      );
    }
    if (this.deleteAs === undefined) this.converge(ctx, { ...step, target: this.target });
    if (ctx.events !== undefined) recordReplicaChanges(ctx.events, this.name, before, this.replicas);
    if (this.deleteAs === undefined && this.isConfigured()) {
      this.configFrom = undefined;
      this.settle(undefined, false, 'configured');
    }
    if (this.isConverged()) {
      if (this.rollout !== undefined && ROLLING.has(this.rollout.state)) this.finishRollout(ctx);
      this.settle();
    }
  }

  /** While a rollout is paused, replicas of the last good version are started and stepped with that version's target. */
  private stepFor(replica: Replica, step: StepContext): StepContext {
    const lastGood = this.rollout?.state === 'paused' ? this.previous : undefined;
    return lastGood !== undefined && replica.version === lastGood.version ? { ...step, target: lastGood } : step;
  }

  private converge(ctx: BackendStepContext, step: StepContext): void {
    const want = this.target.config.numReplicas;
    const version = this.target.version;
    const retire = (replica: Replica): void => {
      replica.retire(true);
      replica.update(this.stepFor(replica, step));
    };
    const fresh = this.set.filter({ states: ACTIVE, version });
    let old = this.set.filter({ states: ACTIVE, version: { not: version } });
    const active = fresh.length + old.length;
    if (fresh.length > want) {
      const order = [...fresh.filter((r) => r.state === 'starting'), ...fresh.filter((r) => r.isServing()).reverse()];
      order.slice(0, fresh.length - want).forEach(retire);
    }
    // Each new replica that is ready takes an old one's place.
    const freshReady = Math.min(want, this.count({ states: SERVING, version }));
    const oldOrder = [...old.filter((r) => r.state === 'starting'), ...old.filter((r) => r.isServing())];
    const surplus = Math.max(0, old.length + freshReady - want);
    oldOrder.slice(0, surplus).forEach(retire);
    old = oldOrder.slice(surplus);
    if (fresh.length >= want) {
      if (old.length === 0) this.replacements = [];
      return;
    }
    if (this.rollout?.state === 'paused') return this.keepLastGood(ctx, step, want - active);
    // A new live config is taken by the replicas there are before any other starts (and rolled back if refused).
    if (this.held || this.configFrom !== undefined || ctx.now < this.retryAt) return;
    const room = old.length === 0 ? want - fresh.length : want + ctx.rollout.maxSurge - old.length - fresh.length;
    let roomless = room <= 0;
    for (let i = 0; i < Math.min(room, want - fresh.length); i++) {
      const id = shortId();
      let placement: Placement;
      try {
        placement = ctx.scheduler.reserve(id, this.target.resources, this.replacements[0]?.node);
      } catch (error) {
        // Old replicas can make room, and leaving ones give theirs back: wait rather than fail.
        const leaving = this.count({ states: LEAVING }) > 0;
        if ((old.length > 0 || leaving) && isFlotillaError(error, 'INSUFFICIENT_RESOURCES')) {
          roomless = true;
          break;
        }
        return this.cannotStart(ctx, error);
      }
      const { restarts, lastError } = this.replacements.shift() ?? { restarts: 0, lastError: null };
      const history = { restarts, lastError };
      const replica = new Replica(id, placement, history, version, this.target.liveHash, ctx.now, this.target.userConfigHash);
      this.set.add(replica);
      replica.update(step);
    }
    const busy = this.count({ states: LEAVING }) > 0 || this.count({ states: ['starting'], version }) > 0;
    if (roomless && old.length > 0 && !busy) {
      if (this.rollout?.state === 'rolling') {
        this.rollout = { ...this.rollout, state: 'in-place' };
        ctx.log.warn('no room to start a replica beside the old ones; replacing them in place, one at a time', { backend: this.name });
        ctx.onConfigsChanged(this);
      }
      retire(old[old.length - 1]!);
    }
  }

  /** A paused rollout starts no new version, but replaces replicas that failed with ones of the last good version. */
  private keepLastGood(ctx: BackendStepContext, step: StepContext, missing: number): void {
    const lastGood = this.previous;
    if (lastGood === undefined || ctx.now < this.retryAt) return;
    for (let i = 0; i < missing; i++) {
      const id = shortId();
      let placement: Placement;
      try {
        placement = ctx.scheduler.reserve(id, lastGood.resources);
      } catch (error) {
        return this.cannotStart(ctx, error);
      }
      const history = this.replacements.shift() ?? { restarts: 0, lastError: null };
      const replica = new Replica(id, placement, history, lastGood.version, lastGood.liveHash, ctx.now, lastGood.userConfigHash);
      this.set.add(replica);
      replica.update({ ...step, target: lastGood });
    }
  }

  private cannotStart(ctx: BackendStepContext, error: unknown): void {
    const history = this.replacements.shift() ?? { restarts: 0, lastError: null };
    this.replacements.unshift({ ...history, restarts: history.restarts + 1, lastError: errorMessage(error) });
    this.backOff(ctx.now);
    const failure = isFlotillaError(error)
      ? new FlotillaError(error.code, `backend '${this.name}' cannot start a replica: ${error.message}`, error.details)
      : error;
    ctx.log.error('cannot start a replica', { backend: this.name, error: errorMessage(error) });
    this.settle(failure);
  }

  private failed(ctx: BackendStepContext, replica: Replica): void {
    if (this.deleteAs !== undefined) return;
    const reason = replica.failure?.lastError ?? 'failed';
    if (replica.version !== this.target.version && this.rollout?.state === 'paused') {
      ctx.log.warn('replica of the last good version failed while the rollout is paused; one of that version takes its place', {
        backend: this.name,
        replica: replica.id,
        reason,
      });
      this.backOff(ctx.now);
      this.replacements.push({ restarts: replica.history.restarts + 1, lastError: reason });
      return;
    }
    if (replica.version !== this.target.version) {
      ctx.log.warn('replica of an older version failed; a replica of the new version takes its place', {
        backend: this.name,
        replica: replica.id,
        reason,
      });
      return;
    }
    if (this.rollout !== undefined && ROLLING.has(this.rollout.state) && this.previous !== undefined) {
      return this.stopRollout(ctx, `replica ${replica.id} of version ${replica.version} failed: ${reason}`);
    }
    ctx.log.warn('replica failed; replacing it', { backend: this.name, replica: replica.id, reason });
    const uptime = ctx.now - (replica.container?.startedAt ?? ctx.now);
    if (uptime > TIMING.stableUptimeMs) this.consecutiveFailures = 0;
    this.backOff(ctx.now);
    const node = replica.placement.node;
    this.replacements.push({ restarts: replica.history.restarts + 1, lastError: reason, ...(node === undefined ? {} : { node }) });
    this.settle(replica.failure?.error);
  }

  /** A replica refused the live config being pushed: the previous config is the target again, and is pushed back. */
  private refused(ctx: BackendStepContext, replica: Replica, reason: unknown): boolean {
    const from = this.configFrom;
    if (from === undefined || this.deleteAs !== undefined || replica.version !== this.target.version) return false;
    this.current = from;
    this.configFrom = undefined;
    const message = `reconfiguring backend '${this.name}' failed on replica ${replica.id}: ${errorMessage(reason)}; the previous config stays in force`;
    const error = new FlotillaError(isFlotillaError(reason) ? reason.code : 'RECONFIGURE_FAILED', message, undefined, { cause: reason });
    ctx.log.error('a replica refused the new live config; rolling back to the previous one', { backend: this.name, replica: replica.id });
    ctx.onConfigsChanged(this);
    this.settle(error, false, 'configured');
    this.settle(error, false);
    return true;
  }

  /** A replica of the new version failed: roll back to the last good version, or pause. */
  private stopRollout(ctx: BackendStepContext, reason: string): void {
    const version = this.target.version;
    if (ctx.rollout.onFailure === 'pause') {
      this.rollout = { state: 'paused', fromVersion: this.rollout!.fromVersion, targetVersion: version, reason };
      ctx.log.error('rollout paused: a replica of the new version failed', { backend: this.name, version, reason });
      ctx.events?.record('rollout.failed', { backend: this.name }, `rollout of ${this.name} to ${version} paused: ${reason}`);
    } else {
      const previous = this.previous!;
      this.rollout = { state: 'rolling-back', fromVersion: version, targetVersion: previous.version, reason };
      this.previous = undefined;
      this.current = previous;
      this.configFrom = undefined;
      this.consecutiveFailures = 0;
      this.retryAt = 0;
      this.replacements = [];
      ctx.log.error('rolling back: a replica of the new version failed', { backend: this.name, version, to: previous.version, reason });
      ctx.events?.record(
        'rollout.failed',
        { backend: this.name },
        `rollout of ${this.name} to ${version} failed, rolling back to ${previous.version}: ${reason}`,
      );
    }
    ctx.onConfigsChanged(this);
    this.settle(new FlotillaError('ROLLOUT_FAILED', `rolling out version ${version} of backend '${this.name}' stopped: ${reason}`), false);
  }

  private finishRollout(ctx: BackendStepContext): void {
    const rolledBack = this.rollout!.state === 'rolling-back';
    this.rollout = { ...this.rollout!, state: rolledBack ? 'rolled-back' : 'completed' };
    this.previous = undefined;
    const version = this.rollout.targetVersion;
    ctx.log.info(rolledBack ? 'rolled back' : 'rollout completed', { backend: this.name, version });
    ctx.events?.record(
      rolledBack ? 'rollout.rolled-back' : 'rollout.completed',
      { backend: this.name },
      `${this.name} ${rolledBack ? 'rolled back to' : 'rolled out'} version ${version}`,
    );
    ctx.onConfigsChanged(this);
  }

  private backOff(now: number): void {
    this.consecutiveFailures += 1;
    this.retryAt = now + backoffMs(this.consecutiveFailures);
  }

  /** Rejects everyone waiting for convergence, e.g. when the controller stops. */
  abandon(error: FlotillaError): void {
    this.settle(error);
    this.settle(error, false, 'configured');
  }

  /**
   * Resolves the waiters for `goal`, or rejects them with `error` (and holds the backend, so that the failed call can
   * undo itself). Only a refused live config fails those waiting for it to be configured.
   */
  private settle(error?: unknown, hold = true, goal: Waiter['goal'] = 'converged'): void {
    const waiters = this.waiters.filter((waiter) => waiter.goal === goal);
    if (error !== undefined && hold && waiters.length > 0) this.held = true;
    this.waiters = this.waiters.filter((waiter) => waiter.goal !== goal);
    for (const waiter of waiters) {
      if (error === undefined) waiter.resolve();
      else waiter.reject(error);
    }
  }

  /** The rollout under way or stopped, without building the whole BackendInfo. */
  get rolloutStatus(): Readonly<RolloutStatus> | undefined {
    return this.rollout;
  }

  info(): BackendInfo {
    return infoOfTarget(this.target, this.rollout);
  }

  replicaInfo(): ReplicaInfo[] {
    return this.set.filter({ states: [...ACTIVE, ...LEAVING] }).map(infoOf);
  }

  /** The ready replicas the proxy may route to. */
  routable(): Array<{ id: string; target: NonNullable<Replica['container']>['target'] }> {
    return this.set
      .filter({ states: SERVING })
      .flatMap((r) => (r.container === undefined ? [] : [{ id: r.id, target: r.container.target }]));
  }

  /** How long a request may wait for a first ready replica: an autoscaled backend's cold start (`coldStartMs`), or TIMING.noReplicaWaitMs while replicas are wanted. */
  noReplicaWaitMs(coldStartMs: number): number {
    if (this.deleteAs !== undefined) return 0;
    if (this.target.config.autoscaling !== null) return coldStartMs;
    return this.target.config.numReplicas > 0 ? TIMING.noReplicaWaitMs : 0;
  }
}
