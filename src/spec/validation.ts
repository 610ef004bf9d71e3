/**
 * The rules of every API argument. Each validate* function checks all of its
 * argument and throws one INVALID_ARGUMENT whose `details.issues` lists every
 * problem as `{ path, message }` (common/issues.ts), the path relative to the
 * argument it checks; the admin API, the CLI and the in-process client share them.
 */
import type { AutoscalingConfig, BackendConfig, CreateEndpointOptions, ReplicaResources } from '../api.js';
import { PLACEMENT_CONSTRAINT } from '../resources/scheduler.js';
import { checkRuntimeEnv, type ValidatedRuntimeEnv } from './runtime-env.js';
import { isPlainObject } from '../common/checks.js';
import { checked, type Issues } from '../common/issues.js';
import { didYouMean } from '../common/closest.js';
import { ROUTE_PARAM } from './routes.js';

export const DEFAULT_BACKEND_CONFIG: BackendConfig = {
  numReplicas: 1,
  maxConcurrentQueries: 100,
  userConfig: null,
  maxBatchSize: 1,
  batchWaitTimeoutS: 0,
  maxQueuedRequests: 1000,
  requestTimeoutS: null,
  gracefulShutdownTimeoutS: 20,
  autoscaling: null,
};

/** Ray Serve 2.x's defaults, but metricsIntervalS (docs/autoscaling.md#defaults). */
export const DEFAULT_AUTOSCALING_CONFIG: AutoscalingConfig = {
  minReplicas: 1,
  initialReplicas: null,
  maxReplicas: 1,
  targetOngoingRequests: 2,
  metricsIntervalS: 0.5,
  lookBackPeriodS: 30,
  smoothingFactor: 1,
  upscalingFactor: null,
  downscalingFactor: null,
  upscaleDelayS: 30,
  downscaleDelayS: 600,
  downscaleToZeroDelayS: null,
};

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const ROUTE = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/{}-]*$/;
const MAX_REPLICAS = 1000;

/** A value in a message: JSON, except numbers JSON cannot show (Infinity, NaN). */
function shown(value: unknown): string {
  return typeof value === 'number' ? String(value) : JSON.stringify(value);
}

/** Checks one value; reports at the scope it is given. */
type FieldCheck = (value: unknown, issues: Issues) => void;

/** `value` as an object, its unknown keys reported; undefined (reported, `what` leading the message) when it is not an object. */
function objectWith(issues: Issues, value: unknown, allowed: readonly string[], what = ''): Record<string, unknown> | undefined {
  if (!isPlainObject(value)) {
    issues.add(`${what === '' ? '' : `${what} `}must be an object with any of ${allowed.join(', ')}`);
    return undefined;
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) issues.add(`unknown key${didYouMean(key, allowed)}; allowed: ${allowed.join(', ')}`, key);
  }
  return value;
}

/** Runs the check of each key `value` has; returns those that passed. */
function checkFields(issues: Issues, value: Record<string, unknown>, fields: Record<string, FieldCheck>): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, check] of Object.entries(fields)) {
    if (value[key] === undefined) continue;
    const before = issues.count;
    check(value[key], issues.at(key));
    if (issues.count === before) result[key] = value[key];
  }
  return result;
}

function checkName(issues: Issues, name: unknown, kind: 'backend' | 'endpoint'): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    issues.add(`${kind} name ${JSON.stringify(name)} is invalid: use 1-63 letters, digits, '_' or '-', starting with a letter or digit`);
  }
  return name as string;
}

export function validateName(name: unknown, kind: 'backend' | 'endpoint'): string {
  return checked((issues) => checkName(issues, name, kind));
}

function checkRoute(issues: Issues, route: unknown): string {
  if (typeof route !== 'string' || !route.startsWith('/')) {
    issues.add(`${JSON.stringify(route)} is invalid: a route is a path starting with '/'`);
    return '';
  }
  if (!ROUTE.test(route) || route.includes('//')) {
    issues.add(`'${route}' is invalid: use a plain URL path without query, fragment, spaces or empty segments`);
    return '';
  }
  const normalized = route.length > 1 ? route.replace(/\/+$/, '') : route;
  if (normalized === '/-' || normalized.startsWith('/-/')) issues.add(`'${route}' is reserved for Flotilla ('/-/...')`);
  checkRouteParams(issues, normalized);
  return normalized;
}

/** Path parameters are whole segments `{name}` (an identifier), each name once: '/api/{username}'. */
function checkRouteParams(issues: Issues, route: string): void {
  const names = new Set<string>();
  for (const segment of route.split('/')) {
    if (!segment.includes('{') && !segment.includes('}')) continue;
    const name = ROUTE_PARAM.exec(segment)?.[1];
    if (name === undefined) {
      issues.add(
        `'${route}' is invalid: a path parameter is a whole segment {name}, name a letter or '_' then letters, digits or '_' (no converters such as {id:int})`,
      );
    } else if (names.has(name)) {
      issues.add(`'${route}' is invalid: the path parameter {${name}} appears twice`);
    }
    if (name !== undefined) names.add(name);
  }
}

/** '/a/' and '/a' are the same route; '/-/' is reserved for Flotilla's own paths. */
export function validateRoute(route: unknown): string {
  return checked((issues) => checkRoute(issues, route), 'route');
}

function checkMethods(issues: Issues, methods: unknown): string[] {
  if (methods === undefined) return ['GET'];
  if (typeof methods === 'string') {
    issues.add(`must be a list of HTTP methods, e.g. [${methods.toUpperCase() || 'GET'}], not the string ${JSON.stringify(methods)}`);
    return [];
  }
  if (!Array.isArray(methods) || methods.length === 0) {
    issues.add('must be a non-empty list of HTTP methods, e.g. [GET, POST]');
    return [];
  }
  const normalized = methods.map((method, index) => {
    const upper = typeof method === 'string' ? method.toUpperCase() : '';
    if (!(HTTP_METHODS as readonly string[]).includes(upper)) {
      issues.add(`${JSON.stringify(method)} is not an HTTP method; use one of ${HTTP_METHODS.join(', ')}`, index);
    }
    return upper;
  });
  return [...new Set(normalized)];
}

export function validateMethods(methods: unknown): string[] {
  return checked((issues) => checkMethods(issues, methods), 'methods');
}

function integerIn(min: number, max: number): FieldCheck {
  return (value, issues) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      issues.add(`must be an integer from ${min} to ${max}, got ${shown(value)}`);
    }
  };
}

function secondsIn(min: number, max: number, exclusiveMin = false): FieldCheck {
  return (value, issues) => {
    const low = exclusiveMin ? typeof value === 'number' && value > min : typeof value === 'number' && value >= min;
    if (typeof value !== 'number' || !Number.isFinite(value) || !low || value > max) {
      issues.add(
        `must be a number of seconds ${exclusiveMin ? 'above' : 'from'} ${min} ${exclusiveMin ? 'up ' : ''}to ${max}, got ${shown(value)}`,
      );
    }
  };
}

function positiveUpTo(max: number): FieldCheck {
  return (value, issues) => {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > max) {
      issues.add(`must be a number above 0 up to ${max}, got ${shown(value)}`);
    }
  };
}

const orNull =
  (check: FieldCheck): FieldCheck =>
  (value, issues) =>
    value === null || check(value, issues);

const AUTOSCALING_FIELDS: Record<keyof AutoscalingConfig, FieldCheck> = {
  minReplicas: integerIn(0, MAX_REPLICAS),
  initialReplicas: orNull(integerIn(0, MAX_REPLICAS)),
  maxReplicas: integerIn(1, MAX_REPLICAS),
  targetOngoingRequests: positiveUpTo(1_000_000),
  metricsIntervalS: secondsIn(0, 3600, true),
  lookBackPeriodS: secondsIn(0, 86_400, true),
  smoothingFactor: positiveUpTo(100),
  upscalingFactor: orNull(positiveUpTo(100)),
  downscalingFactor: orNull(positiveUpTo(100)),
  upscaleDelayS: secondsIn(0, 86_400),
  downscaleDelayS: secondsIn(0, 86_400),
  downscaleToZeroDelayS: orNull(secondsIn(0, 86_400)),
};

/** An autoscaling block with every default filled in; minReplicas <= initialReplicas <= maxReplicas. */
function checkAutoscaling(value: unknown, issues: Issues): AutoscalingConfig {
  const given = objectWith(issues, value, Object.keys(AUTOSCALING_FIELDS), 'autoscaling') ?? {};
  const config = { ...DEFAULT_AUTOSCALING_CONFIG, ...checkFields(issues, given, AUTOSCALING_FIELDS) } as AutoscalingConfig;
  if (config.maxReplicas < config.minReplicas) {
    issues.add(`must be at least minReplicas (${config.minReplicas}), got ${config.maxReplicas}`, 'maxReplicas');
  }
  const initial = config.initialReplicas;
  if (initial !== null && (initial < config.minReplicas || initial > config.maxReplicas)) {
    issues.add(
      `must be from minReplicas (${config.minReplicas}) to maxReplicas (${config.maxReplicas}), got ${initial}`,
      'initialReplicas',
    );
  }
  return config;
}

/** The replica count an autoscaled backend starts with. */
export function initialReplicasOf(autoscaling: AutoscalingConfig): number {
  return autoscaling.initialReplicas ?? autoscaling.minReplicas;
}

const CONFIG_FIELDS: Record<keyof BackendConfig, FieldCheck> = {
  numReplicas: integerIn(0, MAX_REPLICAS),
  maxConcurrentQueries: integerIn(1, 1_000_000),
  userConfig: (value, issues) => {
    if (!isJsonValue(value)) issues.add('must be a JSON value (or null for none)');
  },
  maxBatchSize: integerIn(1, 10_000),
  batchWaitTimeoutS: secondsIn(0, 3600),
  maxQueuedRequests: integerIn(0, 1_000_000),
  requestTimeoutS: (value, issues) => value === null || secondsIn(0, 86_400, true)(value, issues),
  gracefulShutdownTimeoutS: secondsIn(0, 3600),
  autoscaling: (value, issues) => value === null || void checkAutoscaling(value, issues),
};

function checkConfigPatch(issues: Issues, patch: unknown): Partial<BackendConfig> {
  const value = objectWith(issues, patch ?? {}, Object.keys(CONFIG_FIELDS));
  if (value === undefined) return {};
  const checked = checkFields(issues, value, CONFIG_FIELDS) as Partial<BackendConfig>;
  if (value.numReplicas !== undefined && value.autoscaling !== undefined && value.autoscaling !== null) {
    const message = 'numReplicas and autoscaling exclude each other: give a fixed numReplicas, or an autoscaling block';
    issues.add(message, 'numReplicas');
    issues.add(message, 'autoscaling');
  }
  if (checked.autoscaling !== undefined && checked.autoscaling !== null) {
    checked.autoscaling = { ...DEFAULT_AUTOSCALING_CONFIG, ...checked.autoscaling };
  }
  return checked;
}

/** Checks a partial BackendConfig: unknown keys and bad values are refused. */
export function validateConfigPatch(patch: unknown): Partial<BackendConfig> {
  return checked((issues) => checkConfigPatch(issues, patch), 'config');
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

const NETWORKS = ['isolated', 'none'] as const;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MANAGED_ENV = /^(FLOTILLA_|NVIDIA_VISIBLE_DEVICES$)/;

/** replicaOptions other than runtimeEnv, each checked on its own. */
const RESOURCE_FIELDS: Record<keyof ReplicaResources, FieldCheck> = {
  numCpus: (value, issues) => {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1024) {
      issues.add(`must be a number of CPUs from 0 to 1024 (fractions allowed), got ${shown(value)}`);
    }
  },
  cpuLimit: (value, issues) => {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0.01 || value > 1024) {
      issues.add(`must be a number of CPUs from 0.01 to 1024 (a hard cap), got ${shown(value)}`);
    }
  },
  memoryMb: (value, issues) => {
    if (value !== null && (typeof value !== 'number' || !Number.isInteger(value) || value < 6)) {
      issues.add(`must be a whole number of megabytes, at least 6, got ${shown(value)}`);
    }
  },
  numGpus: (value, issues) => {
    const wholeOrFraction = typeof value === 'number' && (Number.isInteger(value) ? value >= 0 : value > 0 && value < 1);
    if (!wholeOrFraction || value > 64) {
      issues.add(`must be a whole number of GPUs or a fraction below 1 (e.g. 0.5), got ${shown(value)}`);
    }
  },
  env: (value, issues) => {
    if (!isPlainObject(value)) {
      issues.add('must be an object of environment variable names to string values');
      return;
    }
    for (const [name, setting] of Object.entries(value)) {
      if (!ENV_NAME.test(name)) issues.add(`'${name}' is not a valid environment variable name`, name);
      else if (MANAGED_ENV.test(name)) issues.add(`'${name}' is set by Flotilla and cannot be overridden`, name);
      else if (typeof setting !== 'string') issues.add(`must be a string, got ${JSON.stringify(setting)}`, name);
    }
  },
  readOnlyRootfs: (value, issues) => {
    if (typeof value !== 'boolean') {
      issues.add(`must be true or false (false: the replica may write to its root filesystem), got ${shown(value)}`);
    }
  },
  network: (value, issues) => {
    if (!(NETWORKS as readonly unknown[]).includes(value)) {
      issues.add(`must be 'isolated' or 'none' (no network; unix transport only), got ${shown(value)}`);
    }
  },
  runAsImageUser: (value, issues) => {
    if (typeof value !== 'boolean') issues.add(`must be true or false, got ${shown(value)}`);
  },
  placementConstraints: (value, issues) => {
    if (!Array.isArray(value)) {
      issues.add(`must be a list of constraints like 'node.hostname==gpu-1', got ${shown(value)}`);
      return;
    }
    value.forEach((constraint: unknown, index) => {
      if (typeof constraint !== 'string' || !PLACEMENT_CONSTRAINT.test(constraint)) {
        issues.add(
          `must be node.hostname, node.id, node.role or node.labels.<name>, then == or !=, then a value, got ${shown(constraint)}`,
          String(index),
        );
      }
    });
  },
};

const REPLICA_OPTION_KEYS = ['runtimeEnv', ...Object.keys(RESOURCE_FIELDS)];

const RESOURCE_DEFAULTS: ReplicaResources = { numCpus: 1, memoryMb: null, numGpus: 0, env: {} };

/** The defaults, and every field given (optional fields without a default are kept only when given). */
function checkResources(issues: Issues, replicaOptions: Record<string, unknown>): ReplicaResources {
  const given = checkFields(issues, replicaOptions, RESOURCE_FIELDS) as Partial<ReplicaResources>;
  const resources = { ...RESOURCE_DEFAULTS, ...given, env: { ...given.env } };
  if (resources.cpuLimit !== undefined && resources.cpuLimit < resources.numCpus) {
    issues.add(
      `${resources.cpuLimit} is below numCpus (${resources.numCpus}): a replica cannot be capped below what it reserves`,
      'cpuLimit',
    );
  }
  return resources;
}

/** numCpus (default 1), cpuLimit (kept only when given), memoryMb (default none), numGpus (whole numbers, or a fraction below 1) and env. */
export function validateResources(replicaOptions: Record<string, unknown>): ReplicaResources {
  return checked((issues) => checkResources(issues, replicaOptions), 'replicaOptions');
}

function checkBackendOptions(issues: Issues, options: unknown): ValidatedBackendOptions {
  const value = objectWith(issues, options ?? {}, ['initArgs', 'config', 'replicaOptions'], 'createBackend options') ?? {};
  const initArgs = value.initArgs ?? [];
  if (!Array.isArray(initArgs) || !isJsonValue(initArgs)) {
    issues.add('must be an array of JSON values (strings, numbers, booleans, null, arrays, plain objects)', 'initArgs');
  }
  const config = { ...DEFAULT_BACKEND_CONFIG, ...checkConfigPatch(issues.at('config'), value.config) };
  if (config.autoscaling !== null) config.numReplicas = initialReplicasOf(config.autoscaling);
  const replicaOptions = objectWith(issues.at('replicaOptions'), value.replicaOptions ?? {}, REPLICA_OPTION_KEYS) ?? {};
  const runtimeEnv = checkRuntimeEnv(issues.at('replicaOptions', 'runtimeEnv'), replicaOptions.runtimeEnv);
  const resources = checkResources(issues.at('replicaOptions'), replicaOptions);
  if (runtimeEnv.port !== undefined && resources.network === 'none') {
    issues.add(
      "'none' needs the replica protocol over a unix socket; a plain HTTP container (runtimeEnv.port) needs a network",
      'replicaOptions',
      'network',
    );
  }
  if (runtimeEnv.port === undefined && resources.runAsImageUser !== undefined) {
    issues.add(
      'is for plain HTTP containers (runtimeEnv.image and port); protocol replicas always run as replicaUser',
      'replicaOptions',
      'runAsImageUser',
    );
  }
  return { initArgs: initArgs as unknown[], config, contextDir: runtimeEnv.context, runtimeEnv, resources };
}

/** createBackend's options, every default filled in; issue paths start at the options ('config', 'replicaOptions', ...). */
export function validateBackendOptions(options: unknown): ValidatedBackendOptions {
  return checked((issues) => checkBackendOptions(issues, options));
}

type ValidatedEndpointOptions = { backend: string; route: string | null; methods: string[]; allowCallMethod?: true };

function checkEndpointOptions(issues: Issues, options: unknown): ValidatedEndpointOptions {
  const value = objectWith(issues, options, ['backend', 'route', 'methods', 'allowCallMethod'], 'createEndpoint options') as
    Partial<CreateEndpointOptions> | undefined;
  if (value === undefined) return { backend: '', route: null, methods: [] };
  if (value.backend === undefined) issues.add('is required: the name of the backend that serves the endpoint', 'backend');
  return {
    backend: value.backend === undefined ? '' : checkName(issues.at('backend'), value.backend, 'backend'),
    route: value.route === undefined ? null : checkRoute(issues.at('route'), value.route),
    methods: checkMethods(issues.at('methods'), value.methods),
    ...(checkAllowCallMethod(issues.at('allowCallMethod'), value.allowCallMethod) ? { allowCallMethod: true as const } : {}),
  };
}

function checkAllowCallMethod(issues: Issues, allow: unknown): boolean {
  if (allow !== undefined && typeof allow !== 'boolean') issues.add(`must be true or false, got ${shown(allow)}`);
  return allow === true;
}

/** allowCallMethod: true or false, or absent. */
export function validateAllowCallMethod(allow: unknown): boolean {
  return checked((issues) => checkAllowCallMethod(issues, allow), 'allowCallMethod');
}

export function validateEndpointOptions(options: unknown): ValidatedEndpointOptions {
  return checked((issues) => checkEndpointOptions(issues, options));
}

const WEIGHT_SUM_TOLERANCE = 1e-8;

function checkTraffic(issues: Issues, weights: unknown): Record<string, number> {
  if (!isPlainObject(weights) || Object.keys(weights).length === 0) {
    issues.add('must be an object mapping backend names to weights, e.g. { v1: 0.9, v2: 0.1 }');
    return {};
  }
  const before = issues.count;
  for (const [backend, weight] of Object.entries(weights)) {
    checkName(issues.at(backend), backend, 'backend');
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) {
      issues.add(`must be a number >= 0, got ${shown(weight)}`, backend);
    }
  }
  if (issues.count > before) return {};
  const sum = Object.values(weights as Record<string, number>).reduce((a, b) => a + b, 0);
  if (Math.abs(sum - 1) > WEIGHT_SUM_TOLERANCE) issues.add(`weights must sum to 1, they sum to ${sum}`);
  return { ...(weights as Record<string, number>) };
}

/** Traffic weights: a non-empty map of backend names to numbers >= 0 that sum to 1; issue paths are backend names. */
export function validateTraffic(weights: unknown): Record<string, number> {
  return checked((issues) => checkTraffic(issues, weights), 'traffic');
}

export function validateProportion(proportion: unknown): number {
  return checked((issues) => {
    if (typeof proportion !== 'number' || !Number.isFinite(proportion) || proportion < 0 || proportion > 1) {
      issues.add(`must be a number from 0 to 1, got ${shown(proportion)}`);
    }
    return proportion as number;
  }, 'shadow proportion');
}
