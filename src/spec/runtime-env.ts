import { posix } from 'node:path';
import { isPlainObject } from '../common/checks.js';
import { checked, type Issues } from '../common/issues.js';

export const REPLICA_RUNTIMES = ['node', 'python'] as const;
export type ReplicaRuntime = (typeof REPLICA_RUNTIMES)[number];

/** replicaOptions.runtimeEnv, checked: what goes into a backend's image. */
export interface ValidatedRuntimeEnv {
  runtime: ReplicaRuntime;
  context: string | undefined;
  packages: Record<string, string> | undefined;
  dockerfile: string | undefined;
  buildArgs: Record<string, string> | undefined;
  /** A prebuilt image, used as it is. */
  image: string | undefined;
  /** With image: the port of a plain HTTP server that does not speak the replica protocol. */
  port: number | undefined;
  /** With port: the path that answers 2xx or 3xx when the container is healthy. */
  healthPath: string | undefined;
  /** Python only: pip requirement lines and Debian packages, installed beside the context's requirements.txt and apt.txt. */
  pip?: string[];
  apt?: string[];
}

const RUNTIME_ENV_KEYS = [
  'runtime',
  'context',
  'packages',
  'dockerfile',
  'buildArgs',
  'image',
  'port',
  'healthPath',
  'pip',
  'apt',
] as const;
const APT_NAME = /^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$/;
const IMAGE = /^[a-z0-9][a-z0-9._/:@-]*$/i;
const NPM_NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
const NPM_VERSION = /^[A-Za-z0-9^~<>=*.|+: -]+$/;
const BUILD_ARG = /^[A-Za-z_][A-Za-z0-9_]*$/;

function stringMap(
  issues: Issues,
  value: unknown,
  checkName: (name: string) => boolean,
  example: string,
): Record<string, string> | undefined {
  if (!isPlainObject(value) || Object.keys(value).length === 0) {
    issues.add(`must be a non-empty object, e.g. ${example}`);
    return undefined;
  }
  const before = issues.count;
  for (const [name, item] of Object.entries(value)) {
    if (!checkName(name)) issues.add(`has an invalid name ${JSON.stringify(name)}`, name);
    else if (typeof item !== 'string' || item.trim() === '') issues.add(`must be a non-empty string, got ${JSON.stringify(item)}`, name);
  }
  return issues.count > before ? undefined : { ...(value as Record<string, string>) };
}

/**
 * Checks runtimeEnv into `issues` (paths relative to runtimeEnv): unknown keys
 * and bad values, and combinations that cannot be built. Messages name other
 * keys as runtimeEnv.<key>, which reads right in the API and in app files.
 */
export function checkRuntimeEnv(issues: Issues, value: unknown): ValidatedRuntimeEnv {
  const env = value ?? {};
  const none: ValidatedRuntimeEnv = {
    runtime: 'node',
    context: undefined,
    packages: undefined,
    dockerfile: undefined,
    buildArgs: undefined,
    image: undefined,
    port: undefined,
    healthPath: undefined,
  };
  if (!isPlainObject(env)) {
    issues.add(`must be an object with any of ${RUNTIME_ENV_KEYS.join(', ')}`);
    return none;
  }
  for (const key of Object.keys(env).filter((key) => !(RUNTIME_ENV_KEYS as readonly string[]).includes(key))) {
    issues.add(`unknown key; allowed: ${RUNTIME_ENV_KEYS.join(', ')}`, key);
  }
  const runtime = env.runtime ?? 'node';
  if (!(REPLICA_RUNTIMES as readonly unknown[]).includes(runtime)) {
    issues.add(`must be one of ${REPLICA_RUNTIMES.join(', ')}, got ${JSON.stringify(runtime)}`, 'runtime');
  }
  let context: string | undefined;
  if (env.context !== undefined) {
    if (typeof env.context !== 'string' || env.context === '') issues.add('must be a directory path', 'context');
    else context = env.context;
  }
  let packages: Record<string, string> | undefined;
  if (env.packages !== undefined) {
    if (runtime !== 'node') {
      issues.add(
        'installs npm packages (node runtime only); a Python backend lists apt.txt or requirements.txt in its context',
        'packages',
      );
    } else {
      packages = stringMap(issues.at('packages'), env.packages, (name) => NPM_NAME.test(name), "{ 'is-number': '^7.0.0' }");
      for (const [name, version] of Object.entries(packages ?? {})) {
        if (!NPM_VERSION.test(version)) issues.add(`'${version}' is not an npm version or range`, 'packages', name);
      }
    }
  }
  let dockerfile: string | undefined;
  if (env.dockerfile !== undefined) {
    const normalized = typeof env.dockerfile === 'string' ? posix.normalize(env.dockerfile.replaceAll('\\', '/')) : '';
    if (typeof env.dockerfile !== 'string' || env.dockerfile === '') issues.add('must be a file name in the context', 'dockerfile');
    else if (env.context === undefined) issues.add('needs a context: the directory the Dockerfile is built from', 'dockerfile');
    else if (posix.isAbsolute(normalized) || normalized === '..' || normalized.startsWith('../')) {
      issues.add(`'${env.dockerfile}' must be a path inside the context`, 'dockerfile');
    } else if (env.packages !== undefined) {
      issues.add('cannot be combined with a dockerfile: install them in the Dockerfile', 'packages');
    } else dockerfile = normalized;
  }
  let buildArgs: Record<string, string> | undefined;
  if (env.buildArgs !== undefined) {
    if (env.dockerfile === undefined) issues.add('are passed to a user Dockerfile; set runtimeEnv.dockerfile too', 'buildArgs');
    else buildArgs = stringMap(issues.at('buildArgs'), env.buildArgs, (name) => BUILD_ARG.test(name), "{ BASE: 'debian:trixie-slim' }");
  }
  const pythonPackages = checkPythonPackages(issues, env, runtime);
  const { image, port, healthPath } = checkImage(issues, env);
  if (env.image !== undefined) {
    for (const key of ['context', 'packages', 'dockerfile', 'pip', 'apt'].filter((key) => env[key] !== undefined)) {
      issues.add(`cannot be combined with runtimeEnv.image: an image is used as it is`, key);
    }
  }
  return { runtime: runtime as ReplicaRuntime, context, packages, dockerfile, buildArgs, image, port, healthPath, ...pythonPackages };
}

/** pip (requirement lines) and apt (Debian package names): Python backends without a Dockerfile of their own. */
function checkPythonPackages(issues: Issues, env: Record<string, unknown>, runtime: unknown): Pick<ValidatedRuntimeEnv, 'pip' | 'apt'> {
  const found: Pick<ValidatedRuntimeEnv, 'pip' | 'apt'> = {};
  for (const key of ['pip', 'apt'] as const) {
    const value = env[key];
    if (value === undefined) continue;
    if (runtime !== 'python')
      issues.add(`installs Python backends' ${key === 'pip' ? 'pip requirements' : 'Debian packages'} (python runtime only)`, key);
    else if (env.dockerfile !== undefined) issues.add('cannot be combined with a dockerfile: install them in the Dockerfile', key);
    else if (
      !Array.isArray(value) ||
      value.length === 0 ||
      !value.every((item) => typeof item === 'string' && item.trim() !== '' && !/[\r\n]/.test(item))
    ) {
      issues.add(
        `must be a non-empty list of ${key === 'pip' ? "requirement lines, e.g. ['numpy==1.26.4']" : "Debian package names, e.g. ['python3-numpy']"}`,
        key,
      );
    } else if (key === 'apt' && value.some((item: string) => !APT_NAME.test(item))) {
      issues.add(`lists invalid Debian package names: ${value.filter((item: string) => !APT_NAME.test(item)).join(', ')}`, key);
    } else found[key] = value.map((item: string) => item.trim());
  }
  return found;
}

/** Checks runtimeEnv: unknown keys and bad values are refused, and so are combinations that cannot be built. */
export function validateRuntimeEnv(value: unknown): ValidatedRuntimeEnv {
  return checked((issues) => checkRuntimeEnv(issues, value), 'replicaOptions.runtimeEnv');
}

function checkImage(issues: Issues, env: Record<string, unknown>): Pick<ValidatedRuntimeEnv, 'image' | 'port' | 'healthPath'> {
  const { image, port, healthPath } = env;
  if (image !== undefined && (typeof image !== 'string' || !IMAGE.test(image))) {
    issues.add(`must be an image name, e.g. 'nginx:1.25', got ${JSON.stringify(image)}`, 'image');
  }
  if (port !== undefined) {
    if (image === undefined) issues.add('is the port of an existing HTTP container; set runtimeEnv.image too', 'port');
    else if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      issues.add(`must be a TCP port, got ${JSON.stringify(port)}`, 'port');
    }
  }
  if (healthPath !== undefined) {
    if (port === undefined) {
      issues.add('is checked on an existing HTTP container; set runtimeEnv.image and runtimeEnv.port too', 'healthPath');
    } else if (typeof healthPath !== 'string' || !healthPath.startsWith('/')) {
      issues.add(`must be a path starting with '/', got ${JSON.stringify(healthPath)}`, 'healthPath');
    }
  }
  return {
    image: image as string | undefined,
    port: port as number | undefined,
    healthPath: port === undefined ? undefined : ((healthPath as string | undefined) ?? '/'),
  };
}
