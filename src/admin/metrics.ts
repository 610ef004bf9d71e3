import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Client } from '../api.js';
import type { ServingMetrics, ShadowOutcome } from '../proxy/serving-metrics.js';

/**
 * Prometheus metrics (the only module that uses prom-client): requests and
 * latency per endpoint and backend, shadow comparisons, and replicas by state,
 * read from the client when scraped.
 */
export class PrometheusMetrics implements ServingMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'flotilla_requests_total',
    help: 'Requests answered through the front door, by endpoint, backend and status code.',
    labelNames: ['endpoint', 'backend', 'code'],
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'flotilla_request_duration_seconds',
    help: 'Time from a request reaching the front door to its response ending.',
    labelNames: ['endpoint', 'backend'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly shadows = new Counter({
    name: 'flotilla_shadow_requests_total',
    help: "Shadow copies by outcome: match or mismatch with the primary's answer, dropped (shadow saturated) or failed.",
    labelNames: ['endpoint', 'backend', 'outcome'],
    registers: [this.registry],
  });
  private readonly replicaFailures = new Counter({
    name: 'flotilla_replica_failures_total',
    help: 'Requests whose replica failed at the connection level (refused, reset, died mid-response), by backend.',
    labelNames: ['backend'],
    registers: [this.registry],
  });

  private client: Client | undefined;

  constructor() {
    const replicas: Gauge<'backend' | 'state'> = new Gauge({
      name: 'flotilla_replicas',
      help: 'Replicas by backend and state.',
      labelNames: ['backend', 'state'],
      registers: [this.registry],
      collect: async () => {
        replicas.reset();
        if (this.client === undefined) return;
        for (const backend of Object.keys(await this.client.listBackends())) {
          for (const replica of await this.client.listReplicas(backend).catch(() => [])) replicas.inc({ backend, state: replica.state });
        }
      },
    });
  }

  countReplicasOf(client: Client): void {
    this.client = client;
  }

  request(endpoint: string, backend: string, status: number, seconds: number): void {
    this.requests.inc({ endpoint, backend, code: String(status) });
    this.latency.observe({ endpoint, backend }, seconds);
  }

  shadow(endpoint: string, backend: string, outcome: ShadowOutcome): void {
    this.shadows.inc({ endpoint, backend, outcome });
  }

  replicaFailure(backend: string): void {
    this.replicaFailures.inc({ backend });
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
