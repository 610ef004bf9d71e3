/** How long a replica that failed a connection stays out of rotation, unless a routing update comes first. */
export const QUARANTINE_MS = 5_000;

/**
 * Replicas out of rotation after a failed connection (passive ejection), each until QUARANTINE_MS after its failure or
 * the next routing update (clear()): the control plane's ReplicaRouter and a front-door worker's LeasedRouter alike.
 */
export class Quarantine {
  private readonly until = new Map<string, number>();

  get size(): number {
    return this.until.size;
  }

  eject(replicaId: string): void {
    this.until.set(replicaId, performance.now() + QUARANTINE_MS);
  }

  /** Whether the replica is out of rotation at `now` (performance.now()); one whose time is up is forgotten. */
  holds(replicaId: string, now: number): boolean {
    const until = this.until.get(replicaId);
    if (until === undefined) return false;
    if (until > now) return true;
    this.until.delete(replicaId);
    return false;
  }

  clear(): void {
    this.until.clear();
  }
}

/**
 * The pick both routers make among `count` candidates: the best rank any candidate has (lowest; -1: never this one),
 * and in it the candidate with room and the fewest in flight, the first on ties. -1 when that rank has none with room.
 */
export function leastBusy(count: number, rank: (i: number) => number, busy: (i: number) => number, room: (i: number) => boolean): number {
  let bestRank = Infinity;
  let best = -1;
  let bestBusy = Infinity;
  for (let i = 0; i < count; i++) {
    const r = rank(i);
    if (r < 0 || r > bestRank) continue;
    if (r < bestRank) [bestRank, best, bestBusy] = [r, -1, Infinity];
    if (!room(i)) continue;
    const load = busy(i);
    if (load < bestBusy) [best, bestBusy] = [i, load];
  }
  return best;
}
