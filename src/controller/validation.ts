import { FlotillaError } from '../common/errors.js';
import type { BackendConfig, CreateEndpointOptions } from '../api.js';

export const DEFAULT_BACKEND_CONFIG: BackendConfig = { numReplicas: 1, maxConcurrentQueries: 100 };

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const ROUTE = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/;
const MAX_REPLICAS = 1000;

function invalid(message: string): FlotillaError {
  return new FlotillaError('INVALID_ARGUMENT', message);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

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

function integerIn(value: unknown, key: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`config.${key} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Checks a partial BackendConfig: unknown keys and bad values are refused. */
export function validateConfigPatch(patch: unknown): Partial<BackendConfig> {
  const value = checkKeys(patch ?? {}, Object.keys(DEFAULT_BACKEND_CONFIG), 'config');
  const result: Partial<BackendConfig> = {};
  if (value.numReplicas !== undefined) result.numReplicas = integerIn(value.numReplicas, 'numReplicas', 0, MAX_REPLICAS);
  if (value.maxConcurrentQueries !== undefined) {
    result.maxConcurrentQueries = integerIn(value.maxConcurrentQueries, 'maxConcurrentQueries', 1, 1_000_000);
  }
  return result;
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
}

export function validateBackendOptions(options: unknown): ValidatedBackendOptions {
  const value = checkKeys(options ?? {}, ['initArgs', 'config', 'replicaOptions'], 'createBackend options');
  const initArgs = value.initArgs ?? [];
  if (!Array.isArray(initArgs) || !isJsonValue(initArgs)) {
    throw invalid('initArgs must be an array of JSON values (strings, numbers, booleans, null, arrays, plain objects)');
  }
  const config = { ...DEFAULT_BACKEND_CONFIG, ...validateConfigPatch(value.config) };
  const replicaOptions = checkKeys(value.replicaOptions ?? {}, ['runtimeEnv'], 'replicaOptions');
  const runtimeEnv = checkKeys(replicaOptions.runtimeEnv ?? {}, ['context'], 'replicaOptions.runtimeEnv');
  if (runtimeEnv.context !== undefined && (typeof runtimeEnv.context !== 'string' || runtimeEnv.context === '')) {
    throw invalid('replicaOptions.runtimeEnv.context must be a directory path');
  }
  return { initArgs, config, contextDir: runtimeEnv.context as string | undefined };
}

export function validateEndpointOptions(options: unknown): { backend: string; route: string | null; methods: string[] } {
  const value = checkKeys(options, ['backend', 'route', 'methods'], 'createEndpoint options') as Partial<CreateEndpointOptions>;
  return {
    backend: validateName(value.backend, 'backend'),
    route: value.route === undefined ? null : validateRoute(value.route),
    methods: validateMethods(value.methods),
  };
}
