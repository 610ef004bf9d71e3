import type { ConfigOverrides } from './config/config.js';

/** How a backend serves: replicas, concurrency. Every field has a default. */
export interface BackendConfig {
  /** Replicas (containers) to run; 0 parks the backend. Default 1. */
  numReplicas: number;
  /** Requests one replica serves at once; more wait in the proxy's queue. Default 100. */
  maxConcurrentQueries: number;
}

export interface RuntimeEnv {
  /** A directory whose files become the image's /app (relative to the caller's working directory). */
  context?: string;
}

export interface ReplicaOptions {
  runtimeEnv?: RuntimeEnv;
}

export interface CreateBackendOptions {
  /** Constructor arguments of a class backend; JSON values only. */
  initArgs?: unknown[];
  config?: Partial<BackendConfig>;
  replicaOptions?: ReplicaOptions;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
/** A function, a class whose instances have `call(request)`, or 'path/in/image.js:Export'. */
export type BackendDefinition = ((request: Request) => unknown) | (new (...args: any[]) => object) | string;
/* eslint-enable @typescript-eslint/no-explicit-any */

export interface CreateEndpointOptions {
  backend: string;
  /** HTTP route, e.g. '/simple'; omit for an endpoint reached only through handles. */
  route?: string;
  /** Default ['GET']. */
  methods?: string[];
}

export interface EndpointInfo {
  route: string | null;
  methods: string[];
  traffic: Record<string, number>;
  shadows: Record<string, number>;
}

export interface HandleOptions {
  /** Method of a class backend to call instead of `call`. */
  methodName?: string;
}

export interface ServeHandle {
  readonly endpoint: string;
  /** Calls the endpoint's backend with `body` as the request body; resolves to the handler's value. */
  remote(body?: unknown): Promise<unknown>;
  options(options: HandleOptions): ServeHandle;
}

export interface Client {
  /** Base URL of the HTTP front door, e.g. http://127.0.0.1:8000. */
  readonly httpUrl: string;
  createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void>;
  listBackends(): Promise<Record<string, BackendConfig>>;
  getBackendConfig(name: string): Promise<BackendConfig>;
  updateBackendConfig(name: string, config: Partial<BackendConfig>): Promise<void>;
  deleteBackend(name: string): Promise<void>;
  createEndpoint(name: string, options: CreateEndpointOptions): Promise<void>;
  listEndpoints(): Promise<Record<string, EndpointInfo>>;
  deleteEndpoint(name: string): Promise<void>;
  getHandle(endpoint: string): ServeHandle;
  shutdown(): Promise<void>;
}

export type StartOptions = ConfigOverrides;
