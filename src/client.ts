import { resolve } from 'node:path';
import type {
  BackendConfigPatch,
  BackendDefinition,
  BackendInfo,
  BuildInfo,
  CapacityInfo,
  Client,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
  EventPage,
  EventQuery,
  HandleOptions,
  ReplicaInfo,
  ShadowStats,
} from './api.js';
import { FlotillaError } from './common/errors.js';
import type { Controller } from './controller/controller.js';
import type { EventLog } from './controller/event-log.js';
import { toShippable, type ShippableDefinition } from './spec/definition.js';
import { ServeHandle } from './handle/serve-handle.js';
import type { Dispatcher } from './dataplane/dispatcher.js';

/** Options with a relative context directory made absolute against this process's working directory. */
export function withAbsoluteContext(options: CreateBackendOptions | undefined): CreateBackendOptions | undefined {
  const context = options?.replicaOptions?.runtimeEnv?.context;
  if (typeof context !== 'string' || options?.replicaOptions?.runtimeEnv === undefined) return options;
  return {
    ...options,
    replicaOptions: { ...options.replicaOptions, runtimeEnv: { ...options.replicaOptions.runtimeEnv, context: resolve(context) } },
  };
}

/** The client of a Flotilla running in this process. */
export class LocalClient implements Client {
  constructor(
    readonly httpUrl: string,
    private readonly controller: Controller,
    private readonly dispatcher: Dispatcher,
    private readonly shutdownAll: () => Promise<void>,
    readonly events: EventLog,
    /** The stats of an endpoint's shadows, summed over the processes that mirror (front-door workers). */
    private readonly shadowStats = (endpoint: string): Promise<Record<string, ShadowStats>> =>
      Promise.resolve(dispatcher.shadows.stats(endpoint)),
  ) {}

  async createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    return this.createShippedBackend(name, toShippable(definition), withAbsoluteContext(options));
  }
  async createShippedBackend(name: string, definition: ShippableDefinition, options?: unknown): Promise<void> {
    return this.controller.createBackend(name, definition, options);
  }
  async listBackends(): Promise<Record<string, BackendInfo>> {
    return this.controller.listBackends();
  }
  async getBackendConfig(name: string): Promise<BackendInfo> {
    return this.controller.getBackendConfig(name);
  }
  async updateBackendConfig(name: string, config: BackendConfigPatch): Promise<void> {
    return this.controller.updateBackendConfig(name, config);
  }
  async updateBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    return this.updateShippedBackend(name, toShippable(definition), withAbsoluteContext(options));
  }
  updateShippedBackend(name: string, definition: ShippableDefinition, options?: unknown): Promise<void> {
    return this.controller.updateBackend(name, definition, options);
  }
  async deleteBackend(name: string, options?: DeleteBackendOptions): Promise<void> {
    return this.controller.deleteBackend(name, options);
  }
  async listReplicas(backend: string): Promise<ReplicaInfo[]> {
    return this.controller.listReplicas(backend);
  }
  async getCapacity(): Promise<CapacityInfo> {
    return this.controller.capacity();
  }

  async listBuilds(): Promise<BuildInfo[]> {
    return this.controller.builds();
  }
  async createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    return this.controller.createEndpoint(name, options);
  }
  async listEndpoints(): Promise<Record<string, EndpointInfo>> {
    return this.controller.listEndpoints();
  }
  async deleteEndpoint(name: string): Promise<void> {
    return this.controller.deleteEndpoint(name);
  }
  async setTraffic(endpoint: string, weights: Record<string, number>): Promise<void> {
    return this.controller.setTraffic(endpoint, weights);
  }
  async shadowTraffic(endpoint: string, backend: string, proportion: number): Promise<void> {
    return this.controller.shadowTraffic(endpoint, backend, proportion);
  }
  async getShadowStats(endpoint: string): Promise<Record<string, ShadowStats>> {
    if (!this.controller.hasEndpoint(endpoint)) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${endpoint}' does not exist`);
    return this.shadowStats(endpoint);
  }
  /** `defaultTimeoutMs`: see ServeHandle (handle calls from replicas). */
  getHandle(endpoint: string, options: HandleOptions = {}, defaultTimeoutMs?: number): ServeHandle {
    if (!this.controller.hasEndpoint(endpoint)) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${endpoint}' does not exist`);
    return new ServeHandle(this.dispatcher, endpoint, options, defaultTimeoutMs);
  }
  async listEvents(query?: EventQuery): Promise<EventPage> {
    return this.events.list(query);
  }
  shutdown(): Promise<void> {
    return this.shutdownAll();
  }
}
