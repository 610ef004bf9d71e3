import { describe, expect, it } from 'vitest';
import { ServingSeries } from '../../src/admin/serving-series.js';

function manualClock(start: number) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('ServingSeries', () => {
  it('counts requests and errors per endpoint and backend in 5 s steps', () => {
    const clock = manualClock(Date.parse('2026-12-01T10:00:00Z'));
    const series = new ServingSeries(clock);
    series.request('e', 'a', 200, 0.01);
    series.request('e', 'b', 503, 0.01);
    clock.advance(5000);
    series.request('e', 'a', 200, 0.01);
    const { stepSeconds, endpoints, backends } = series.snapshot(1);
    expect(stepSeconds).toBe(5);
    expect(endpoints.e).toHaveLength(12);
    expect(endpoints.e?.slice(-2).map((p) => [p.requests, p.errors])).toEqual([
      [2, 1],
      [1, 0],
    ]);
    expect(endpoints.e?.at(-1)?.time).toBe(Date.parse('2026-12-01T10:00:05Z'));
    expect(backends.a?.slice(-2).map((p) => p.requests)).toEqual([1, 1]);
    expect(backends.b?.slice(-2).map((p) => p.errors)).toEqual([1, 0]);
    expect(endpoints.e?.[0]).toMatchObject({ requests: 0, p50: null });
  });

  it('estimates latency percentiles within a bucket (25 %)', () => {
    const clock = manualClock(0);
    const series = new ServingSeries(clock);
    for (let i = 0; i < 98; i++) series.request('e', 'a', 200, 0.01);
    series.request('e', 'a', 200, 1);
    series.request('e', 'a', 200, 1);
    const last = series.snapshot(1).endpoints.e?.at(-1);
    expect(last?.p50).toBeGreaterThan(10 / 1.25);
    expect(last?.p50).toBeLessThanOrEqual(10 * 1.25);
    expect(last?.p99).toBeGreaterThan(1000 / 1.25);
    expect(last?.p99).toBeLessThanOrEqual(1000 * 1.25);
  });

  it('forgets names without requests in the window', () => {
    const clock = manualClock(0);
    const series = new ServingSeries(clock);
    series.request('old', 'gone', 200, 0.01);
    clock.advance(16 * 60_000);
    series.request('new', 'a', 200, 0.01);
    expect(Object.keys(series.snapshot().endpoints)).toEqual(['new']);
    expect(Object.keys(series.snapshot().backends)).toEqual(['a']);
  });

  it('refuses a window it does not keep', () => {
    const series = new ServingSeries(manualClock(0));
    expect(() => series.snapshot(16)).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('minutes') }),
    );
    expect(() => series.snapshot(0)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
