import { resolve } from 'node:path';
import type {
  BackendConfig,
  BackendDefinition,
  BackendInfo,
  Client,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
  HandleOptions,
  ReplicaInfo,
  ShadowStats,
} from './api.js';
import { FlotillaError } from './common/errors.js';
import type { Controller } from './controller/controller.js';
import { toShippable, type ShippableDefinition } from './controller/definition.js';
import { ServeHandle } from './handle/serve-handle.js';
import type { Dispatcher } from './proxy/dispatcher.js';

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
  ) {}

  async createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    return this.createShippedBackend(name, toShippable(definition), withAbsoluteContext(options));
  }
  createShippedBackend(name: string, definition: ShippableDefinition, options?: unknown): Promise<void> {
    return this.controller.createBackend(name, definition, options);
  }
  async listBackends(): Promise<Record<string, BackendInfo>> {
    return this.controller.listBackends();
  }
  async getBackendConfig(name: string): Promise<BackendInfo> {
    return this.controller.getBackendConfig(name);
  }
  updateBackendConfig(name: string, config: Partial<BackendConfig>): Promise<void> {
    return this.controller.updateBackendConfig(name, config);
  }
  deleteBackend(name: string, options?: DeleteBackendOptions): Promise<void> {
    return this.controller.deleteBackend(name, options);
  }
  async listReplicas(backend: string): Promise<ReplicaInfo[]> {
    return this.controller.listReplicas(backend);
  }
  createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    return this.controller.createEndpoint(name, options);
  }
  async listEndpoints(): Promise<Record<string, EndpointInfo>> {
    return this.controller.listEndpoints();
  }
  deleteEndpoint(name: string): Promise<void> {
    return this.controller.deleteEndpoint(name);
  }
  setTraffic(endpoint: string, weights: Record<string, number>): Promise<void> {
    return this.controller.setTraffic(endpoint, weights);
  }
  shadowTraffic(endpoint: string, backend: string, proportion: number): Promise<void> {
    return this.controller.shadowTraffic(endpoint, backend, proportion);
  }
  async getShadowStats(endpoint: string): Promise<Record<string, ShadowStats>> {
    if (!this.controller.hasEndpoint(endpoint)) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${endpoint}' does not exist`);
    return this.dispatcher.shadows.stats(endpoint);
  }
  getHandle(endpoint: string, options: HandleOptions = {}): ServeHandle {
    if (!this.controller.hasEndpoint(endpoint)) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${endpoint}' does not exist`);
    return new ServeHandle(this.dispatcher, endpoint, options);
  }
  shutdown(): Promise<void> {
    return this.shutdownAll();
  }
}
