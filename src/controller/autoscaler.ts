import type { AutoscalingConfig, AutoscalingDecision, AutoscalingStatus } from '../api.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Scheduler } from '../resources/scheduler.js';
import { decide, IDLE, type PolicyState } from './autoscaling-policy.js';
import type { BackendState } from './backend-state.js';
import type { EventRecorder } from './event-log.js';
import { ACTIVE } from './replica-set.js';

/** The data plane's one reading the autoscaler takes: a backend's ongoing requests (queued and in flight), front door and handles alike. */
export interface LoadSignal {
  ongoingRequests(backend: string): number;
}

/** Where autoscaling metrics go (src/admin/metrics.ts). */
export interface AutoscalingMetrics {
  decision(backend: string, direction: 'up' | 'down'): void;
  coldStart(backend: string, seconds: number): void;
}

export interface ScaleChange {
  to: number;
  decision: AutoscalingDecision;
}

interface Tracked {
  backend: BackendState;
  config: string;
  samples: Array<{ at: number; value: number }>;
  state: PolicyState;
  status: AutoscalingStatus;
  /** When a scale-up from zero running replicas was decided; cleared when the first replica is ready. */
  coldSince: number | undefined;
}

/**
 * The autoscaler's memory of each autoscaled backend: the ongoing-request
 * samples of the look-back window (one every metricsIntervalS), the delay the
 * policy is waiting out, and what it decided last. `step()` samples and asks
 * the policy (autoscaling-policy.ts); it changes nothing itself: the
 * controller saves and applies the change it returns. A backend that is
 * recreated or whose autoscaling config changes starts over.
 */
export class Autoscaler {
  private readonly tracked = new Map<string, Tracked>();
  /** Backends a request arrived for while they had no replica, since their last step (even one refused with QUEUE_FULL). */
  private readonly demanded = new Set<string>();

  constructor(
    private readonly signal: LoadSignal,
    private readonly scheduler: Scheduler,
  ) {}

  /** The change the policy decides for the backend now, if any. */
  step(backend: BackendState, config: AutoscalingConfig, now: number): ScaleChange | undefined {
    const tracked = this.track(backend, config);
    const current = this.signal.ongoingRequests(backend.name);
    const demanded = this.demanded.delete(backend.name);
    const waiting = current > 0 || demanded;
    const last = tracked.samples[tracked.samples.length - 1];
    if (last === undefined || now - last.at >= config.metricsIntervalS * 1000) tracked.samples.push({ at: now, value: current });
    const horizon = now - config.lookBackPeriodS * 1000;
    while (tracked.samples.length > 1 && tracked.samples[0]!.at <= horizon) tracked.samples.shift();
    const ongoing = tracked.samples.reduce((sum, sample) => sum + sample.value, 0) / tracked.samples.length;
    const target = backend.target.config.numReplicas;
    const running = backend.routable().length;
    const decision = decide(
      { now, config, target, running, ongoing, waiting, capacity: this.capacity(backend, config.maxReplicas) },
      tracked.state,
    );
    tracked.state = decision.state;
    tracked.status = {
      ...tracked.status,
      wantedReplicas: decision.wanted,
      targetReplicas: decision.target,
      runningReplicas: running,
      ongoingRequests: Math.round(ongoing * 100) / 100,
      heldBack: decision.heldBack,
    };
    if (decision.target === target) return undefined;
    const direction = decision.target > target ? 'up' : 'down';
    if (direction === 'up' && running === 0 && waiting) tracked.coldSince ??= now;
    const record = { time: new Date(now).toISOString(), from: target, to: decision.target, direction, reason: decision.reason } as const;
    tracked.status.lastDecision = record;
    return { to: decision.target, decision: record };
  }

  /** A request arrived for the backend while it had no replica. */
  demand(backend: string): void {
    this.demanded.add(backend);
  }

  /** Seconds since the cold start of each backend whose first replica is now ready. */
  coldStartsEnded(now: number): Array<{ backend: string; seconds: number }> {
    const ended: Array<{ backend: string; seconds: number }> = [];
    for (const [name, tracked] of this.tracked) {
      if (tracked.coldSince === undefined || tracked.backend.routable().length === 0) continue;
      ended.push({ backend: name, seconds: (now - tracked.coldSince) / 1000 });
      tracked.coldSince = undefined;
    }
    return ended;
  }

  status(backend: BackendState): AutoscalingStatus | null {
    const tracked = this.tracked.get(backend.name);
    return tracked?.backend === backend && backend.target.config.autoscaling !== null ? structuredClone(tracked.status) : null;
  }

  /** Forgets the backends not in `names` (deleted, or no longer autoscaled). */
  keepOnly(names: ReadonlySet<string>): void {
    for (const name of this.tracked.keys()) if (!names.has(name)) this.tracked.delete(name);
    for (const name of this.demanded) if (!names.has(name)) this.demanded.delete(name);
  }

  private track(backend: BackendState, config: AutoscalingConfig): Tracked {
    const key = JSON.stringify(config);
    const known = this.tracked.get(backend.name);
    if (known !== undefined && known.backend === backend && known.config === key) return known;
    const target = backend.target.config.numReplicas;
    const status: AutoscalingStatus = {
      wantedReplicas: target,
      targetReplicas: target,
      runningReplicas: 0,
      ongoingRequests: 0,
      heldBack: null,
      lastDecision: known?.backend === backend ? known.status.lastDecision : null,
    };
    const tracked: Tracked = { backend, config: key, samples: [], state: IDLE, status, coldSince: undefined };
    this.tracked.set(backend.name, tracked);
    return tracked;
  }

  /** Replicas the backend holds (starting or ready) plus how many more fit now. */
  private capacity(backend: BackendState, maxReplicas: number): { reachable: number; shortOf: string } {
    const held = backend.count({ states: ACTIVE });
    const { fits, refusal } = this.scheduler.room(backend.target.resources, Math.max(0, maxReplicas - held));
    return { reachable: held + fits, shortOf: refusal?.message ?? '' };
  }
}

export interface AutoscaleLoopDeps {
  autoscaler: Autoscaler;
  /** The backends that are not being deleted; none once the controller stopped. */
  backends(): BackendState[];
  /** Saves the desired state as memory holds it; throws when it cannot. */
  save(): void;
  logger: Logger;
  events?: EventRecorder;
  metrics?: AutoscalingMetrics;
}

/**
 * The reconcile step's autoscaling: before the step, each autoscaled backend's
 * decision is saved and then set as its target (scaleTo), which the same step
 * converges on; after it, cold starts that ended are counted.
 */
export class AutoscaleLoop {
  /** Per backend, the capacity cap last logged, so that it is logged once per change. */
  private readonly capsLogged = new Map<string, string>();
  private readonly log: Logger;

  constructor(private readonly deps: AutoscaleLoopDeps) {
    this.log = deps.logger.child({ component: 'autoscaler' });
  }

  scale(now: number): void {
    const { autoscaler } = this.deps;
    const live = this.deps.backends();
    const autoscaled = new Set(live.filter((b) => b.target.config.autoscaling !== null).map((b) => b.name));
    autoscaler.keepOnly(autoscaled);
    for (const name of this.capsLogged.keys()) if (!autoscaled.has(name)) this.capsLogged.delete(name);
    for (const state of live) {
      const config = state.target.config.autoscaling;
      if (config === null || state.rolloutStatus?.state === 'paused') continue;
      const change = autoscaler.step(state, config, now);
      this.logCap(state.name, autoscaler.status(state));
      if (change === undefined) continue;
      const undo = state.scaleTo(change.to);
      try {
        this.deps.save();
      } catch (error) {
        undo();
        this.log.error('could not save an autoscaling decision; trying again next step', {
          backend: state.name,
          error: errorMessage(error),
        });
        continue;
      }
      const { from, to, direction, reason } = change.decision;
      this.log.info(`autoscaling ${state.name} ${direction} from ${from} to ${to} replica(s)`, { backend: state.name, from, to, reason });
      this.deps.events?.record(
        'autoscaling.decided',
        { backend: state.name },
        `autoscaling ${state.name} from ${from} to ${to} replica(s): ${reason}`,
      );
      this.deps.metrics?.decision(state.name, direction);
    }
  }

  countColdStarts(now: number): void {
    for (const { backend, seconds } of this.deps.autoscaler.coldStartsEnded(now)) {
      this.log.info('cold start: the first replica is ready', { backend, seconds });
      this.deps.metrics?.coldStart(backend, seconds);
    }
  }

  /** Logs (and records as an event) a capacity cap when it starts or changes, not on every step. */
  private logCap(name: string, status: AutoscalingStatus | null): void {
    const cap = status?.heldBack?.by === 'capacity' ? status.heldBack.message : '';
    if (cap === (this.capsLogged.get(name) ?? '')) return;
    if (cap === '') {
      this.capsLogged.delete(name);
      this.log.info('autoscaling no longer capped by capacity', { backend: name });
      return;
    }
    this.capsLogged.set(name, cap);
    this.log.warn(`autoscaling ${name} is capped by capacity: ${cap}`, { backend: name, running: status?.runningReplicas });
    this.deps.events?.record('autoscaling.capped', { backend: name }, `autoscaling ${name} is capped by capacity: ${cap}`);
  }
}
