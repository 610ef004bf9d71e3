import { describe, expect, it } from 'vitest';
import { summarizeShadows, type ShadowCounts } from '../../src/dataplane/shadow.js';

const counts = (sent: number, latencies: number[]): ShadowCounts => ({
  sent,
  dropped: 1,
  failed: 0,
  compared: sent,
  matches: sent - 1,
  statusMismatches: 1,
  bodyMismatches: 0,
  primaryLatencyMs: latencies,
  shadowLatencyMs: latencies.map((ms) => ms * 2),
});

describe('summarizeShadows', () => {
  it('adds up the counts of every process and takes percentiles over all their samples', () => {
    const stats = summarizeShadows([{ b: counts(2, [1, 2]) }, { b: counts(3, [3, 4, 100]), c: counts(1, [5]) }, {}]);
    expect(stats.b).toEqual({
      sent: 5,
      dropped: 2,
      failed: 0,
      compared: 5,
      matches: 3,
      statusMismatches: 2,
      bodyMismatches: 0,
      primaryLatencyMs: { p50: 3, p99: 100 },
      shadowLatencyMs: { p50: 6, p99: 200 },
    });
    expect(stats.c).toMatchObject({ sent: 1, primaryLatencyMs: { p50: 5, p99: 5 } });
    expect(summarizeShadows([{}])).toEqual({});
  });
});
