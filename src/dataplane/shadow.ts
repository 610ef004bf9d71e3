import { createHash } from 'node:crypto';
import type { Agent, OutgoingHttpHeaders } from 'node:http';
import type { ShadowStats } from '../api.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import type { Lease } from './replica-router.js';
import { hashReplica } from './replica-request.js';
import type { ServingMetrics } from './serving-metrics.js';

/** What a request's answer looked like, for comparing the primary with a shadow. */
export interface Outcome {
  status: number;
  bodyHash: string;
  latencyMs: number;
}

export interface MirroredRequest {
  endpoint: string;
  primaryBackend: string;
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  body: Buffer;
  /** Resolves with the primary's outcome, or undefined when it had none (error, client gone). */
  primary: Promise<Outcome | undefined>;
  /**
   * Takes the body's bytes from the front door's budget for one copy, and returns how to give them back; undefined when
   * the budget refuses (the copy is dropped). None: the body is not counted (a handle's).
   */
  hold?: () => (() => void) | undefined;
}

const LATENCY_SAMPLES = 1024;
const SHADOW_TIMEOUT_MS = 60_000;

export function hashBody(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

class Samples {
  readonly values: number[] = [];
  private next = 0;

  add(value: number): void {
    if (this.values.length < LATENCY_SAMPLES) this.values.push(value);
    else this.values[this.next] = value;
    this.next = (this.next + 1) % LATENCY_SAMPLES;
  }
}

function summary(values: number[]): { p50: number | null; p99: number | null } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => (sorted.length === 0 ? null : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? null));
  return { p50: at(0.5), p99: at(0.99) };
}

/** One process's counts for a shadow backend, with its latency samples (ms). */
export interface ShadowCounts extends Omit<ShadowStats, 'primaryLatencyMs' | 'shadowLatencyMs'> {
  primaryLatencyMs: number[];
  shadowLatencyMs: number[];
}

/** The stats of shadow backends over processes: counts added up, latency percentiles over every process's samples. */
export function summarizeShadows(processes: Array<Record<string, ShadowCounts>>): Record<string, ShadowStats> {
  const merged = new Map<string, ShadowCounts>();
  for (const counts of processes) {
    for (const [backend, { primaryLatencyMs, shadowLatencyMs, ...count }] of Object.entries(counts)) {
      const into = merged.get(backend);
      if (into === undefined) {
        merged.set(backend, { ...count, primaryLatencyMs: [...primaryLatencyMs], shadowLatencyMs: [...shadowLatencyMs] });
        continue;
      }
      for (const key of ['sent', 'dropped', 'failed', 'compared', 'matches', 'statusMismatches', 'bodyMismatches'] as const)
        into[key] += count[key];
      into.primaryLatencyMs.push(...primaryLatencyMs);
      into.shadowLatencyMs.push(...shadowLatencyMs);
    }
  }
  return Object.fromEntries(
    [...merged].map(([backend, { primaryLatencyMs, shadowLatencyMs, ...count }]) => [
      backend,
      { ...count, primaryLatencyMs: summary(primaryLatencyMs), shadowLatencyMs: summary(shadowLatencyMs) },
    ]),
  );
}

interface Tally extends Omit<ShadowStats, 'primaryLatencyMs' | 'shadowLatencyMs'> {
  primaryLatency: Samples;
  shadowLatency: Samples;
}

/**
 * Sends copies of an endpoint's requests to its shadow backends and compares
 * their answers with the primary's: status and body hash, a streamed body
 * read to its end and hashed as it comes. Nothing here is awaited by the primary:
 * a shadow that is slow, failing or saturated (its queue full) only shows up
 * in the counts, never in the caller's response. A copy whose body the
 * front door's budget cannot hold is dropped (counted as dropped).
 */
export class ShadowMirror {
  private readonly tallies = new Map<string, Map<string, Tally>>();

  constructor(
    private readonly acquire: (backend: string, signal: AbortSignal) => Promise<Lease<ReplicaTarget>>,
    private readonly agent: Agent,
    private readonly metrics: ServingMetrics,
  ) {}

  mirror(mirrored: MirroredRequest, shadows: Record<string, number>, random: () => number = Math.random): void {
    for (const [backend, proportion] of Object.entries(shadows)) {
      if (backend === mirrored.primaryBackend || random() >= proportion) continue;
      const release = mirrored.hold === undefined ? () => undefined : mirrored.hold();
      if (release === undefined) this.dropped(mirrored.endpoint, backend);
      else void this.shadow(backend, mirrored).finally(release);
    }
  }

  stats(endpoint: string): Record<string, ShadowStats> {
    return summarizeShadows([this.counts(endpoint)]);
  }

  /** The endpoint's counts per shadow backend with their latency samples, to be summed over processes (summarizeShadows). */
  counts(endpoint: string): Record<string, ShadowCounts> {
    return Object.fromEntries(
      [...(this.tallies.get(endpoint) ?? new Map<string, Tally>())].map(([backend, { primaryLatency, shadowLatency, ...counts }]) => [
        backend,
        { ...counts, primaryLatencyMs: primaryLatency.values, shadowLatencyMs: shadowLatency.values },
      ]),
    );
  }

  /** Drops the counts of a deleted endpoint. A shadow set to 0 keeps its counts, and setting it again continues them. */
  dropEndpoint(endpoint: string): void {
    this.tallies.delete(endpoint);
  }

  private tally(endpoint: string, backend: string): Tally {
    let byBackend = this.tallies.get(endpoint);
    if (byBackend === undefined) this.tallies.set(endpoint, (byBackend = new Map()));
    let tally = byBackend.get(backend);
    if (tally === undefined) {
      tally = {
        sent: 0,
        dropped: 0,
        failed: 0,
        compared: 0,
        matches: 0,
        statusMismatches: 0,
        bodyMismatches: 0,
        primaryLatency: new Samples(),
        shadowLatency: new Samples(),
      };
      byBackend.set(backend, tally);
    }
    return tally;
  }

  private dropped(endpoint: string, backend: string): void {
    this.tally(endpoint, backend).dropped += 1;
    this.metrics.shadow(endpoint, backend, 'dropped');
  }

  private async shadow(backend: string, mirrored: MirroredRequest): Promise<void> {
    const tally = this.tally(mirrored.endpoint, backend);
    const signal = AbortSignal.timeout(SHADOW_TIMEOUT_MS);
    let lease;
    try {
      lease = await this.acquire(backend, signal);
    } catch {
      this.dropped(mirrored.endpoint, backend);
      return;
    }
    tally.sent += 1;
    let outcome: Outcome;
    try {
      const started = performance.now();
      const reply = await hashReplica(lease.replica.target, {
        method: mirrored.method,
        path: mirrored.path,
        headers: mirrored.headers,
        body: mirrored.body,
        agent: this.agent,
        signal,
      });
      outcome = { ...reply, latencyMs: performance.now() - started };
    } catch {
      tally.failed += 1;
      this.metrics.shadow(mirrored.endpoint, backend, 'failed');
      return;
    } finally {
      lease.release();
    }
    tally.shadowLatency.add(outcome.latencyMs);
    const primary = await mirrored.primary;
    if (primary === undefined) return;
    tally.primaryLatency.add(primary.latencyMs);
    tally.compared += 1;
    const statusMatch = primary.status === outcome.status;
    const bodyMatch = primary.bodyHash === outcome.bodyHash;
    if (statusMatch && bodyMatch) tally.matches += 1;
    if (!statusMatch) tally.statusMismatches += 1;
    if (!bodyMatch) tally.bodyMismatches += 1;
    this.metrics.shadow(mirrored.endpoint, backend, statusMatch && bodyMatch ? 'match' : 'mismatch');
  }
}
