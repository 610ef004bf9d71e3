/** Every timing constant of the controller; the ones users tune are settings in src/config/config.ts. */
export const TIMING = {
  /** How often the reconcile step runs; it only reads memory and launches operations, so it is cheap. */
  stepMs: 100,
  /** How often a starting replica is probed for readiness. */
  startingProbeMs: 100,
  /** Timeout of one liveness probe of a ready replica. */
  probeTimeoutMs: 2000,
  /** Liveness probes in a row a ready replica may fail before it is replaced. */
  failedProbesToReplace: 3,
  /** Timeout of one live-config push (the user's reconfigure runs inside it). */
  configPushTimeoutMs: 60_000,
  /** How long the proxy holds a request for a backend that has no ready replica yet. */
  noReplicaWaitMs: 30_000,
  /** A replica that ran this long before failing resets its backend's backoff. */
  stableUptimeMs: 60_000,
  /** Longest wait between replacements of a backend whose replicas keep failing. */
  maxBackoffMs: 30_000,
  /** Log lines quoted in the error of a replica that failed to start. */
  logTailLines: 20,
  /** A lock file whose holder cannot be checked by pid (another host or container) is stale after this long without a heartbeat. */
  lockStaleMs: 15_000,
  lockHeartbeatMs: 5000,
} as const;

/** No wait for the first replacement, then 1 s, 2 s, 4 s ... up to maxBackoffMs. */
export function backoffMs(consecutiveFailures: number): number {
  return consecutiveFailures <= 1 ? 0 : Math.min(TIMING.maxBackoffMs, 1000 * 2 ** (consecutiveFailures - 2));
}
