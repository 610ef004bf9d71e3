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

/** A value as JSON for an event's message, cut at 200 characters. */
function brief(value: unknown): string {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
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
    await this.controller.createBackend(name, definition, options);
    const numReplicas = (await this.listBackends())[name]?.numReplicas ?? 0;
    this.events.record('backend.created', { backend: name }, `backend ${name} created with ${numReplicas} replica(s)`);
  }
  async listBackends(): Promise<Record<string, BackendInfo>> {
    return this.controller.listBackends();
  }
  async getBackendConfig(name: string): Promise<BackendInfo> {
    return this.controller.getBackendConfig(name);
  }
  async updateBackendConfig(name: string, config: BackendConfigPatch): Promise<void> {
    const before = (await this.listBackends())[name];
    await this.controller.updateBackendConfig(name, config);
    const { numReplicas, userConfig, ...rest } = config;
    if (numReplicas !== undefined && numReplicas !== before?.numReplicas)
      this.events.record(
        'backend.scaled',
        { backend: name },
        `backend ${name} scaled from ${before?.numReplicas} to ${numReplicas} replica(s)`,
      );
    if ('userConfig' in config)
      this.events.record('backend.reconfigured', { backend: name }, `backend ${name} reconfigured: userConfig ${brief(userConfig)}`);
    const changed = Object.keys(rest).filter(
      (key) => JSON.stringify(rest[key as keyof typeof rest]) !== JSON.stringify(before?.[key as keyof typeof rest]),
    );
    if (changed.length > 0)
      this.events.record(
        'backend.updated',
        { backend: name },
        `backend ${name} updated: ${changed.map((key) => `${key} ${brief(rest[key as keyof typeof rest])}`).join(', ')}`,
      );
  }
  async updateBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    return this.updateShippedBackend(name, toShippable(definition), withAbsoluteContext(options));
  }
  updateShippedBackend(name: string, definition: ShippableDefinition, options?: unknown): Promise<void> {
    return this.controller.updateBackend(name, definition, options);
  }
  async deleteBackend(name: string, options?: DeleteBackendOptions): Promise<void> {
    await this.controller.deleteBackend(name, options);
    this.events.record('backend.deleted', { backend: name }, `backend ${name} deleted${options?.force === true ? ' (forced)' : ''}`);
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
    await this.controller.createEndpoint(name, options);
    const where = options.route === undefined ? 'for handles only' : `at ${options.route}`;
    this.events.record(
      'endpoint.created',
      { endpoint: name, backend: options.backend },
      `endpoint ${name} created ${where}, serving ${options.backend}`,
    );
  }
  async listEndpoints(): Promise<Record<string, EndpointInfo>> {
    return this.controller.listEndpoints();
  }
  async deleteEndpoint(name: string): Promise<void> {
    await this.controller.deleteEndpoint(name);
    this.events.record('endpoint.deleted', { endpoint: name }, `endpoint ${name} deleted`);
  }
  async setTraffic(endpoint: string, weights: Record<string, number>): Promise<void> {
    await this.controller.setTraffic(endpoint, weights);
    const split = Object.entries(weights).map(([backend, weight]) => `${backend} ${weight}`);
    this.events.record('traffic.set', { endpoint }, `endpoint ${endpoint} traffic: ${split.join(', ')}`);
  }
  async shadowTraffic(endpoint: string, backend: string, proportion: number): Promise<void> {
    await this.controller.shadowTraffic(endpoint, backend, proportion);
    const what = proportion === 0 ? `no longer shadows to ${backend}` : `shadows ${proportion} of its requests to ${backend}`;
    this.events.record('shadow.set', { endpoint, backend }, `endpoint ${endpoint} ${what}`);
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
