import { createHash } from 'node:crypto';
import type { BackendConfig } from '../api.js';
import { canonical } from '../common/canonical-json.js';
import type { LiveConfig } from '../replica/protocol.js';
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
