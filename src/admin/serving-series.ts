import type { Clock } from '../common/clock.js';
import { invalid } from '../common/checks.js';
import type { ServingMetrics } from '../dataplane/serving-metrics.js';

export const STEP_SECONDS = 5;
export const WINDOW_MINUTES = 15;
const SLOTS = (WINDOW_MINUTES * 60) / STEP_SECONDS;
/** Latency bucket upper bounds in ms: 0.5 ms to about 2 min, each 25 % above the last. */
const BOUNDS = Array.from({ length: 56 }, (_, i) => 0.5 * 1.25 ** i);

interface Slot {
  start: number;
  requests: number;
  errors: number;
  latency: number[];
}

/** One step of a series: what was answered in the STEP_SECONDS from `time`. */
export interface SeriesPoint {
  /** Start of the step, ms since the epoch. */
  time: number;
  requests: number;
  /** Answers with a status of 400 or above. */
  errors: number;
  /** Latency percentiles in ms, estimated from buckets 25 % wide; null without requests. */
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface SeriesSnapshot {
  stepSeconds: number;
  endpoints: Record<string, SeriesPoint[]>;
  backends: Record<string, SeriesPoint[]>;
}

const GROWTH = Math.log(1.25);

/** The first bucket whose bound is at least `ms` (the last for anything above): from the logarithm, corrected for rounding. */
function bucketOf(ms: number): number {
  let bucket = ms <= BOUNDS[0]! ? 0 : Math.min(BOUNDS.length - 1, Math.ceil(Math.log(ms / BOUNDS[0]!) / GROWTH));
  while (bucket > 0 && ms <= BOUNDS[bucket - 1]!) bucket--;
  while (bucket < BOUNDS.length - 1 && ms > BOUNDS[bucket]!) bucket++;
  return bucket;
}

function percentile(latency: number[], total: number, q: number): number | null {
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < latency.length; i++) {
    const count = latency[i] ?? 0;
    if (seen + count >= rank && count > 0) {
      const low = i === 0 ? 0 : (BOUNDS[i - 1] ?? 0);
      const high = BOUNDS[i] ?? low;
      return low + ((high - low) * (rank - seen)) / count;
    }
    seen += count;
  }
  return BOUNDS.at(-1) ?? null;
}

/**
 * A small in-memory time series of what the front door answered, per endpoint and per backend:
 * requests, errors and latency percentiles in steps of STEP_SECONDS over the last WINDOW_MINUTES.
 * The dashboard charts it; memory is bounded by the number of names times the slots.
 */
export class ServingSeries implements ServingMetrics {
  private readonly endpoints = new Map<string, Slot[]>();
  private readonly backends = new Map<string, Slot[]>();

  constructor(private readonly clock: Clock) {}

  request(endpoint: string, backend: string, status: number, seconds: number): void {
    const start = this.stepStart(this.clock.now());
    const bucket = bucketOf(seconds * 1000);
    count(this.slot(this.endpoints, endpoint, start), status, bucket);
    count(this.slot(this.backends, backend, start), status, bucket);
  }

  /** Shadow comparisons are read from the shadow stats. */
  shadow(): void {}

  /** Replica failures show in the replicas' restarts and last errors. */
  replicaFailure(): void {}

  /** The last `minutes` as one point per step, the current step last; steps without requests count 0. */
  snapshot(minutes = WINDOW_MINUTES): SeriesSnapshot {
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > WINDOW_MINUTES)
      throw invalid(`minutes must be a whole number from 1 to ${WINDOW_MINUTES}, not ${minutes}`);
    const now = this.stepStart(this.clock.now());
    const first = now - (minutes * 60 - STEP_SECONDS) * 1000;
    const points = (slots: Slot[]): SeriesPoint[] => {
      const out: SeriesPoint[] = [];
      for (let time = first; time <= now; time += STEP_SECONDS * 1000) {
        const slot = slots.find((s) => s.start === time);
        const total = slot?.requests ?? 0;
        const latency = slot?.latency ?? [];
        out.push({
          time,
          requests: total,
          errors: slot?.errors ?? 0,
          p50: percentile(latency, total, 0.5),
          p95: percentile(latency, total, 0.95),
          p99: percentile(latency, total, 0.99),
        });
      }
      return out;
    };
    const of = (map: Map<string, Slot[]>) => {
      const result: Record<string, SeriesPoint[]> = {};
      for (const [name, slots] of map) {
        this.expire(map, name, slots, now);
        if (slots.some((s) => s.start >= first)) result[name] = points(slots);
      }
      return result;
    };
    return { stepSeconds: STEP_SECONDS, endpoints: of(this.endpoints), backends: of(this.backends) };
  }

  private stepStart(ms: number): number {
    return ms - (ms % (STEP_SECONDS * 1000));
  }

  private slot(map: Map<string, Slot[]>, name: string, start: number): Slot {
    let slots = map.get(name);
    if (slots === undefined) map.set(name, (slots = []));
    let last = slots.at(-1);
    if (last?.start !== start) {
      last = { start, requests: 0, errors: 0, latency: new Array<number>(BOUNDS.length).fill(0) };
      slots.push(last);
      this.expire(map, name, slots, start);
    }
    return last;
  }

  private expire(map: Map<string, Slot[]>, name: string, slots: Slot[], now: number): void {
    const oldest = now - (SLOTS - 1) * STEP_SECONDS * 1000;
    while (slots.length > 0 && (slots[0]?.start ?? 0) < oldest) slots.shift();
    if (slots.length === 0) map.delete(name);
  }
}

function count(slot: Slot, status: number, bucket: number): void {
  slot.requests++;
  if (status >= 400) slot.errors++;
  slot.latency[bucket]!++;
}

/** Reports to each of `targets`. */
export function fanOut(...targets: ServingMetrics[]): ServingMetrics {
  return {
    request: (endpoint, backend, status, seconds) => {
      for (const target of targets) target.request(endpoint, backend, status, seconds);
    },
    shadow: (...args) => targets.forEach((target) => target.shadow(...args)),
    replicaFailure: (...args) => targets.forEach((target) => target.replicaFailure(...args)),
  };
}
