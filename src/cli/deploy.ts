import { isAbsolute, resolve } from 'node:path';
import type { BackendConfig, BackendInfo, Client, RuntimeEnv } from '../api.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import { DEFAULT_BACKEND_CONFIG } from '../spec/validation.js';
import type { Capacity } from '../resources/scheduler.js';
import { contextDigest } from '../runtime/image-builder.js';
import { canonical } from '../common/canonical-json.js';
import { loadAppFile, type AppSpec, type BackendSpec } from './app-file.js';
import type { CurrentState, DeployStep } from './deploy-steps.js';
import { capacityOf, checkFitsWhenApplied, orderForCapacity } from './deploy-capacity.js';
import type { ProgressLine } from './progress.js';

export interface PlanOptions {
  /** contextDigest of each running backend's context in the file, where it has one. */
  digests?: Record<string, string>;
  /** What the control plane's replicas may reserve in all; without it, capacity is not planned for. */
  capacity?: Capacity;
}

const CONFIG_KEYS = Object.keys(DEFAULT_BACKEND_CONFIG) as (keyof BackendConfig)[];

function same(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

/** A runtimeEnv as the controller reports it, in the form an app file's is parsed to (every key it has; context absolute). */
function normalizeRuntimeEnv(env: RuntimeEnv | undefined): RuntimeEnv {
  const result: RuntimeEnv = { runtime: 'node', ...Object.fromEntries(Object.entries(env ?? {}).filter(([, item]) => item !== undefined)) };
  if (result.context !== undefined && !isAbsolute(result.context)) result.context = resolve(result.context);
  return result;
}

function describeDefinition(definition: BackendInfo['definition']): string {
  return definition.kind === 'import' ? `${definition.module}:${definition.exportName}` : `a shipped ${definition.kind} ${definition.name}`;
}

/** What differs between a running backend and the file, other than its config; these roll out a new version. */
function versionChanges(spec: BackendSpec, current: BackendInfo, digest: string | undefined): string[] {
  const changes: string[] = [];
  const definition = current.definition;
  if (
    definition.kind !== 'import' ||
    definition.module !== spec.definition.module ||
    definition.exportName !== spec.definition.exportName
  ) {
    changes.push(`import ${describeDefinition(definition)} → ${spec.import}`);
  }
  if (!same(current.initArgs, spec.initArgs)) changes.push(`initArgs ${canonical(current.initArgs)} → ${canonical(spec.initArgs)}`);
  const runtimeEnv = normalizeRuntimeEnv(current.runtimeEnv);
  if (!same(runtimeEnv, spec.runtimeEnv)) changes.push(`runtimeEnv ${canonical(runtimeEnv)} → ${canonical(spec.runtimeEnv)}`);
  const before: Record<string, unknown> = { ...current.resources };
  const after: Record<string, unknown> = { ...spec.resources };
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    if (!same(before[key], after[key])) changes.push(`replicaOptions.${key} ${canonical(before[key])} → ${canonical(after[key])}`);
  }
  if (digest !== undefined && current.contextDigest !== null && digest !== current.contextDigest)
    changes.push(`files under ${spec.runtimeEnv.context ?? 'its context'} changed`);
  return changes;
}

function sameMethods(a: string[], b: string[]): boolean {
  return same([...a].sort(), [...b].sort());
}

/**
 * The client calls that take the running state to the app file's, in an order
 * where nothing is deleted or scaled down while something still uses it: new
 * backends, rolling updates and config changes that do not remove replicas,
 * endpoint removals (and the removal half of endpoints whose route or methods
 * changed), endpoint creations, traffic and shadow changes, config changes
 * that remove replicas, and last the backends no longer in the file. Pure: the
 * same inputs give the same plan, and a file that matches the running state
 * gives an empty one.
 *
 * A backend whose import, initArgs, runtimeEnv, replicaOptions or context
 * files (`digests`: contextDigest of each backend's context, where it has one)
 * changed gets updateBackend, which rolls the new version out replica by replica.
 *
 * With the control plane's `capacity`, a file that would not fit once applied
 * is refused (INSUFFICIENT_RESOURCES), and the steps are reordered so that each
 * fits when it runs (orderForCapacity).
 */
export function planDeploy(desired: AppSpec, current: CurrentState, options: PlanOptions = {}): DeployStep[] {
  const digests = options.digests ?? {};
  if (options.capacity !== undefined) checkFitsWhenApplied(desired, options.capacity);
  const creates: DeployStep[] = [];
  const updates: DeployStep[] = [];
  const scaleDowns: DeployStep[] = [];
  for (const [name, spec] of Object.entries(desired.backends)) {
    const running = current.backends[name];
    if (running === undefined) {
      creates.push({ op: 'createBackend', backend: name, spec });
      continue;
    }
    const changes = versionChanges(spec, running, digests[name]);
    if (changes.length > 0) {
      updates.push({ op: 'updateBackend', backend: name, spec, changes });
      continue;
    }
    // An autoscaled backend's numReplicas is the autoscaler's to change.
    const autoscaled = spec.config.autoscaling !== null;
    const changed = CONFIG_KEYS.filter((key) => !(autoscaled && key === 'numReplicas') && !same(running[key], spec.config[key]));
    if (changed.length === 0) continue;
    const pick = (config: BackendConfig): Partial<BackendConfig> => Object.fromEntries(changed.map((key) => [key, config[key]]));
    const fewer = !autoscaled && spec.config.numReplicas < running.numReplicas;
    (fewer ? scaleDowns : updates).push({ op: 'updateBackendConfig', backend: name, changes: pick(spec.config), previous: pick(running) });
  }

  const endpointDeletes: DeployStep[] = [];
  const endpointCreates: DeployStep[] = [];
  const routing: DeployStep[] = [];
  for (const [name, info] of Object.entries(current.endpoints)) {
    if (!(name in desired.endpoints)) endpointDeletes.push({ op: 'deleteEndpoint', endpoint: name, route: info.route, recreate: false });
  }
  for (const [name, spec] of Object.entries(desired.endpoints)) {
    let running = current.endpoints[name];
    if (
      running !== undefined &&
      (running.route !== spec.route || !sameMethods(running.methods, spec.methods) || running.allowCallMethod !== spec.allowCallMethod)
    ) {
      endpointDeletes.push({ op: 'deleteEndpoint', endpoint: name, route: running.route, recreate: true });
      running = undefined;
    }
    if (running === undefined) {
      const { allowCallMethod } = spec;
      endpointCreates.push({
        op: 'createEndpoint',
        endpoint: name,
        backend: spec.backend,
        route: spec.route,
        methods: spec.methods,
        ...(allowCallMethod ? { allowCallMethod } : {}),
      });
      running = { route: spec.route, methods: spec.methods, traffic: { [spec.backend]: 1 }, shadows: {} };
    }
    if (!same(running.traffic, spec.traffic))
      routing.push({ op: 'setTraffic', endpoint: name, traffic: spec.traffic, previous: running.traffic });
    const shadowed = new Set([...Object.keys(running.shadows), ...Object.keys(spec.shadows)]);
    for (const backend of shadowed) {
      const proportion = spec.shadows[backend] ?? 0;
      const previous = running.shadows[backend] ?? 0;
      if (proportion !== previous) routing.push({ op: 'shadowTraffic', endpoint: name, backend, proportion, previous });
    }
  }

  const backendDeletes: DeployStep[] = Object.keys(current.backends)
    .filter((name) => !(name in desired.backends))
    .map((name) => ({ op: 'deleteBackend', backend: name }));

  const steps = [...creates, ...updates, ...endpointDeletes, ...endpointCreates, ...routing, ...scaleDowns, ...backendDeletes];
  return options.capacity === undefined ? steps : orderForCapacity(steps, current, options.capacity);
}

function formatValue(value: unknown): string {
  return typeof value === 'string' ? value : canonical(value);
}

function formatWeights(weights: Record<string, number>): string {
  const entries = Object.entries(weights);
  return entries.length === 0 ? 'none' : entries.map(([backend, weight]) => `${backend} ${weight}`).join(', ');
}

function replicas(count: number): string {
  return `${count} replica${count === 1 ? '' : 's'}`;
}

function later(deferred: number | undefined): string {
  return deferred === undefined ? '' : `; ${deferred} more once there is room`;
}

/** A human-readable line for a step, e.g. 'echo: numReplicas 1 → 2'. */
export function describeStep(step: DeployStep): string {
  switch (step.op) {
    case 'createBackend':
      return `creating backend ${step.backend} (building image, starting ${replicas(step.spec.config.numReplicas)}${later(step.deferred)})…`;
    case 'updateBackendConfig':
      return `${step.backend}: ${Object.entries(step.changes)
        .map(([key, value]) => `${key} ${formatValue(step.previous[key as keyof BackendConfig])} → ${formatValue(value)}`)
        .join(', ')}${step.reason === undefined ? '' : ` (${step.reason})`}`;
    case 'updateBackend': {
      const how = [
        ...(step.inPlace === true ? ['in place: no room for a new replica beside the old ones'] : []),
        ...(step.deferred === undefined ? [] : [`${replicas(step.spec.config.numReplicas)}${later(step.deferred)}`]),
      ];
      return `rolling out a new version of ${step.backend}: ${step.changes.join('; ')}${how.length === 0 ? '' : ` (${how.join('; ')})`}…`;
    }
    case 'deleteEndpoint':
      return step.recreate
        ? `endpoint ${step.endpoint}: route or methods changed, recreating it`
        : `deleting endpoint ${step.endpoint}${step.route === null ? '' : ` (route ${step.route})`}`;
    case 'createEndpoint':
      return `creating endpoint ${step.endpoint}${step.route === null ? '' : ` at ${step.methods.join(',')} ${step.route}`} → ${step.backend}`;
    case 'setTraffic':
      return `${step.endpoint}: traffic ${formatWeights(step.previous)} → ${formatWeights(step.traffic)}`;
    case 'shadowTraffic':
      return step.proportion === 0
        ? `${step.endpoint}: removing shadow ${step.backend}`
        : `${step.endpoint}: shadow ${step.backend} ${step.previous} → ${step.proportion}`;
    case 'deleteBackend':
      return `deleting backend ${step.backend} (draining its replicas)…`;
  }
}

/** What createBackend and updateBackend take from an app file's backend; an autoscaled one's count is the autoscaler's. */
function backendOptions(spec: BackendSpec) {
  const { numReplicas, ...rest } = spec.config;
  const config = spec.config.autoscaling === null ? { numReplicas, ...rest } : rest;
  return { initArgs: spec.initArgs, config, replicaOptions: spec.replicaOptions };
}

async function run(client: Client, step: DeployStep): Promise<void> {
  switch (step.op) {
    case 'createBackend':
      return client.createBackend(step.backend, step.spec.import, backendOptions(step.spec));
    case 'updateBackendConfig':
      return client.updateBackendConfig(step.backend, step.changes);
    case 'updateBackend':
      return client.updateBackend(step.backend, step.spec.import, backendOptions(step.spec));
    case 'deleteEndpoint':
      return client.deleteEndpoint(step.endpoint);
    case 'createEndpoint':
      return client.createEndpoint(step.endpoint, {
        backend: step.backend,
        methods: step.methods,
        ...(step.route === null ? {} : { route: step.route }),
        ...(step.allowCallMethod ? { allowCallMethod: true } : {}),
      });
    case 'setTraffic':
      return client.setTraffic(step.endpoint, step.traffic);
    case 'shadowTraffic':
      return client.shadowTraffic(step.endpoint, step.backend, step.proportion);
    case 'deleteBackend':
      return client.deleteBackend(step.backend);
  }
}

/** A progress line for a step that is still running, or undefined when there is nothing to say. */
async function progress(client: Client, step: DeployStep, elapsedS: number): Promise<string | undefined> {
  if (step.op === 'updateBackendConfig' && (step.changes.numReplicas ?? 0) < (step.previous.numReplicas ?? 0)) {
    return `  ${step.backend}: draining replicas (${elapsedS}s)`;
  }
  if (step.op === 'createBackend' || step.op === 'updateBackend') {
    const build = (await client.listBuilds()).find((b) => b.backend === step.backend);
    if (build !== undefined) return `  ${step.backend}: building image${build.step === null ? '' : `, ${build.step}`} (${elapsedS}s)`;
  }
  const target =
    step.op === 'createBackend' ? step.spec.config.numReplicas : step.op === 'updateBackendConfig' ? step.changes.numReplicas : undefined;
  if (step.op === 'createBackend' || step.op === 'updateBackendConfig') {
    try {
      const list = await client.listReplicas(step.backend);
      if (target !== undefined)
        return `  ${step.backend}: starting ${replicas(target)}, ${list.filter((r) => r.state === 'ready').length} ready (${elapsedS}s)`;
    } catch (error) {
      if (step.op === 'createBackend' && isFlotillaError(error, 'BACKEND_NOT_FOUND')) {
        return `  ${step.backend}: building image (${elapsedS}s)`;
      }
    }
  }
  if (step.op === 'updateBackend') {
    const [info, list] = await Promise.all([client.getBackendConfig(step.backend), client.listReplicas(step.backend)]);
    const ready = list.filter((r) => r.state === 'ready' && r.version === info.version).length;
    const state = info.rollout?.state ?? 'rolling';
    return `  ${step.backend}: ${state}, ${ready}/${info.numReplicas} replicas of version ${info.version} ready (${elapsedS}s)`;
  }
  if (step.op === 'deleteBackend') return `  ${step.backend}: draining replicas (${elapsedS}s)`;
  if (step.op === 'deleteEndpoint') return `  ${step.endpoint}: waiting for requests in flight (${elapsedS}s)`;
  return `  still working (${elapsedS}s)`;
}

export interface ApplyOptions {
  /** How often a long step (image build, replicas starting or draining) logs its progress; 0 for never. Default 5000. */
  progressIntervalMs?: number;
  /** Where each step shows its progress (a terminal redraws one line); default: log lines. */
  progressLine?: () => ProgressLine;
}

/**
 * Runs the steps in order, logging a line before each and progress lines
 * while a long one runs. Stops at the first failure with the step's error
 * code; what was applied stays applied, and deploying again finishes the job.
 */
export async function applyPlan(
  client: Client,
  steps: DeployStep[],
  log: (line: string) => void,
  options: ApplyOptions = {},
): Promise<void> {
  if (steps.length === 0) {
    log('nothing to change');
    return;
  }
  const intervalMs = options.progressIntervalMs ?? 5000;
  for (const [index, step] of steps.entries()) {
    log(describeStep(step));
    const display = options.progressLine?.();
    const started = Date.now();
    let polling = false;
    const poll = (): void => {
      if (polling) return;
      polling = true;
      progress(client, step, Math.round((Date.now() - started) / 1000))
        .then((line) => line !== undefined && (display === undefined ? log(line) : display.show(line)))
        .catch(() => undefined)
        .finally(() => (polling = false));
    };
    const timer = intervalMs > 0 ? setInterval(poll, intervalMs) : undefined;
    try {
      await run(client, step);
    } catch (error) {
      if (!isFlotillaError(error)) throw error;
      throw new FlotillaError(
        error.code,
        `${describeStep(step).replace(/…$/, '')} failed: ${error.message}\n` +
          `${index} of ${steps.length} changes were applied before it; fix the problem and deploy again to finish.`,
        error.details,
      );
    } finally {
      clearInterval(timer);
      display?.end();
    }
  }
  log(`deployed: ${steps.length} change${steps.length === 1 ? '' : 's'}`);
}

export interface DeployOptions extends ApplyOptions {
  log: (line: string) => void;
  /** Log the plan without applying it. */
  dryRun?: boolean;
}

/** `flotilla deploy FILE`: parses the file, plans against what runs, and applies (or, dry, only logs) the plan. */
export async function deployAppFile(client: Client, path: string, options: DeployOptions): Promise<DeployStep[]> {
  const desired = loadAppFile(path);
  const [backends, endpoints, capacity] = await Promise.all([client.listBackends(), client.listEndpoints(), client.getCapacity()]);
  const digests: Record<string, string> = {};
  for (const [name, spec] of Object.entries(desired.backends)) {
    const context = spec.runtimeEnv.context;
    if (name in backends && context !== undefined && spec.runtimeEnv.image === undefined) {
      const { runtime, packages, dockerfile } = spec.runtimeEnv;
      digests[name] = await contextDigest({ backend: name, contextDir: context, runtime, packages, dockerfile });
    }
  }
  const steps = planDeploy(desired, { backends, endpoints }, { digests, capacity: capacityOf(capacity) });
  if (options.dryRun === true) {
    if (steps.length === 0) options.log('nothing to change');
    for (const step of steps) options.log(`would: ${describeStep(step)}`);
    return steps;
  }
  await applyPlan(client, steps, options.log, options);
  return steps;
}
