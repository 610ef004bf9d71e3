export type ShadowOutcome = 'match' | 'mismatch' | 'dropped' | 'failed';

/** What the data plane reports for metrics; src/admin/metrics.ts turns it into Prometheus series. */
export interface ServingMetrics {
  request(endpoint: string, backend: string, status: number, seconds: number): void;
  shadow(endpoint: string, backend: string, outcome: ShadowOutcome): void;
  /** A request to one of the backend's replicas failed at the connection level (before or during its answer). */
  replicaFailure(backend: string): void;
}

export const noMetrics: ServingMetrics = { request: () => undefined, shadow: () => undefined, replicaFailure: () => undefined };
