import type { BackendConfig, CreateEndpointOptions, ReplicaResources } from '../api.js';
import { validateRuntimeEnv, type ValidatedRuntimeEnv } from './runtime-env.js';
import { invalid, isPlainObject } from '../common/checks.js';

export const DEFAULT_BACKEND_CONFIG: BackendConfig = {
  numReplicas: 1,
  maxConcurrentQueries: 100,
  userConfig: null,
  maxBatchSize: 1,
  batchWaitTimeoutS: 0,
  maxQueuedRequests: 1000,
  requestTimeoutS: null,
  gracefulShutdownTimeoutS: 20,
};

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const ROUTE = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/;
const MAX_REPLICAS = 1000;

function checkKeys(value: unknown, allowed: readonly string[], what: string): Record<string, unknown> {
  if (!isPlainObject(value)) throw invalid(`${what} must be an object`);
  const unknown = Object.keys(value).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw invalid(`${what} has unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; allowed: ${allowed.join(', ')}`);
  }
  return value;
}

export function validateName(name: unknown, kind: 'backend' | 'endpoint'): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw invalid(`${kind} name ${JSON.stringify(name)} is invalid: use 1-63 letters, digits, '_' or '-', starting with a letter or digit`);
  }
  return name;
}

/** '/a/' and '/a' are the same route; '/-/' is reserved for Flotilla's own paths. */
export function validateRoute(route: unknown): string {
  if (typeof route !== 'string' || !route.startsWith('/')) {
    throw invalid(`route ${JSON.stringify(route)} is invalid: a route is a path starting with '/'`);
  }
  if (!ROUTE.test(route) || route.includes('//')) {
    throw invalid(`route '${route}' is invalid: use a plain URL path without query, fragment, spaces or empty segments`);
  }
  const normalized = route.length > 1 ? route.replace(/\/+$/, '') : route;
  if (normalized === '/-' || normalized.startsWith('/-/')) throw invalid(`route '${route}' is reserved for Flotilla ('/-/...')`);
  return normalized;
}

export function validateMethods(methods: unknown): string[] {
  if (methods === undefined) return ['GET'];
  if (!Array.isArray(methods) || methods.length === 0) throw invalid('methods must be a non-empty array of HTTP methods');
  const normalized = methods.map((method) => {
    const upper = typeof method === 'string' ? method.toUpperCase() : '';
    if (!(HTTP_METHODS as readonly string[]).includes(upper)) {
      throw invalid(`${JSON.stringify(method)} is not an HTTP method; use one of ${HTTP_METHODS.join(', ')}`);
    }
    return upper;
  });
  return [...new Set(normalized)];
}

function integerIn(min: number, max: number) {
  return (value: unknown, key: string): number => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw invalid(`config.${key} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
    }
    return value;
  };
}

function secondsIn(min: number, max: number, exclusiveMin = false) {
  return (value: unknown, key: string): number => {
    const low = exclusiveMin ? typeof value === 'number' && value > min : typeof value === 'number' && value >= min;
    if (typeof value !== 'number' || !Number.isFinite(value) || !low || value > max) {
      throw invalid(
        `config.${key} must be a number of seconds ${exclusiveMin ? 'above' : 'from'} ${min} ${exclusiveMin ? 'up ' : ''}to ${max}, got ${JSON.stringify(value)}`,
      );
    }
    return value;
  };
}

const CONFIG_FIELDS: { [K in keyof BackendConfig]: (value: unknown, key: string) => BackendConfig[K] } = {
  numReplicas: integerIn(0, MAX_REPLICAS),
  maxConcurrentQueries: integerIn(1, 1_000_000),
  userConfig: (value, key) => {
    if (!isJsonValue(value)) throw invalid(`config.${key} must be a JSON value (or null for none)`);
    return value;
  },
  maxBatchSize: integerIn(1, 10_000),
  batchWaitTimeoutS: secondsIn(0, 3600),
  maxQueuedRequests: integerIn(0, 1_000_000),
  requestTimeoutS: (value, key) => (value === null ? null : secondsIn(0, 86_400, true)(value, key)),
  gracefulShutdownTimeoutS: secondsIn(0, 3600),
};

/** Checks a partial BackendConfig: unknown keys and bad values are refused. */
export function validateConfigPatch(patch: unknown): Partial<BackendConfig> {
  const value = checkKeys(patch ?? {}, Object.keys(CONFIG_FIELDS), 'config');
  const result: Record<string, unknown> = {};
  for (const [key, check] of Object.entries(CONFIG_FIELDS)) {
    if (value[key] !== undefined) result[key] = check(value[key], key);
  }
  return result as Partial<BackendConfig>;
}

function isJsonValue(value: unknown): boolean {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(isJsonValue);
  return isPlainObject(value) && Object.values(value).every(isJsonValue);
}

export interface ValidatedBackendOptions {
  initArgs: unknown[];
  config: BackendConfig;
  contextDir: string | undefined;
  runtimeEnv: ValidatedRuntimeEnv;
  resources: ReplicaResources;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MANAGED_ENV = /^(FLOTILLA_|NVIDIA_VISIBLE_DEVICES$)/;

/** numCpus (default 1), memoryMb (default none), numGpus (whole numbers, or a fraction below 1) and env. */
export function validateResources(replicaOptions: Record<string, unknown>): ReplicaResources {
  const { numCpus = 1, memoryMb = null, numGpus = 0, env = {} } = replicaOptions;
  if (typeof numCpus !== 'number' || !Number.isFinite(numCpus) || numCpus < 0 || numCpus > 1024) {
    throw invalid(`replicaOptions.numCpus must be a number of CPUs from 0 to 1024 (fractions allowed), got ${JSON.stringify(numCpus)}`);
  }
  if (memoryMb !== null && (typeof memoryMb !== 'number' || !Number.isInteger(memoryMb) || memoryMb < 6)) {
    throw invalid(`replicaOptions.memoryMb must be a whole number of megabytes, at least 6, got ${JSON.stringify(memoryMb)}`);
  }
  const wholeOrFraction = typeof numGpus === 'number' && (Number.isInteger(numGpus) ? numGpus >= 0 : numGpus > 0 && numGpus < 1);
  if (!wholeOrFraction || (numGpus as number) > 64) {
    throw invalid(`replicaOptions.numGpus must be a whole number of GPUs or a fraction below 1 (e.g. 0.5), got ${JSON.stringify(numGpus)}`);
  }
  if (!isPlainObject(env)) throw invalid('replicaOptions.env must be an object of environment variable names to string values');
  for (const [name, value] of Object.entries(env)) {
    if (!ENV_NAME.test(name)) throw invalid(`replicaOptions.env: '${name}' is not a valid environment variable name`);
    if (MANAGED_ENV.test(name)) throw invalid(`replicaOptions.env: '${name}' is set by Flotilla and cannot be overridden`);
    if (typeof value !== 'string') throw invalid(`replicaOptions.env.${name} must be a string, got ${JSON.stringify(value)}`);
  }
  return {
    numCpus,
    memoryMb: memoryMb as number | null,
    numGpus: numGpus as number,
    env: { ...(env as Record<string, string>) },
    ...validateConfinement(replicaOptions),
  };
}

const NETWORKS = ['isolated', 'none'] as const;

/** readOnlyRootfs, network and runAsImageUser: kept only when given, so that defaults apply otherwise. */
function validateConfinement(
  replicaOptions: Record<string, unknown>,
): Pick<ReplicaResources, 'readOnlyRootfs' | 'network' | 'runAsImageUser'> {
  const { readOnlyRootfs, network, runAsImageUser } = replicaOptions;
  if (readOnlyRootfs !== undefined && typeof readOnlyRootfs !== 'boolean') {
    throw invalid(
      `replicaOptions.readOnlyRootfs must be true or false (false: the replica may write to its root filesystem), got ${JSON.stringify(readOnlyRootfs)}`,
    );
  }
  if (network !== undefined && !(NETWORKS as readonly unknown[]).includes(network)) {
    throw invalid(`replicaOptions.network must be 'isolated' or 'none' (no network; unix transport only), got ${JSON.stringify(network)}`);
  }
  if (runAsImageUser !== undefined && typeof runAsImageUser !== 'boolean') {
    throw invalid(`replicaOptions.runAsImageUser must be true or false, got ${JSON.stringify(runAsImageUser)}`);
  }
  return {
    ...(readOnlyRootfs === undefined ? {} : { readOnlyRootfs }),
    ...(network === undefined ? {} : { network: network as 'isolated' | 'none' }),
    ...(runAsImageUser === undefined ? {} : { runAsImageUser }),
  };
}

export function validateBackendOptions(options: unknown): ValidatedBackendOptions {
  const value = checkKeys(options ?? {}, ['initArgs', 'config', 'replicaOptions'], 'createBackend options');
  const initArgs = value.initArgs ?? [];
  if (!Array.isArray(initArgs) || !isJsonValue(initArgs)) {
    throw invalid('initArgs must be an array of JSON values (strings, numbers, booleans, null, arrays, plain objects)');
  }
  const config = { ...DEFAULT_BACKEND_CONFIG, ...validateConfigPatch(value.config) };
  const replicaOptions = checkKeys(
    value.replicaOptions ?? {},
    ['runtimeEnv', 'numCpus', 'memoryMb', 'numGpus', 'env', 'readOnlyRootfs', 'network', 'runAsImageUser'],
    'replicaOptions',
  );
  const runtimeEnv = validateRuntimeEnv(replicaOptions.runtimeEnv);
  const resources = validateResources(replicaOptions);
  if (runtimeEnv.port !== undefined && resources.network === 'none') {
    throw invalid(
      "replicaOptions.network 'none' needs the replica protocol over a unix socket; a plain HTTP container (runtimeEnv.port) needs a network",
    );
  }
  if (runtimeEnv.port === undefined && resources.runAsImageUser !== undefined) {
    throw invalid(
      'replicaOptions.runAsImageUser is for plain HTTP containers (runtimeEnv.image and port); protocol replicas always run as replicaUser',
    );
  }
  return { initArgs, config, contextDir: runtimeEnv.context, runtimeEnv, resources };
}

export function validateEndpointOptions(options: unknown): { backend: string; route: string | null; methods: string[] } {
  const value = checkKeys(options, ['backend', 'route', 'methods'], 'createEndpoint options') as Partial<CreateEndpointOptions>;
  return {
    backend: validateName(value.backend, 'backend'),
    route: value.route === undefined ? null : validateRoute(value.route),
    methods: validateMethods(value.methods),
  };
}

const WEIGHT_SUM_TOLERANCE = 1e-8;

/** Traffic weights: a non-empty map of backend names to numbers >= 0 that sum to 1. */
export function validateTraffic(weights: unknown): Record<string, number> {
  if (!isPlainObject(weights) || Object.keys(weights).length === 0) {
    throw invalid('traffic must be an object mapping backend names to weights, e.g. { v1: 0.9, v2: 0.1 }');
  }
  for (const [backend, weight] of Object.entries(weights)) {
    validateName(backend, 'backend');
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) {
      throw invalid(`traffic weight of '${backend}' must be a number >= 0, got ${JSON.stringify(weight)}`);
    }
  }
  const sum = Object.values(weights as Record<string, number>).reduce((a, b) => a + b, 0);
  if (Math.abs(sum - 1) > WEIGHT_SUM_TOLERANCE) throw invalid(`traffic weights must sum to 1, they sum to ${sum}`);
  return { ...(weights as Record<string, number>) };
}

export function validateProportion(proportion: unknown): number {
  if (typeof proportion !== 'number' || !Number.isFinite(proportion) || proportion < 0 || proportion > 1) {
    throw invalid(`shadow proportion must be a number from 0 to 1, got ${JSON.stringify(proportion)}`);
  }
  return proportion;
}
