import type {
  BackendConfig,
  BackendDefinition,
  BackendInfo,
  Client,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
  ReplicaInfo,
  ShadowStats,
  StartOptions,
} from './api.js';
import { systemClock } from './common/clock.js';
import { FlotillaError } from './common/errors.js';
import { createLogger } from './common/logger.js';
import { loadConfig } from './config/config.js';
import { Controller } from './controller/controller.js';
import { Scheduler } from './controller/scheduler.js';
import { ServeHandle } from './handle/serve-handle.js';
import { Dispatcher } from './proxy/dispatcher.js';
import { ProxyServer } from './proxy/proxy-server.js';
import { DockerRuntime } from './runtime/docker-runtime.js';
import { ImageBuilder } from './runtime/image-builder.js';
import { machineCapacity } from './runtime/machine.js';

/** The client of a Flotilla running in this process: controller, front door and handles. */
class LocalClient implements Client {
  constructor(
    readonly httpUrl: string,
    private readonly controller: Controller,
    private readonly dispatcher: Dispatcher,
    private readonly proxy: ProxyServer,
  ) {}

  createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
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
  getHandle(endpoint: string): ServeHandle {
    if (!this.controller.hasEndpoint(endpoint)) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${endpoint}' does not exist`);
    return new ServeHandle(this.dispatcher, endpoint);
  }
  async shutdown(): Promise<void> {
    const graceS = Math.max(0, ...Object.values(this.controller.listBackends()).map((c) => c.gracefulShutdownTimeoutS));
    await this.proxy.close(graceS * 1000);
    await this.controller.shutdown();
    this.dispatcher.close();
  }
}

/** Starts Flotilla in this process: checks the engine, clears leftovers, opens the front door. */
export async function start(options: StartOptions = {}): Promise<Client> {
  const config = loadConfig(options);
  const logger = createLogger(config.logLevel).child({ instance: config.instance });
  const runtime = new DockerRuntime(config.dockerSocket);
  await runtime.ping();
  const dispatcher = new Dispatcher(() => void controller.tick());
  const controller = new Controller({
    config,
    runtime,
    images: new ImageBuilder(runtime, config, logger),
    scheduler: new Scheduler(machineCapacity(config)),
    dispatcher,
    logger,
    clock: systemClock,
  });
  await controller.init();
  const proxy = new ProxyServer(dispatcher, config.http.maxBodyBytes, logger);
  const address = await proxy.listen(config.http.host, config.http.port);
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return new LocalClient(`http://${host}:${address.port}`, controller, dispatcher, proxy);
}
