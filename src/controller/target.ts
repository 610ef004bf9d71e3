import { createHash } from 'node:crypto';
import type { BackendConfig, BackendInfo, RolloutStatus } from '../api.js';
import { canonical } from '../common/canonical-json.js';
import { withinBounds } from './autoscaling-policy.js';
import type { LiveConfig } from '../replica/protocol.js';
import { summarize } from '../spec/definition.js';
import type { SavedTarget } from '../spec/saved-state.js';

/** What a backend should run: the saved desired state, with the hashes its replicas are compared against. */
export interface BackendTarget extends SavedTarget {
  version: string;
  /** The live config (userConfig and batching) a replica must hold; 'none' for a plain HTTP container. */
  liveHash: string;
  /** The userConfig part of it alone: a push leaves userConfig out (reconfigure is not called) when a replica holds this one. */
  userConfigHash: string;
}

const hash = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

/**
 * The version of what a replica runs: everything that needs a new container. The image tag is a content hash
 * (context files, shipped source, packages); live settings (userConfig, batching) and the rest of the config are not in it.
 */
export function versionOf(saved: SavedTarget): string {
  const { image, definition, initArgs, resources, runtimeEnv } = saved;
  return hash(canonical({ image, definition, initArgs, resources, port: runtimeEnv.port, healthPath: runtimeEnv.healthPath }));
}

export function liveConfigOf(config: BackendConfig, includeUserConfig: boolean): LiveConfig {
  const live: LiveConfig = { maxBatchSize: config.maxBatchSize, batchWaitTimeoutS: config.batchWaitTimeoutS };
  if (includeUserConfig) live.userConfig = config.userConfig;
  return live;
}

export function targetOf(saved: SavedTarget): BackendTarget {
  return {
    ...savedTarget(saved),
    version: versionOf(saved),
    // A plain HTTP container takes no live config, so it never needs a push.
    liveHash: saved.runtimeEnv.port === undefined ? hash(JSON.stringify(liveConfigOf(saved.config, true))) : 'none',
    userConfigHash: hash(JSON.stringify(saved.config.userConfig)),
  };
}

export function savedTarget(target: SavedTarget): SavedTarget {
  const { name, definition, initArgs, config, resources, runtimeEnv, image, contextDigest } = target;
  return { name, definition, initArgs, config, resources, runtimeEnv, image, ...(contextDigest === undefined ? {} : { contextDigest }) };
}

/** A config with a patch applied: a replica count turns autoscaling off; an autoscaled count is kept within its bounds. */
export function patchedConfig(config: BackendConfig, changes: Partial<BackendConfig>): BackendConfig {
  const next = { ...config, ...changes };
  if (changes.numReplicas !== undefined && changes.autoscaling === undefined) next.autoscaling = null;
  if (next.autoscaling !== null) next.numReplicas = withinBounds(next.autoscaling, config.numReplicas);
  return next;
}

/** The target a new version rolls out to: an autoscaled backend rolls out at the count it runs now. */
export function rolloutTarget(built: BackendTarget, current: BackendTarget): BackendTarget {
  const autoscaling = built.config.autoscaling;
  if (autoscaling === null) return built;
  return { ...built, config: { ...built.config, numReplicas: withinBounds(autoscaling, current.config.numReplicas) } };
}

/** A backend as the API reports it (its autoscaling status is the autoscaler's to add). */
export function infoOfTarget(target: BackendTarget, rollout: RolloutStatus | undefined): BackendInfo {
  const { config, definition, initArgs, runtimeEnv, resources } = target;
  const env = Object.fromEntries(Object.entries(runtimeEnv).filter(([, value]) => value !== undefined));
  return {
    ...structuredClone(config),
    definition: summarize(definition),
    initArgs: structuredClone(initArgs),
    runtimeEnv: structuredClone(env),
    resources: structuredClone(resources),
    version: target.version,
    contextDigest: target.contextDigest ?? null,
    rollout: rollout === undefined ? null : { ...rollout },
    autoscalingStatus: null,
  };
}
