import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AutoscalingStatus, BackendInfo, Client, ReplicaInfo } from '../api.js';
import type { AutoscalingMetrics, LoadSignal } from '../controller/autoscaler.js';
import type { ServingMetrics, ShadowOutcome } from '../dataplane/serving-metrics.js';
import { systemClock, type Clock } from '../common/clock.js';

/** One endpoint and backend's answers: a count per status, and their latency histogram (a count per bucket, not cumulative). */
interface Answered {
  statuses: Map<number, number>;
  buckets: number[];
  sum: number;
  count: number;
}

/** How long one read of the backends and replicas serves the scrapes that follow it. */
const STATE_REUSE_MS = 1000;

/** What the gauges report about backends and replicas, read from the client. */
interface StateSnapshot {
  backends: Record<string, BackendInfo>;
  replicas: Array<[string, ReplicaInfo]>;
}

const LATENCY = {
  name: 'serve_http_request_latency_seconds',
  help: 'Time from a request reaching the front door to its response ending, queueing included.',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
};

/** A label value as the Prometheus text format quotes it. */
function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/**
 * Prometheus metrics (the only module that uses prom-client), as docs/metrics.md lists them: Ray Serve's
 * `serve_*` names where Ray Serve has the metric, `flotilla_*` where it has none. Replica series are
 * read from the client when scraped. What the front door answers is counted in plain numbers, per request
 * the cheapest there is: its two counters are handed to prom-client when scraped, and its latency
 * histogram is rendered here, after prom-client's metrics.
 */
export class PrometheusMetrics implements ServingMetrics, AutoscalingMetrics {
  readonly registry = new Registry();
  /** What the front door answered, per endpoint and backend, in plain numbers; prom-client reads them when scraped. */
  private readonly answered = new Map<string, Map<string, Answered>>();
  private readonly requests: Counter<'endpoint' | 'backend' | 'status_code'> = new Counter({
    name: 'serve_num_http_requests_total',
    help: 'HTTP requests answered through the front door, by endpoint, backend and status code.',
    labelNames: ['endpoint', 'backend', 'status_code'],
    registers: [this.registry],
    collect: () => this.collectCounts(this.requests, 'status_code', () => true),
  });
  private readonly errors: Counter<'endpoint' | 'backend' | 'error_code'> = new Counter({
    name: 'serve_num_http_error_requests_total',
    help: 'HTTP requests answered through the front door with a status of 400 or above, by endpoint, backend and status code.',
    labelNames: ['endpoint', 'backend', 'error_code'],
    registers: [this.registry],
    collect: () => this.collectCounts(this.errors, 'error_code', (status) => status >= 400),
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
  private readonly decisions = new Counter({
    name: 'flotilla_autoscaling_decisions_total',
    help: "Autoscaling decisions that changed a backend's target replica count, by backend and direction (up, down).",
    labelNames: ['backend', 'direction'],
    registers: [this.registry],
  });
  private readonly coldStarts = new Histogram({
    name: 'flotilla_cold_start_seconds',
    help: 'Cold starts of autoscaled backends: from the decision to leave zero replicas (a request arrived) to the first replica ready.',
    labelNames: ['backend'],
    buckets: [0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120],
    registers: [this.registry],
  });

  private client: Client | undefined;
  private load: LoadSignal | undefined;
  private frontDoorWorkers: () => { serving: number; configured: number } = () => ({ serving: 1, configured: 1 });

  private read: { at: number; state: Promise<StateSnapshot> } | undefined;

  constructor(private readonly clock: Clock = systemClock) {
    const replicas: Gauge<'backend' | 'state'> = new Gauge({
      name: 'flotilla_replicas',
      help: 'Replicas by backend and state (starting, ready, draining).',
      labelNames: ['backend', 'state'],
      registers: [this.registry],
      collect: async () => {
        replicas.reset();
        for (const [backend, replica] of (await this.state()).replicas) replicas.inc({ backend, state: replica.state });
      },
    });
    const healthy: Gauge<'backend' | 'replica'> = new Gauge({
      name: 'serve_deployment_replica_healthy',
      help: 'One series per replica: 1 while it is ready to serve, 0 while it starts or drains.',
      labelNames: ['backend', 'replica'],
      registers: [this.registry],
      collect: async () => {
        healthy.reset();
        for (const [backend, replica] of (await this.state()).replicas)
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
        for (const [backend, info] of Object.entries((await this.state()).backends)) {
          if (info.rollout !== null) rollouts.set({ backend, state: info.rollout.state }, 1);
        }
      },
    });
    const workers: Gauge<'state'> = new Gauge({
      name: 'flotilla_front_door_workers',
      help: 'Front-door processes: serving (0 means the front door refuses every connection) and configured (http.workers; 1 is the control plane itself).',
      labelNames: ['state'],
      registers: [this.registry],
      collect: () => {
        const { serving, configured } = this.frontDoorWorkers();
        workers.set({ state: 'serving' }, serving);
        workers.set({ state: 'configured' }, configured);
      },
    });
    this.autoscalingGauges();
  }

  /** Where the flotilla_front_door_workers gauge reads how many front-door workers serve. */
  countFrontDoorWorkers(workers: () => { serving: number; configured: number }): void {
    this.frontDoorWorkers = workers;
  }

  private autoscalingGauges(): void {
    const gauge = (name: string, help: string, value: (status: AutoscalingStatus) => number): void => {
      const metric: Gauge<'backend'> = new Gauge({
        name,
        help,
        labelNames: ['backend'],
        registers: [this.registry],
        collect: async () => {
          metric.reset();
          for (const [backend, info] of Object.entries((await this.state()).backends)) {
            if (info.autoscalingStatus !== null) metric.set({ backend }, value(info.autoscalingStatus));
          }
        },
      });
    };
    gauge(
      'serve_autoscaling_target_replicas',
      'Replicas the controller converges on for an autoscaled backend (its numReplicas).',
      (s) => s.targetReplicas,
    );
    gauge(
      'serve_autoscaling_desired_replicas',
      "Replicas an autoscaled backend's policy asks for, before its delays and the machine's capacity.",
      (s) => s.wantedReplicas,
    );
    gauge('flotilla_autoscaling_running_replicas', 'Ready replicas of an autoscaled backend.', (s) => s.runningReplicas);
    gauge(
      'serve_autoscaling_total_requests',
      'Ongoing requests (queued and in flight) of an autoscaled backend, averaged over its lookBackPeriodS: what the policy decides on.',
      (s) => s.ongoingRequests,
    );
    gauge(
      'flotilla_autoscaling_capacity_capped',
      "1 while the machine's capacity holds an autoscaled backend below the replicas its policy asks for.",
      (s) => (s.heldBack?.by === 'capacity' ? 1 : 0),
    );
    const ongoing: Gauge<'backend'> = new Gauge({
      name: 'flotilla_ongoing_requests',
      help: 'Requests of a backend queued and in flight now, front door and handles alike.',
      labelNames: ['backend'],
      registers: [this.registry],
      collect: async () => {
        ongoing.reset();
        if (this.load === undefined) return;
        for (const backend of Object.keys((await this.state()).backends)) ongoing.set({ backend }, this.load.ongoingRequests(backend));
      },
    });
  }

  /**
   * Every backend, and every replica with its backend, as the client reported them within the last second: a scrape
   * reads them once for all its gauges, and scrapes that follow within a second share that read (docs/security.md).
   * A read that failed is not kept.
   */
  private state(): Promise<StateSnapshot> {
    const client = this.client;
    if (client === undefined) return Promise.resolve({ backends: {}, replicas: [] });
    const now = this.clock.now();
    if (this.read !== undefined && now - this.read.at < STATE_REUSE_MS) return this.read.state;
    const state = (async () => {
      const backends = await client.listBackends();
      const names = Object.keys(backends);
      const lists = await Promise.all(names.map((backend) => client.listReplicas(backend).catch(() => [])));
      return {
        backends,
        replicas: names.flatMap((backend, i) => (lists[i] ?? []).map((replica): [string, ReplicaInfo] => [backend, replica])),
      };
    })();
    this.read = { at: now, state };
    state.catch(() => {
      if (this.read?.state === state) this.read = undefined;
    });
    return state;
  }

  /** Every metric this exports: name, type, labels and help (docs/metrics.md lists the same). */
  catalogue(): Array<{ name: string; type: string; labels: string[]; help: string }> {
    const metrics = this.registry.getMetricsAsArray().map((metric) => {
      const { name, type, labelNames, help } = metric as unknown as { name: string; type: string; labelNames: string[]; help: string };
      return { name, type, labels: [...labelNames], help };
    });
    return [...metrics, { name: LATENCY.name, type: 'histogram', labels: ['endpoint', 'backend'], help: LATENCY.help }];
  }

  countReplicasOf(client: Client, load?: LoadSignal): void {
    this.client = client;
    this.load = load;
  }

  decision(backend: string, direction: 'up' | 'down'): void {
    this.decisions.inc({ backend, direction });
  }

  coldStart(backend: string, seconds: number): void {
    this.coldStarts.observe({ backend }, seconds);
  }

  request(endpoint: string, backend: string, status: number, seconds: number): void {
    let byBackend = this.answered.get(endpoint);
    if (byBackend === undefined) this.answered.set(endpoint, (byBackend = new Map()));
    let answered = byBackend.get(backend);
    if (answered === undefined) {
      answered = { statuses: new Map(), buckets: new Array<number>(LATENCY.buckets.length).fill(0), sum: 0, count: 0 };
      byBackend.set(backend, answered);
    }
    answered.statuses.set(status, (answered.statuses.get(status) ?? 0) + 1);
    const bounds = LATENCY.buckets;
    let bucket = 0;
    while (bucket < bounds.length && seconds > bounds[bucket]!) bucket++;
    if (bucket < bounds.length) answered.buckets[bucket]!++;
    answered.sum += seconds;
    answered.count++;
  }

  /** The latency histogram in the Prometheus text format: cumulative buckets, then +Inf, sum and count per series. */
  private renderLatency(): string {
    const lines = [`# HELP ${LATENCY.name} ${LATENCY.help}`, `# TYPE ${LATENCY.name} histogram`];
    for (const [endpoint, byBackend] of this.answered) {
      for (const [backend, answered] of byBackend) {
        const labels = `endpoint="${labelValue(endpoint)}",backend="${labelValue(backend)}"`;
        let cumulative = 0;
        LATENCY.buckets.forEach((bound, i) => {
          cumulative += answered.buckets[i] ?? 0;
          lines.push(`${LATENCY.name}_bucket{le="${bound}",${labels}} ${cumulative}`);
        });
        lines.push(`${LATENCY.name}_bucket{le="+Inf",${labels}} ${answered.count}`);
        lines.push(`${LATENCY.name}_sum{${labels}} ${answered.sum}`, `${LATENCY.name}_count{${labels}} ${answered.count}`);
      }
    }
    return lines.join('\n');
  }

  private collectCounts<L extends string>(
    counter: Counter<'endpoint' | 'backend' | L>,
    label: L,
    counts: (status: number) => boolean,
  ): void {
    counter.reset();
    for (const [endpoint, byBackend] of this.answered) {
      for (const [backend, answered] of byBackend) {
        for (const [status, n] of answered.statuses) {
          if (counts(status))
            counter.inc({ endpoint, backend, [label]: String(status) } as Partial<Record<'endpoint' | 'backend' | L, string>>, n);
        }
      }
    }
  }

  shadow(endpoint: string, backend: string, outcome: ShadowOutcome): void {
    this.shadows.inc({ endpoint, backend, outcome });
  }

  replicaFailure(backend: string): void {
    this.replicaFailures.inc({ backend });
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: `${await this.registry.metrics()}\n${this.renderLatency()}\n` };
  }
}
