import type { ServingMetrics, ShadowOutcome } from '../../dataplane/serving-metrics.js';
import type { FromWorker } from './worker-protocol.js';

/** How often what was served goes to the process that keeps the metrics, for /metrics and the dashboard. */
const METRICS_FLUSH_MS = 100;

/**
 * What a front-door process served, sent in batches to the one that keeps the metrics (a worker's to its primary,
 * the front door's to the control plane); replica failures go as their own message ('failed'), counted there.
 */
export class ForwardedMetrics implements ServingMetrics {
  private requests: Array<[string, string, number, number]> = [];
  private shadows: Array<[string, string, ShadowOutcome]> = [];
  private readonly timer = setInterval(() => this.flush(), METRICS_FLUSH_MS).unref();

  constructor(private readonly send: (message: Extract<FromWorker, { t: 'metrics' }>) => void) {}

  request(endpoint: string, backend: string, status: number, seconds: number): void {
    this.requests.push([endpoint, backend, status, seconds]);
  }

  shadow(endpoint: string, backend: string, outcome: ShadowOutcome): void {
    this.shadows.push([endpoint, backend, outcome]);
  }

  replicaFailure(): void {}

  flush(): void {
    if (this.requests.length === 0 && this.shadows.length === 0) return;
    this.send({ t: 'metrics', requests: this.requests, shadows: this.shadows });
    this.requests = [];
    this.shadows = [];
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
