import { Agent } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import { InFlight } from './in-flight.js';
import {
  ReplicaRouter,
  type Abortable,
  type BackendRouter,
  type Lease,
  type RoutedReplica,
  type RouterSettings,
} from './replica-router.js';
import { RouteTable, type RouteEntry, type RouteMatch } from './route-table.js';
import { noMetrics, type ServingMetrics } from './serving-metrics.js';
import { ShadowMirror } from './shadow.js';
import { TrafficPolicy } from './traffic-policy.js';
import type { EndpointRecord } from '../spec/saved-state.js';

export interface BackendRouting extends RouterSettings {
  name: string;
  /** Seconds a request may take, queueing included; null for no limit. */
  requestTimeoutS: number | null;
  replicas: RoutedReplica<ReplicaTarget>[];
}

/** What the controller pushes to the data plane after every change. */
export interface RoutingSnapshot {
  endpoints: EndpointRecord[];
  backends: BackendRouting[];
}

export interface DispatcherOptions {
  /** A request to a replica failed at the connection level. */
  onReplicaFailure?: (backend: string, replicaId: string) => void;
  metrics?: ServingMetrics;
  /** Bounds a handle's gaps between chunks. */
  streamIdleTimeoutMs?: number;
  /** Bounds a handle's whole answer (remote), read into memory: config handle.maxResponseBytes. */
  maxResponseBytes?: number;
  /** A request arrived for a backend that has no replica. */
  onDemand?: (backend: string) => void;
  /** A request started waiting in the backend's queue. */
  onQueued?: (backend: string) => void;
  /** Picks a backend's replicas; by default a ReplicaRouter, exact within this process (a front-door worker leases, see leased-router.ts). */
  router?: (backend: string, settings: RouterSettings) => BackendRouter<ReplicaTarget>;
}

/**
 * The data plane's view of the world, shared by the HTTP front door and
 * ServeHandles: route table, traffic policies and one replica router per
 * backend. Routers survive snapshots, so in-flight counts are never lost.
 */
/** What the controller asks of the data plane: the Dispatcher, or the front-door workers with it (FrontDoorWorkers.dataPlane). */
export type DataPlane = Pick<Dispatcher, 'update' | 'drained' | 'cut' | 'endpointIdle' | 'ongoingRequests'>;

export class Dispatcher {
  readonly agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  /** Requests in flight per endpoint, so that deleting one can wait for them. */
  readonly endpointRequests = new InFlight();
  readonly shadows: ShadowMirror;
  private routes = new RouteTable([]);
  private endpoints = new Map<string, { routing: EndpointRecord; policy: TrafficPolicy }>();
  private backends = new Map<string, BackendRouting>();
  private readonly routers = new Map<string, BackendRouter<ReplicaTarget>>();
  readonly metrics: ServingMetrics;
  readonly streamIdleTimeoutMs: number;
  readonly maxResponseBytes: number;
  private readonly onReplicaFailure: (backend: string, replicaId: string) => void;
  private readonly newRouter: (backend: string, settings: RouterSettings) => BackendRouter<ReplicaTarget>;

  constructor(options: DispatcherOptions = {}) {
    const { onDemand, onQueued } = options;
    this.metrics = options.metrics ?? noMetrics;
    this.streamIdleTimeoutMs = options.streamIdleTimeoutMs ?? 60_000;
    this.maxResponseBytes = options.maxResponseBytes ?? 64 * 1024 * 1024;
    this.onReplicaFailure = options.onReplicaFailure ?? (() => undefined);
    this.newRouter =
      options.router ??
      ((name, settings) =>
        new ReplicaRouter(
          name,
          settings,
          () => onDemand?.(name),
          () => onQueued?.(name),
        ));
    this.shadows = new ShadowMirror((backend, signal) => this.acquire(backend, { signal }), this.agent, this.metrics);
  }

  update(snapshot: RoutingSnapshot): void {
    const previous = this.endpoints;
    this.endpoints = new Map(snapshot.endpoints.map((routing) => [routing.name, { routing, policy: new TrafficPolicy(routing.traffic) }]));
    this.routes = new RouteTable(
      snapshot.endpoints.flatMap(({ name, route, methods, allowCallMethod }) =>
        route === null ? [] : [{ endpoint: name, route, methods, ...(allowCallMethod ? { allowCallMethod } : {}) }],
      ),
    );
    for (const name of previous.keys()) if (!this.endpoints.has(name)) this.shadows.dropEndpoint(name);
    this.backends = new Map(snapshot.backends.map((backend) => [backend.name, backend]));
    for (const backend of snapshot.backends) {
      let router = this.routers.get(backend.name);
      if (router === undefined) {
        router = this.newRouter(backend.name, backend);
        this.routers.set(backend.name, router);
      }
      router.update(backend.replicas, backend);
    }
    for (const [name, router] of this.routers) {
      if (!this.backends.has(name)) {
        router.close();
        this.routers.delete(name);
      }
    }
  }

  matchRoute(path: string): RouteMatch | undefined {
    return this.routes.match(path);
  }

  listRoutes(): RouteEntry[] {
    return this.routes.list();
  }

  endpoint(name: string): EndpointRecord {
    const found = this.endpoints.get(name);
    if (found === undefined) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${name}' does not exist`);
    return found.routing;
  }

  pickBackend(endpoint: string, shardKey?: string): string {
    const found = this.endpoints.get(endpoint);
    const backend = found?.policy.pick(shardKey);
    if (backend === undefined) throw new FlotillaError('NO_REPLICAS', `endpoint '${endpoint}' has no backend to serve it`);
    return backend;
  }

  requestTimeoutMs(backend: string): number | undefined {
    const seconds = this.backends.get(backend)?.requestTimeoutS;
    return seconds === null || seconds === undefined ? undefined : seconds * 1000;
  }

  /** A lease at once when the backend has a replica with room and nothing queued (see ReplicaRouter.tryAcquire). */
  tryAcquire(backend: string, exclude?: ReadonlySet<string>): Lease<ReplicaTarget> | undefined {
    return this.routers.get(backend)?.tryAcquire(exclude);
  }

  /** `abortable` is read only when the request has to queue. */
  acquire(backend: string, abortable?: Abortable, exclude?: ReadonlySet<string>): Promise<Lease<ReplicaTarget>> {
    const router = this.routers.get(backend);
    if (router === undefined) return Promise.reject(new FlotillaError('NO_REPLICAS', `backend '${backend}' has no replicas`));
    return router.acquire(abortable, exclude);
  }

  /** The backends in the last snapshot. */
  backendNames(): string[] {
    return [...this.backends.keys()];
  }

  queued(backend: string): number {
    return this.routers.get(backend)?.queued ?? 0;
  }

  /** The backend's requests queued and in flight (the autoscaler's signal). */
  ongoingRequests(backend: string): number {
    return this.routers.get(backend)?.ongoing ?? 0;
  }

  /** Resolves once no request for the endpoint is in flight here. */
  endpointIdle(endpoint: string): Promise<void> {
    return this.endpointRequests.idle(endpoint);
  }

  /** Resolves once no request of the backend is in flight on the replica. */
  drained(backend: string, replicaId: string): Promise<void> {
    return this.routers.get(backend)?.drained(replicaId) ?? Promise.resolve();
  }

  /** A request to the replica failed at the connection level: out of rotation at once (see ReplicaRouter.eject), and the controller is told. */
  reportFailure(backend: string, replicaId: string): void {
    this.routers.get(backend)?.eject(replicaId);
    this.metrics.replicaFailure(backend);
    this.onReplicaFailure(backend, replicaId);
  }

  /**
   * Cuts the connections to a replica that failed (its node went away, say): requests in flight on them fail at once
   * with a connection error, so idempotent ones are sent again to another replica and others fail fast.
   */
  cut(target: ReplicaTarget): void {
    const name = this.agent.getName('socketPath' in target ? { socketPath: target.socketPath } : { host: target.host, port: target.port });
    for (const socket of [...(this.agent.sockets[name] ?? []), ...(this.agent.freeSockets[name] ?? [])]) socket.destroy();
  }

  close(): void {
    for (const router of this.routers.values()) router.close();
    this.routers.clear();
    this.agent.destroy();
  }
}
