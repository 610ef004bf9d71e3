import type { Replica, ReplicaState } from './replica.js';

/** Starting or serving: the replicas a backend holds toward its count. */
export const ACTIVE: readonly ReplicaState[] = ['starting', 'ready', 'updating'];
/** Routed to: ready, or ready and taking a new live config. */
export const SERVING: readonly ReplicaState[] = ['ready', 'updating'];
/** On their way out: their resources come back once they stop. */
export const LEAVING: readonly ReplicaState[] = ['draining', 'failed'];

export interface ReplicaQuery {
  states?: readonly ReplicaState[];
  /** Only replicas of this version, or (`{ not }`) of any other. */
  version?: string | { not: string };
  /** Only replicas holding this live config. */
  liveHash?: string;
}

function matches(replica: Replica, { states, version, liveHash }: ReplicaQuery): boolean {
  if (states !== undefined && !states.includes(replica.state)) return false;
  if (typeof version === 'string' && replica.version !== version) return false;
  if (typeof version === 'object' && replica.version === version.not) return false;
  return liveHash === undefined || replica.liveHash === liveHash;
}

/** A backend's replicas, picked and counted by state, version and live config (as Ray's ReplicaStateContainer). */
export class ReplicaSet {
  private items: Replica[] = [];

  get all(): readonly Replica[] {
    return this.items;
  }

  add(replica: Replica): void {
    this.items.push(replica);
  }

  filter(query: ReplicaQuery = {}): Replica[] {
    return this.items.filter((replica) => matches(replica, query));
  }

  count(query: ReplicaQuery = {}): number {
    let count = 0;
    for (const replica of this.items) if (matches(replica, query)) count += 1;
    return count;
  }

  /** Takes the stopped replicas out and returns them. */
  removeStopped(): Replica[] {
    const stopped = this.filter({ states: ['stopped'] });
    if (stopped.length > 0) this.items = this.items.filter((replica) => replica.state !== 'stopped');
    return stopped;
  }
}
