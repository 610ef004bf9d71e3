import { posix } from 'node:path';
import { invalid, isPlainObject } from '../common/checks.js';

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
}

const KEYS = ['runtime', 'context', 'packages', 'dockerfile', 'buildArgs', 'image', 'port', 'healthPath'] as const;
const IMAGE = /^[a-z0-9][a-z0-9._/:@-]*$/i;
const WHAT = 'replicaOptions.runtimeEnv';
const NPM_NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
const NPM_VERSION = /^[A-Za-z0-9^~<>=*.|+: -]+$/;
const BUILD_ARG = /^[A-Za-z_][A-Za-z0-9_]*$/;

function stringMap(value: unknown, key: string, checkName: (name: string) => boolean, example: string): Record<string, string> {
  if (!isPlainObject(value) || Object.keys(value).length === 0) throw invalid(`${WHAT}.${key} must be a non-empty object, e.g. ${example}`);
  for (const [name, item] of Object.entries(value)) {
    if (!checkName(name)) throw invalid(`${WHAT}.${key} has an invalid name ${JSON.stringify(name)}`);
    if (typeof item !== 'string' || item.trim() === '') {
      throw invalid(`${WHAT}.${key}.${name} must be a non-empty string, got ${JSON.stringify(item)}`);
    }
  }
  return { ...(value as Record<string, string>) };
}

/** Checks runtimeEnv: unknown keys and bad values are refused, and so are combinations that cannot be built. */
export function validateRuntimeEnv(value: unknown): ValidatedRuntimeEnv {
  const env = value ?? {};
  if (!isPlainObject(env)) throw invalid(`${WHAT} must be an object`);
  const unknown = Object.keys(env).filter((key) => !(KEYS as readonly string[]).includes(key));
  if (unknown.length > 0) {
    throw invalid(`${WHAT} has unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; allowed: ${KEYS.join(', ')}`);
  }
  const runtime = env.runtime ?? 'node';
  if (!(REPLICA_RUNTIMES as readonly unknown[]).includes(runtime)) {
    throw invalid(`${WHAT}.runtime must be one of ${REPLICA_RUNTIMES.join(', ')}, got ${JSON.stringify(runtime)}`);
  }
  if (env.context !== undefined && (typeof env.context !== 'string' || env.context === '')) {
    throw invalid(`${WHAT}.context must be a directory path`);
  }
  const context = env.context as string | undefined;
  let packages: Record<string, string> | undefined;
  if (env.packages !== undefined) {
    if (runtime !== 'node') {
      throw invalid(
        `${WHAT}.packages installs npm packages (node runtime only); a Python backend lists apt.txt or requirements.txt in its context`,
      );
    }
    packages = stringMap(env.packages, 'packages', (name) => NPM_NAME.test(name), "{ 'is-number': '^7.0.0' }");
    for (const [name, version] of Object.entries(packages)) {
      if (!NPM_VERSION.test(version)) throw invalid(`${WHAT}.packages.${name}: '${version}' is not an npm version or range`);
    }
  }
  let dockerfile: string | undefined;
  if (env.dockerfile !== undefined) {
    if (typeof env.dockerfile !== 'string' || env.dockerfile === '') throw invalid(`${WHAT}.dockerfile must be a file name in the context`);
    if (context === undefined) throw invalid(`${WHAT}.dockerfile needs a context: the directory the Dockerfile is built from`);
    const normalized = posix.normalize(env.dockerfile.replaceAll('\\', '/'));
    if (posix.isAbsolute(normalized) || normalized === '..' || normalized.startsWith('../')) {
      throw invalid(`${WHAT}.dockerfile '${env.dockerfile}' must be a path inside the context`);
    }
    if (packages !== undefined) throw invalid(`${WHAT}.packages cannot be combined with a dockerfile: install them in the Dockerfile`);
    dockerfile = normalized;
  }
  let buildArgs: Record<string, string> | undefined;
  if (env.buildArgs !== undefined) {
    if (dockerfile === undefined) throw invalid(`${WHAT}.buildArgs are passed to a user Dockerfile; set ${WHAT}.dockerfile too`);
    buildArgs = stringMap(env.buildArgs, 'buildArgs', (name) => BUILD_ARG.test(name), "{ BASE: 'debian:trixie-slim' }");
  }
  const { image, port, healthPath } = validateImage(env);
  if (image !== undefined && (context !== undefined || packages !== undefined || dockerfile !== undefined)) {
    throw invalid(`${WHAT}.image is used as it is; it cannot be combined with context, packages or dockerfile`);
  }
  return { runtime: runtime as ReplicaRuntime, context, packages, dockerfile, buildArgs, image, port, healthPath };
}

function validateImage(env: Record<string, unknown>): Pick<ValidatedRuntimeEnv, 'image' | 'port' | 'healthPath'> {
  const { image, port, healthPath } = env;
  if (image !== undefined && (typeof image !== 'string' || !IMAGE.test(image)))
    throw invalid(`${WHAT}.image must be an image name, e.g. 'nginx:1.25'`);
  if (port !== undefined) {
    if (image === undefined) throw invalid(`${WHAT}.port is the port of an existing HTTP container; set ${WHAT}.image too`);
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
      throw invalid(`${WHAT}.port must be a TCP port, got ${JSON.stringify(port)}`);
  }
  if (healthPath !== undefined) {
    if (port === undefined)
      throw invalid(`${WHAT}.healthPath is checked on an existing HTTP container; set ${WHAT}.image and ${WHAT}.port too`);
    if (typeof healthPath !== 'string' || !healthPath.startsWith('/')) throw invalid(`${WHAT}.healthPath must be a path starting with '/'`);
  }
  return {
    image: image as string | undefined,
    port: port as number | undefined,
    healthPath: port === undefined ? undefined : ((healthPath as string | undefined) ?? '/'),
  };
}
