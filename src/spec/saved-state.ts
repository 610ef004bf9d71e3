import type { BackendConfig, EndpointInfo, ReplicaResources, RolloutStatus } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { ShippableDefinition } from './definition.js';
import type { ValidatedRuntimeEnv } from './runtime-env.js';

export const CHECKPOINT_VERSION = 2;

/** An endpoint as it is saved and as the data plane routes it. */
export type EndpointRecord = EndpointInfo & { name: string };

/** A backend's desired state as it is saved. */
export interface SavedBackend {
  name: string;
  definition: ShippableDefinition;
  initArgs: unknown[];
  config: BackendConfig;
  resources: ReplicaResources;
  runtimeEnv: ValidatedRuntimeEnv;
  image: string;
  /** contextDigest of runtimeEnv.context when the image was built from it. */
  contextDigest?: string;
  /**
   * Per replica id, the hash of the live config the controller last pushed to it, or 'unknown' after a push that
   * may have half-applied. Replicas not listed still hold what they were started with (their config-hash label).
   */
  replicaConfigs: Record<string, string>;
  /** The latest rolling update, and while one is under way the target it rolls back to. */
  rollout?: SavedRollout;
}

export type SavedTarget = Omit<SavedBackend, 'replicaConfigs' | 'rollout'>;

export interface SavedRollout extends RolloutStatus {
  previous?: SavedTarget;
}

/**
 * Version 2. Version 1 (Flotilla 0.1) had no replicaConfigs; its replicas are
 * taken to hold what their labels say. `rollout` is optional (files without
 * one have none under way), and so is `config.autoscaling` (null: a fixed count).
 */
export interface SavedState {
  version: typeof CHECKPOINT_VERSION;
  backends: SavedBackend[];
  endpoints: EndpointRecord[];
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

function wrongShape(path: string, what: string): FlotillaError {
  return new FlotillaError(
    'STATE_INVALID',
    `the state file ${path} is not a Flotilla state file (${what}); nothing was changed. Move it away to start empty, ` +
      'or restore it from a backup',
  );
}

function checkBackend(path: string, value: unknown, index: number): void {
  const where = `backends[${index}]`;
  if (!isObject(value)) throw wrongShape(path, `${where} is not an object`);
  if (typeof value.name !== 'string') throw wrongShape(path, `${where}.name is not a string`);
  if (typeof value.image !== 'string') throw wrongShape(path, `${where}.image is not a string`);
  for (const key of ['definition', 'config', 'resources', 'runtimeEnv'] as const) {
    if (!isObject(value[key])) throw wrongShape(path, `${where}.${key} is not an object`);
  }
  if (!Array.isArray(value.initArgs)) throw wrongShape(path, `${where}.initArgs is not an array`);
  if (!Number.isInteger((value.config as Record<string, unknown>).numReplicas))
    throw wrongShape(path, `${where}.config.numReplicas is not an integer`);
  if (value.replicaConfigs !== undefined && !isObject(value.replicaConfigs))
    throw wrongShape(path, `${where}.replicaConfigs is not an object`);
  if (value.rollout !== undefined && !(isObject(value.rollout) && typeof value.rollout.targetVersion === 'string'))
    throw wrongShape(path, `${where}.rollout is not a rollout`);
  if (isObject(value.rollout) && value.rollout.previous !== undefined) checkBackend(path, value.rollout.previous, index);
}

function checkEndpoint(path: string, value: unknown, index: number): void {
  const where = `endpoints[${index}]`;
  if (!isObject(value)) throw wrongShape(path, `${where} is not an object`);
  if (typeof value.name !== 'string') throw wrongShape(path, `${where}.name is not a string`);
  if (value.route !== null && typeof value.route !== 'string') throw wrongShape(path, `${where}.route is neither a string nor null`);
  if (!Array.isArray(value.methods)) throw wrongShape(path, `${where}.methods is not an array`);
  if (!isObject(value.traffic) || !isObject(value.shadows)) throw wrongShape(path, `${where}.traffic or .shadows is not an object`);
}

/**
 * Reads what StateStore.load returned: checks the version and the shape, and
 * migrates an older version to the current one. Anything it cannot vouch for
 * is refused with STATE_INVALID before a single container is touched.
 */
export function parseCheckpoint(path: string, raw: unknown): SavedState | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) throw wrongShape(path, 'it is not a JSON object');
  const version = raw.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1)
    throw wrongShape(path, `its version is ${JSON.stringify(version)}`);
  if (version > CHECKPOINT_VERSION) {
    throw new FlotillaError(
      'STATE_INVALID',
      `the state file ${path} has version ${version}, written by a newer Flotilla (this one reads up to ${CHECKPOINT_VERSION}); ` +
        'run that version, or move the file away to start empty',
    );
  }
  if (!Array.isArray(raw.backends)) throw wrongShape(path, 'backends is not an array');
  if (!Array.isArray(raw.endpoints)) throw wrongShape(path, 'endpoints is not an array');
  raw.backends.forEach((backend, index) => checkBackend(path, backend, index));
  raw.endpoints.forEach((endpoint, index) => checkEndpoint(path, endpoint, index));
  const backends = (raw.backends as Array<Omit<SavedBackend, 'replicaConfigs'> & { replicaConfigs?: Record<string, string> }>).map(
    (backend) => {
      const rollout =
        backend.rollout?.previous === undefined
          ? backend.rollout
          : { ...backend.rollout, previous: withAutoscaling(backend.rollout.previous) };
      return { ...withAutoscaling(backend), replicaConfigs: backend.replicaConfigs ?? {}, ...(rollout === undefined ? {} : { rollout }) };
    },
  );
  return { version: CHECKPOINT_VERSION, backends, endpoints: raw.endpoints as EndpointRecord[] };
}

/** Files written before autoscaling have no config.autoscaling: a fixed numReplicas. */
function withAutoscaling<T extends { config: BackendConfig }>(saved: T): T {
  return { ...saved, config: { ...saved.config, autoscaling: saved.config.autoscaling ?? null } };
}
