import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Client, ReplicaInfo } from '../api.js';
import type { ServingMetrics, ShadowOutcome } from '../proxy/serving-metrics.js';

/**
 * Prometheus metrics (the only module that uses prom-client), as docs/metrics.md lists them: Ray Serve's
 * `serve_*` names where Ray Serve has the metric, `flotilla_*` where it has none. Replica series are
 * read from the client when scraped.
 */
export class PrometheusMetrics implements ServingMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'serve_num_http_requests_total',
    help: 'HTTP requests answered through the front door, by endpoint, backend and status code.',
    labelNames: ['endpoint', 'backend', 'status_code'],
    registers: [this.registry],
  });
  private readonly errors = new Counter({
    name: 'serve_num_http_error_requests_total',
    help: 'HTTP requests answered through the front door with a status of 400 or above, by endpoint, backend and status code.',
    labelNames: ['endpoint', 'backend', 'error_code'],
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'serve_http_request_latency_seconds',
    help: 'Time from a request reaching the front door to its response ending, queueing included.',
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
      help: 'Replicas by backend and state (starting, ready, draining).',
      labelNames: ['backend', 'state'],
      registers: [this.registry],
      collect: async () => {
        replicas.reset();
        for (const [backend, replica] of await this.replicas()) replicas.inc({ backend, state: replica.state });
      },
    });
    const healthy: Gauge<'backend' | 'replica'> = new Gauge({
      name: 'serve_deployment_replica_healthy',
      help: 'One series per replica: 1 while it is ready to serve, 0 while it starts or drains.',
      labelNames: ['backend', 'replica'],
      registers: [this.registry],
      collect: async () => {
        healthy.reset();
        for (const [backend, replica] of await this.replicas())
          healthy.set({ backend, replica: replica.id }, replica.state === 'ready' ? 1 : 0);
      },
    });
    const rollouts: Gauge<'backend' | 'state'> = new Gauge({
      name: 'flotilla_rollout',
      help: "1 for the state of each backend's latest rolling update (rolling, in-place, paused, rolling-back, rolled-back, completed).",
      labelNames: ['backend', 'state'],
      registers: [this.registry],
      collect: async () => {
        rollouts.reset();
        if (this.client === undefined) return;
        for (const [backend, info] of Object.entries(await this.client.listBackends())) {
          if (info.rollout !== null) rollouts.set({ backend, state: info.rollout.state }, 1);
        }
      },
    });
  }

  /** Every replica with its backend, as the client reports them now. */
  private async replicas(): Promise<Array<[string, ReplicaInfo]>> {
    if (this.client === undefined) return [];
    const client = this.client;
    const backends = Object.keys(await client.listBackends());
    const lists = await Promise.all(backends.map((backend) => client.listReplicas(backend).catch(() => [])));
    return backends.flatMap((backend, i) => (lists[i] ?? []).map((replica): [string, ReplicaInfo] => [backend, replica]));
  }

  /** Every metric this exports: name, type, labels and help (docs/metrics.md lists the same). */
  catalogue(): Array<{ name: string; type: string; labels: string[]; help: string }> {
    return this.registry.getMetricsAsArray().map((metric) => {
      const { name, type, labelNames, help } = metric as unknown as { name: string; type: string; labelNames: string[]; help: string };
      return { name, type, labels: [...labelNames], help };
    });
  }

  countReplicasOf(client: Client): void {
    this.client = client;
  }

  request(endpoint: string, backend: string, status: number, seconds: number): void {
    this.requests.inc({ endpoint, backend, status_code: String(status) });
    if (status >= 400) this.errors.inc({ endpoint, backend, error_code: String(status) });
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
