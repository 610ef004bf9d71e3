import { Agent } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import { ReplicaRouter, type Lease, type RoutedReplica } from './replica-router.js';
import { RouteTable, type RouteEntry } from './route-table.js';
import { TrafficPolicy } from './traffic-policy.js';

export interface EndpointRouting {
  name: string;
  route: string | null;
  methods: string[];
  traffic: Record<string, number>;
}

export interface BackendRouting {
  name: string;
  maxConcurrentQueries: number;
  replicas: RoutedReplica<ReplicaTarget>[];
}

/** What the controller pushes to the data plane after every change. */
export interface RoutingSnapshot {
  endpoints: EndpointRouting[];
  backends: BackendRouting[];
}

/**
 * The data plane's view of the world, shared by the HTTP front door and
 * ServeHandles: route table, traffic policies and one replica router per
 * backend. Routers survive snapshots, so in-flight counts are never lost.
 */
export class Dispatcher {
  readonly agent = new Agent({ keepAlive: true, maxSockets: Infinity });
  private routes = new RouteTable([]);
  private endpoints = new Map<string, { routing: EndpointRouting; policy: TrafficPolicy }>();
  private readonly routers = new Map<string, ReplicaRouter<ReplicaTarget>>();

  update(snapshot: RoutingSnapshot): void {
    this.endpoints = new Map(snapshot.endpoints.map((routing) => [routing.name, { routing, policy: new TrafficPolicy(routing.traffic) }]));
    this.routes = new RouteTable(
      snapshot.endpoints.flatMap(({ name, route, methods }) => (route === null ? [] : [{ endpoint: name, route, methods }])),
    );
    const live = new Set<string>();
    for (const backend of snapshot.backends) {
      live.add(backend.name);
      let router = this.routers.get(backend.name);
      if (router === undefined) {
        router = new ReplicaRouter(backend.name, backend.maxConcurrentQueries);
        this.routers.set(backend.name, router);
      }
      router.update(backend.replicas, backend.maxConcurrentQueries);
    }
    for (const [name, router] of this.routers) {
      if (!live.has(name)) {
        router.close();
        this.routers.delete(name);
      }
    }
  }

  matchRoute(path: string): RouteEntry | undefined {
    return this.routes.match(path);
  }

  listRoutes(): RouteEntry[] {
    return this.routes.list();
  }

  endpoint(name: string): EndpointRouting {
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

  acquire(backend: string, signal?: AbortSignal): Promise<Lease<ReplicaTarget>> {
    const router = this.routers.get(backend);
    if (router === undefined) return Promise.reject(new FlotillaError('NO_REPLICAS', `backend '${backend}' has no replicas`));
    return router.acquire(signal);
  }

  router(backend: string): ReplicaRouter<ReplicaTarget> | undefined {
    return this.routers.get(backend);
  }

  close(): void {
    for (const router of this.routers.values()) router.close();
    this.routers.clear();
    this.agent.destroy();
  }
}
