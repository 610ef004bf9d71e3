import { createHash } from 'node:crypto';

/**
 * Picks a backend for one request from an endpoint's weights. Without a shard
 * key the pick is random by weight; with one it is a stable hash, so the same
 * key reaches the same backend for as long as the weights stay the same.
 */
export class TrafficPolicy {
  private readonly cumulative: Array<{ backend: string; upTo: number }>;

  constructor(weights: Record<string, number>) {
    let total = 0;
    this.cumulative = Object.entries(weights)
      .filter(([, weight]) => weight > 0)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([backend, weight]) => ({ backend, upTo: (total += weight) }));
  }

  pick(shardKey?: string, random: () => number = Math.random): string | undefined {
    const last = this.cumulative[this.cumulative.length - 1];
    if (last === undefined) return undefined;
    const point = (shardKey === undefined ? random() : hashToUnit(shardKey)) * last.upTo;
    return (this.cumulative.find(({ upTo }) => point < upTo) ?? last).backend;
  }
}

export function hashToUnit(key: string): number {
  return createHash('sha256').update(key).digest().readUInt32BE(0) / 2 ** 32;
}
