import type { Clock } from '../common/clock.js';
import { errorMessage } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { Scheduler } from '../resources/scheduler.js';
import type { ContainerRuntime, ReplicaStatus } from '../runtime/container-runtime.js';
import type { AutoscaleLoop } from './autoscaler.js';
import type { BackendState } from './backend-state.js';
import type { EventRecorder } from './event-log.js';
import { TIMING } from './constants.js';
import type { ReplicaDriver } from './replica.js';

export interface ReconcilerDeps {
  backends: Map<string, BackendState>;
  runtime: ContainerRuntime;
  driver: ReplicaDriver;
  scheduler: Scheduler;
  clock: Clock;
  logger: Logger;
  labels: Record<string, string>;
  settings: { readyTimeoutS: number; healthCheckPeriodS: number; rolloutMaxSurge: number; rolloutOnFailure: 'rollback' | 'pause' };
  /** Its decisions are taken at the start of every step, which then converges on them. */
  autoscaling?: Pick<AutoscaleLoop, 'scale' | 'countColdStarts'>;
  /** Called after a step that may have changed what is routable. */
  onStep(): void;
  onConfigsChanged(backend: BackendState): void;
  events?: EventRecorder;
}

/**
 * The reconcile loop. `observe()` asks the engine which containers run (every
 * healthCheckPeriodS, or sooner when the proxy saw a replica fail) and
 * removes containers no backend knows; `step()` moves every backend's
 * replicas toward its target without waiting for anything, and is run
 * every few milliseconds and whenever an operation finishes. An engine that
 * does not answer fails that observation (the operations that needed it fail
 * on their own, with ENGINE_UNAVAILABLE); the loop carries on.
 */
export class Reconciler {
  private observed: { at: number; replicas: Map<string, ReplicaStatus> } | undefined;
  private observing: Promise<void> | undefined;
  private stepTimer: NodeJS.Timeout | undefined;
  private observeTimer: NodeJS.Timeout | undefined;
  private kicked = false;
  private readonly log: Logger;

  constructor(private readonly deps: ReconcilerDeps) {
    this.log = deps.logger.child({ component: 'reconciler' });
  }

  start(): void {
    this.stepTimer = setInterval(() => this.step(), TIMING.stepMs);
    this.observeTimer = setInterval(() => void this.observe(), this.deps.settings.healthCheckPeriodS * 1000);
    this.stepTimer.unref();
    this.observeTimer.unref();
  }

  stop(): void {
    clearInterval(this.stepTimer);
    clearInterval(this.observeTimer);
    this.stepTimer = undefined;
    this.observeTimer = undefined;
  }

  /** Runs a step soon; many kicks in a row make one step. */
  kick(): void {
    if (this.kicked) return;
    this.kicked = true;
    setImmediate(() => {
      this.kicked = false;
      this.step();
    });
  }

  /** Lists this instance's containers, then steps; one listing at a time. */
  observe(): Promise<void> {
    this.observing ??= this.list().finally(() => (this.observing = undefined));
    return this.observing;
  }

  step(): void {
    const { backends, driver, scheduler, clock, logger, settings } = this.deps;
    const now = clock.now();
    try {
      this.deps.autoscaling?.scale(now);
    } catch (error) {
      this.log.error('autoscaling step failed', { error: errorMessage(error) });
    }
    for (const backend of [...backends.values()]) {
      try {
        backend.update({
          now,
          observed: this.observed,
          driver,
          scheduler,
          log: logger.child({ component: 'backend-state' }),
          readyTimeoutMs: settings.readyTimeoutS * 1000,
          healthCheckPeriodMs: settings.healthCheckPeriodS * 1000,
          rollout: { maxSurge: settings.rolloutMaxSurge, onFailure: settings.rolloutOnFailure },
          kick: () => this.kick(),
          onConfigsChanged: (changed) => this.deps.onConfigsChanged(changed),
          ...(this.deps.events === undefined ? {} : { events: this.deps.events }),
        });
      } catch (error) {
        this.log.error('reconcile step failed', { backend: backend.name, error: errorMessage(error) });
      }
      if (backend.deleting !== undefined && backend.replicas.length === 0) backends.delete(backend.name);
    }
    this.deps.onStep();
    this.deps.autoscaling?.countColdStarts(now);
  }

  /** Ids of every replica in memory; one that stopped while a listing ran is no stray. */
  private knownIds(): Set<string> {
    return new Set([...this.deps.backends.values()].flatMap((b) => b.replicas.map((r) => r.id)));
  }

  private async list(): Promise<void> {
    const at = this.deps.clock.now();
    const knownBefore = this.knownIds();
    let statuses: ReplicaStatus[];
    try {
      statuses = await this.deps.runtime.listReplicas(this.deps.labels);
    } catch (error) {
      this.log.error('listing containers failed; trying again next period', { error: errorMessage(error) });
      return;
    }
    const replicas = new Map<string, ReplicaStatus>();
    const strays: ReplicaStatus[] = [];
    const known = this.knownIds();
    for (const status of statuses) {
      const id = status.labels[LABELS.replica] ?? '';
      if (known.has(id)) replicas.set(id, status);
      else if (!knownBefore.has(id)) strays.push(status);
    }
    this.observed = { at, replicas };
    await Promise.all(
      strays.map(async (status) => {
        this.log.warn('removing a container that is not in the desired state', {
          container: status.containerId.slice(0, 12),
          name: status.name,
        });
        await this.deps.runtime.stopReplica(status.containerId, 0).catch((error: unknown) => {
          this.log.error('removing a stray container failed', { container: status.containerId.slice(0, 12), error: errorMessage(error) });
        });
      }),
    );
    this.step();
  }
}
