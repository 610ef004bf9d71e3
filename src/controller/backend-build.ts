import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { BackendConfig } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { FlotillaConfig } from '../config/config.js';
import type { Scheduler } from '../resources/scheduler.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import type { ImageBuilder } from '../runtime/image-builder.js';
import { confinementOf } from '../spec/confinement.js';
import { checkSupports, shippedFile, type ShippableDefinition } from '../spec/definition.js';
import type { ValidatedRuntimeEnv } from '../spec/runtime-env.js';
import { validateBackendOptions, validateName } from '../spec/validation.js';
import { targetOf, type BackendTarget } from './target.js';

/** A plain HTTP container (runtimeEnv image + port) cannot take userConfig or batch. */
export function checkContainerSupports(backend: string, runtimeEnv: ValidatedRuntimeEnv, config: BackendConfig): void {
  if (runtimeEnv.port === undefined) return;
  if (config.userConfig !== null || config.maxBatchSize > 1) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' is a plain HTTP container (runtimeEnv.port): it cannot take userConfig or batching, which need the replica protocol`,
    );
  }
}

export type CheckedBackend = ReturnType<typeof checkBackend>;

/** createBackend's and updateBackend's checks of their arguments, before anything is built. */
export function checkBackend(name: string, shippable: ShippableDefinition, options: unknown, settings: FlotillaConfig) {
  validateName(name, 'backend');
  const spec = validateBackendOptions(options);
  const { config, contextDir, runtimeEnv, resources } = spec;
  checkSupports(name, shippable, config, runtimeEnv.runtime);
  checkContainerSupports(name, runtimeEnv, config);
  confinementOf(name, resources, settings, runtimeEnv.port !== undefined);
  const context = contextDir === undefined ? undefined : resolve(contextDir);
  if (context !== undefined && !statSync(context, { throwIfNoEntry: false })?.isDirectory()) {
    throw new FlotillaError('INVALID_ARGUMENT', `replicaOptions.runtimeEnv.context '${contextDir}' is not a directory`);
  }
  return { ...spec, context };
}

/** Builds (or finds) the backend's image: the target it would run. */
export async function buildTarget(
  deps: { runtime: ContainerRuntime; images: Pick<ImageBuilder, 'backendImage'> },
  name: string,
  shippable: ShippableDefinition,
  spec: CheckedBackend,
): Promise<BackendTarget> {
  const { initArgs, config, runtimeEnv, resources, context } = spec;
  if (runtimeEnv.image !== undefined && !(await deps.runtime.imageExists(runtimeEnv.image))) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `replicaOptions.runtimeEnv.image '${runtimeEnv.image}' is not on the Docker engine; pull or build it first`,
    );
  }
  const built =
    runtimeEnv.image === undefined
      ? await deps.images.backendImage({
          backend: name,
          ...(context === undefined ? {} : { contextDir: context }),
          ...(shippable.kind === 'import' ? {} : { shippedFile: shippedFile(shippable) }),
          ...(shippable.kind === 'pickled' ? { pythonVersion: shippable.pythonVersion } : {}),
          runtime: runtimeEnv.runtime,
          packages: runtimeEnv.packages,
          ...(runtimeEnv.pip === undefined ? {} : { pip: runtimeEnv.pip }),
          ...(runtimeEnv.apt === undefined ? {} : { apt: runtimeEnv.apt }),
          dockerfile: runtimeEnv.dockerfile,
          buildArgs: runtimeEnv.buildArgs,
        })
      : { image: runtimeEnv.image };
  return targetOf({
    name,
    definition: shippable,
    initArgs,
    config,
    resources,
    runtimeEnv: { ...runtimeEnv, context },
    image: built.image,
    ...(built.contextDigest === undefined ? {} : { contextDigest: built.contextDigest }),
  });
}

/** Throws INSUFFICIENT_RESOURCES unless `count` more replicas fit now; books nothing. */
export function checkFits(scheduler: Scheduler, name: string, resources: BackendTarget['resources'], count: number): void {
  const { refusal } = scheduler.room(resources, count);
  if (refusal === undefined) return;
  const free = scheduler.free();
  const before = `${free.cpus} CPUs and ${free.memoryMb} MB were free before this request`;
  throw new FlotillaError(refusal.code, `backend '${name}' cannot add ${count} replica(s): ${refusal.message}; ${before}`, refusal.details);
}
