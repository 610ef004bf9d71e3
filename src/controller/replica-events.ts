import type { EventRecorder } from './event-log.js';
import type { Replica, ReplicaState } from './replica.js';

export type ReplicaMoments = Map<Replica, { state: ReplicaState; started: boolean }>;

/** Where each replica is before a step, to tell what the step changed. */
export function replicaMoments(replicas: readonly Replica[]): ReplicaMoments {
  return new Map(replicas.map((r) => [r, { state: r.state, started: r.container !== undefined }]));
}

/** The events of what a step changed in each replica it began with, then of the replacements it started. */
export function recordReplicaChanges(events: EventRecorder, backend: string, before: ReplicaMoments, replicas: readonly Replica[]): void {
  for (const [replica, was] of before) {
    const subject = { backend, replica: replica.id };
    const what = `replica ${replica.id} of ${backend}`;
    if (!was.started && replica.container !== undefined)
      events.record('replica.started', subject, `${what} started in container ${replica.container.containerId.slice(0, 12)}`);
    if (was.state === replica.state) continue;
    if (replica.state === 'ready' && was.state === 'starting') events.record('replica.ready', subject, `${what} is ready`);
    if (replica.state === 'failed') events.record('replica.failed', subject, `${what} failed: ${replica.failure?.lastError ?? 'unknown'}`);
    if (replica.state === 'stopped' && was.state === 'draining') events.record('replica.stopped', subject, `${what} stopped`);
  }
  for (const replica of replicas) {
    const { restarts, lastError } = replica.history;
    if (before.has(replica) || restarts === 0) continue;
    const message = `replica ${replica.id} of ${backend} replaces a failed one (restart ${restarts}): ${lastError}`;
    events.record('replica.replaced', { backend, replica: replica.id }, message);
  }
}
