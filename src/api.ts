import type { ConfigOverrides } from './config/config.js';

/** How a backend serves. Every field has a default; docs/api.md describes each. */
export interface BackendConfig {
  /** Replicas (containers) to run; 0 parks the backend. Default 1. */
  numReplicas: number;
  /** Requests one replica serves at once; more wait in the proxy's queue. Default 100. */
  maxConcurrentQueries: number;
  /** Passed to the class's reconfigure(userConfig) at start and on every change; null for none. Default null. */
  userConfig: unknown;
  /** Largest batch handed to a handler that accepts batches; 1 turns batching off. Default 1. */
  maxBatchSize: number;
  /** How long a batch waits to fill after its first request. Default 0. */
  batchWaitTimeoutS: number;
  /** Requests that may wait when every replica is full; beyond that 503 QUEUE_FULL. Default 1000. */
  maxQueuedRequests: number;
  /** Longest a request may take, queueing included, before 504; null for no limit. Default null. */
  requestTimeoutS: number | null;
  /** How long a stopping replica may finish its requests before it is killed. Default 20. */
  gracefulShutdownTimeoutS: number;
  /**
   * Scale the replica count on load instead of a fixed numReplicas (docs/autoscaling.md); null for a fixed count.
   * With it, numReplicas is the count the autoscaler last decided. Default null.
   */
  autoscaling: AutoscalingConfig | null;
}

/** What createBackend and updateBackendConfig take: any BackendConfig fields, and of an autoscaling block any of its fields. */
export type BackendConfigPatch = Partial<Omit<BackendConfig, 'autoscaling'>> & { autoscaling?: Partial<AutoscalingConfig> | null };

/** Ray Serve 2.x's AutoscalingConfig, camelCase (docs/autoscaling.md); every field has a default. */
export interface AutoscalingConfig {
  /** Fewest replicas; 0 lets the backend scale to zero when idle. Default 1. */
  minReplicas: number;
  /** Replicas the backend starts with; null for minReplicas. Default null. */
  initialReplicas: number | null;
  /** Most replicas (the machine's capacity may cap it lower). Default 1. */
  maxReplicas: number;
  /** Ongoing requests (queued and in flight) per replica the autoscaler aims for. Default 2. */
  targetOngoingRequests: number;
  /** Seconds between samples of the ongoing requests. Default 0.5 (Ray Serve: 10; see docs/autoscaling.md). */
  metricsIntervalS: number;
  /** Seconds of samples averaged for a decision. Default 30. */
  lookBackPeriodS: number;
  /** Gain applied to every decision when upscalingFactor or downscalingFactor is not set. Default 1. */
  smoothingFactor: number;
  /** Gain applied to scale-up decisions (e.g. 0.5 adds half of the missing replicas); null for smoothingFactor. Default null. */
  upscalingFactor: number | null;
  /** Gain applied to scale-down decisions; null for smoothingFactor. Default null. */
  downscalingFactor: number | null;
  /** Seconds the load must call for more replicas before they start. Default 30. */
  upscaleDelayS: number;
  /** Seconds the load must call for fewer replicas before any stops. Default 600. */
  downscaleDelayS: number;
  /** Seconds before the last replica stops (1 → 0); null for downscaleDelayS. Default null. */
  downscaleToZeroDelayS: number | null;
}

/** What the autoscaler of a backend sees and decided (BackendInfo.autoscalingStatus). */
export interface AutoscalingStatus {
  /** The count the policy asks for now, before its delays and the machine's capacity. */
  wantedReplicas: number;
  /** The count the controller converges on (BackendConfig.numReplicas). */
  targetReplicas: number;
  /** Replicas ready to serve. */
  runningReplicas: number;
  /** Ongoing requests (queued and in flight, front door and handles), averaged over lookBackPeriodS. */
  ongoingRequests: number;
  /** Why the target is not the wanted count yet: a delay running, or capacity (wanted N, only room for M); null when it is. */
  heldBack: { by: 'upscale-delay' | 'downscale-delay' | 'capacity'; message: string } | null;
  lastDecision: AutoscalingDecision | null;
}

export interface AutoscalingDecision {
  /** ISO 8601 time of the decision. */
  time: string;
  from: number;
  to: number;
  direction: 'up' | 'down';
  reason: string;
}

export interface ReplicaInfo {
  id: string;
  /** docs/operations.md: starting → ready (↔ updating, taking a new live config) → draining, or failed (being replaced). */
  state: 'starting' | 'ready' | 'updating' | 'draining' | 'failed';
  containerId: string;
  /** ISO 8601 time the container was started. */
  startedAt: string;
  /** How many replicas failed before this one in its place. */
  restarts: number;
  /** Why its predecessor failed, if it replaced one. */
  lastError: string | null;
  placement: ReplicaPlacement;
  /** The version it runs (BackendInfo.version of the backend when it started). */
  version: string;
}

/**
 * The backend's latest rolling update (docs/rollout.md): 'rolling' (new replicas start beside the old ones),
 * 'in-place' (no room to surge: one old replica stops before each new one starts), 'paused' (a new replica failed
 * and rolloutOnFailure is 'pause'), 'rolling-back', 'rolled-back' or 'completed'.
 */
export interface RolloutStatus {
  state: 'rolling' | 'in-place' | 'paused' | 'rolling-back' | 'rolled-back' | 'completed';
  fromVersion: string;
  targetVersion: string;
  /** Why it paused or rolled back. */
  reason: string | null;
}

export interface DeleteBackendOptions {
  /** Stop the replicas at once instead of letting in-flight requests finish. */
  force?: boolean;
}

/** What goes into a backend's image (docs/environments.md). */
export interface RuntimeEnv {
  /** The replica runtime: 'node' (default) or 'python' (import paths such as 'model.py:Predictor'). */
  runtime?: 'node' | 'python';
  /**
   * A directory (relative to the caller's working directory) whose files become the image's /app, honouring its
   * .dockerignore. Node: a package.json's dependencies are installed. Python: apt.txt and requirements.txt are.
   */
  context?: string;
  /** npm packages to install for a Node backend, e.g. { 'is-number': '^7.0.0' }. */
  packages?: Record<string, string>;
  /** A Dockerfile in `context` that makes the backend's base image; Flotilla adds its runtime on top. */
  dockerfile?: string;
  /** Build args for `dockerfile` (FLOTILLA_BASE_IMAGE is always passed). */
  buildArgs?: Record<string, string>;
  /** A prebuilt image on the engine, used as it is: one with the replica runtime, or any HTTP server with `port`. */
  image?: string;
  /** With `image`: the port of an HTTP server that does not speak the replica protocol (no reconfigure, no batching). */
  port?: number;
  /** With `port`: a path that answers 2xx or 3xx while the container is healthy. Default '/'. */
  healthPath?: string;
  /** Python only: pip requirement lines installed into the image, beside the context's requirements.txt. */
  pip?: string[];
  /** Python only: Debian packages installed into the image, beside the context's apt.txt. */
  apt?: string[];
}

/** What each replica of a backend reserves and gets, and how its container is confined. */
export interface ReplicaResources {
  /** CPUs the replica reserves: scheduling and its CPU shares (1024 per CPU), not a cap. Fractions allowed. Default 1. */
  numCpus: number;
  /** A hard cap in CPUs (a CFS quota), at least numCpus; none unless given. */
  cpuLimit?: number;
  /** Memory limit in MB, with no swap; null for no limit. Default null. */
  memoryMb: number | null;
  /** GPUs: a whole number, or a fraction below 1 that shares a device. Default 0. */
  numGpus: number;
  /** Extra environment variables; OMP_NUM_THREADS is 1 unless set here. */
  env: Record<string, string>;
  /** false lets the replica write to its root filesystem; by default it is read-only, with a tmpfs /tmp. */
  readOnlyRootfs?: boolean;
  /** 'isolated' (default): a bridge network without traffic between containers; 'none': no network (unix transport only). */
  network?: 'isolated' | 'none';
  /** A plain HTTP container (runtimeEnv.port) runs as replicaUser unless this is true: then as its image's USER. */
  runAsImageUser?: boolean;
  /**
   * Cluster only (runtime swarm): every one must hold on the node a replica goes to, as in Swarm's
   * `node.hostname==gpu-1`, `node.role!=manager`, `node.labels.zone==a`.
   */
  placementConstraints?: string[];
}

export interface ReplicaOptions extends Partial<ReplicaResources> {
  runtimeEnv?: RuntimeEnv;
}

/** Where a replica was placed. */
export interface ReplicaPlacement {
  cpus: number;
  memoryMb: number | null;
  gpuIds: string[];
  /** Share of each listed GPU the replica holds. */
  gpuShare: number;
  /** The cluster node it runs on (runtime swarm). */
  node?: string;
}

/** What a backend serves: an import path inside its image, or a function or class shipped as source. */
export type DefinitionSummary =
  { kind: 'import'; module: string; exportName: string } | { kind: 'function' | 'class'; name: string; sourceHash: string };

/** A backend's config, with what it serves and the resources each of its replicas reserves. */
export type BackendInfo = BackendConfig & {
  definition: DefinitionSummary;
  initArgs: unknown[];
  runtimeEnv: RuntimeEnv;
  resources: ReplicaResources;
  /** A hash of what its replicas run: image, definition, initArgs, resources; a change is rolled out replica by replica. */
  version: string;
  /** The hash of the files under runtimeEnv.context its image was built from (null without a context). */
  contextDigest: string | null;
  rollout: RolloutStatus | null;
  /** What the autoscaler sees and decided; null for a backend with a fixed numReplicas. */
  autoscalingStatus: AutoscalingStatus | null;
};

export interface CreateBackendOptions {
  /** Constructor arguments of a class backend; JSON values only. */
  initArgs?: unknown[];
  config?: BackendConfigPatch;
  replicaOptions?: ReplicaOptions;
}

/** What a Node handler receives: a fetch Request, with a variable route's path parameters ('/api/{username}') in `params`. */
export type ServeRequest = Request & { readonly params: Record<string, string> };

/* eslint-disable @typescript-eslint/no-explicit-any */
/** A function, a class whose instances have `call(request)`, or 'path/in/image.js:Export'; handle arguments calls pass their own arguments. */
export type BackendDefinition =
  | ((request: ServeRequest) => unknown)
  | ((requests: ServeRequest[]) => unknown)
  | ((...args: any[]) => unknown)
  | (new (...args: any[]) => object)
  | string;
/* eslint-enable @typescript-eslint/no-explicit-any */

export interface CreateEndpointOptions {
  backend: string;
  /** HTTP route, e.g. '/simple'; omit for an endpoint reached only through handles. */
  route?: string;
  /** Default ['GET']. */
  methods?: string[];
  /** HTTP callers may choose a class method with X-SERVE-CALL-METHOD (Ray 1.x); off by default, refused with 400 then. */
  allowCallMethod?: boolean;
}

export interface EndpointInfo {
  route: string | null;
  methods: string[];
  traffic: Record<string, number>;
  shadows: Record<string, number>;
  /** Present (true) only when the endpoint lets HTTP callers choose a method with X-SERVE-CALL-METHOD. */
  allowCallMethod?: true;
}

export interface HandleOptions {
  /** Method of a class backend to call instead of `call`. */
  methodName?: string;
  /** Requests with the same key reach the same backend while the traffic policy stays the same (like X-Serve-Shard-Key). */
  shardKey?: string;
}

export interface LatencySummary {
  p50: number | null;
  p99: number | null;
}

/** How a shadow backend's answers compared with the primary's, since the shadow was set. */
export interface ShadowStats {
  /** Copies sent to the shadow. */
  sent: number;
  /** Copies not sent because the shadow backend was saturated or had no replica. */
  dropped: number;
  /** Copies whose connection to the shadow failed or timed out. */
  failed: number;
  /** Copies whose answer was compared with the primary's. */
  compared: number;
  matches: number;
  statusMismatches: number;
  bodyMismatches: number;
  primaryLatencyMs: LatencySummary;
  shadowLatencyMs: LatencySummary;
}

/** A Flotilla's resource books (docs/resources.md#capacity). */
export interface CapacityInfo {
  /** What replicas may reserve in all: cpuCapacity, memoryCapacityMb and the GPU inventory's ids. */
  total: { cpus: number; memoryMb: number; gpus: string[] };
  /** What no replica reserves now: CPUs, MB, and each GPU's free share by id. */
  free: { cpus: number; memoryMb: number; gpus: Record<string, number> };
}

/** An image build under way for a backend (docs/admin-api.md). */
export interface BuildInfo {
  backend: string;
  image: string;
  /** The build's last step line (e.g. "Step 3/7 : RUN npm ci"); null before its first. */
  step: string | null;
  startedAt: string;
}

/** What an event is about; docs/admin-api.md lists when each is recorded. */
export type EventKind =
  | 'backend.created'
  | 'backend.updated'
  | 'backend.scaled'
  | 'backend.reconfigured'
  | 'backend.deleted'
  | 'endpoint.created'
  | 'endpoint.deleted'
  | 'traffic.set'
  | 'shadow.set'
  | 'replica.started'
  | 'replica.ready'
  | 'replica.failed'
  | 'replica.replaced'
  | 'replica.stopped'
  | 'rollout.started'
  | 'rollout.failed'
  | 'rollout.completed'
  | 'rollout.rolled-back'
  | 'autoscaling.decided'
  | 'autoscaling.capped';

/** One entry of the control plane's event history. */
export interface FlotillaEvent {
  /** Increases by one with each event of this instance, across restarts. */
  seq: number;
  /** ISO 8601 time it was recorded. */
  time: string;
  kind: EventKind;
  backend?: string;
  endpoint?: string;
  replica?: string;
  message: string;
}

export interface EventQuery {
  /** Only events after this seq, oldest first; without it, the newest ones. */
  since?: number;
  /** At most this many (default 100, at most 1000). */
  limit?: number;
}

export interface EventPage {
  events: FlotillaEvent[];
  /** The seq of the newest event kept (0 when there is none): pass it as `since` to wait for what comes next. */
  latest: number;
}

export interface ServeHandle {
  readonly endpoint: string;
  /**
   * Calls the endpoint's backend with `body` as the request body; resolves to the handler's value. With two or more
   * arguments (JSON values), the method is called with those arguments instead of a request (Ray 1.x's
   * `handle.remote(*args)`, docs/api.md#handle-arguments).
   */
  remote(...args: unknown[]): Promise<unknown>;
  /**
   * Calls the endpoint's backend and yields its answer as it comes: text as strings, NDJSON as one value a line,
   * anything else as Buffers (docs/streaming.md). Leaving the loop early ends the handler's stream.
   */
  stream(body?: unknown): AsyncIterable<unknown>;
  options(options: HandleOptions): ServeHandle;
}

export interface Client {
  /** Base URL of the HTTP front door, e.g. http://127.0.0.1:8000. */
  readonly httpUrl: string;
  createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void>;
  listBackends(): Promise<Record<string, BackendInfo>>;
  getBackendConfig(name: string): Promise<BackendInfo>;
  updateBackendConfig(name: string, config: BackendConfigPatch): Promise<void>;
  /**
   * Redeploys a backend with a new definition and options (checked as createBackend checks them). A new version is
   * rolled out replica by replica while the backend serves; resolves when it completes, rejects with ROLLOUT_FAILED
   * once it rolled back (or paused). Only config changes are applied as updateBackendConfig applies them.
   */
  updateBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void>;
  deleteBackend(name: string, options?: DeleteBackendOptions): Promise<void>;
  listReplicas(backend: string): Promise<ReplicaInfo[]>;
  /** What replicas may reserve on this Flotilla, and what is free of it now. */
  getCapacity(): Promise<CapacityInfo>;
  /** The image builds under way, with the step each is at. */
  listBuilds(): Promise<BuildInfo[]>;
  createEndpoint(name: string, options: CreateEndpointOptions): Promise<void>;
  listEndpoints(): Promise<Record<string, EndpointInfo>>;
  /** Splits the endpoint's requests over backends by weight; weights are >= 0 and sum to 1. */
  setTraffic(endpoint: string, weights: Record<string, number>): Promise<void>;
  /** Also sends `proportion` (0 to 1) of the endpoint's requests to `backend`; 0 removes the shadow. */
  shadowTraffic(endpoint: string, backend: string, proportion: number): Promise<void>;
  /** Comparison counts per shadow backend of the endpoint. */
  getShadowStats(endpoint: string): Promise<Record<string, ShadowStats>>;
  deleteEndpoint(name: string): Promise<void>;
  getHandle(endpoint: string): ServeHandle;
  /** The control plane's recent events: what was created, changed, scaled, started, failed or replaced. */
  listEvents(query?: EventQuery): Promise<EventPage>;
  shutdown(): Promise<void>;
}

export type StartOptions = ConfigOverrides & {
  /** Run the control plane in a background process that outlives the caller; returns a remote client. */
  detached?: boolean;
};

export interface ConnectOptions {
  /** Base URL of a Flotilla admin API, e.g. http://127.0.0.1:8001. */
  address: string;
  /**
   * Required when the admin API has a token, unless `address` is on this machine (loopback): then the token the
   * control plane generated is read from `<stateDir>/admin/<instance>.token`.
   */
  token?: string;
  /** Whose generated token to read; default the configured instance (FLOTILLA_INSTANCE, else 'default'). */
  instance?: string;
  /** Where to read it; default the configured state directory (FLOTILLA_STATE_DIR, else ~/.flotilla). */
  stateDir?: string;
}
