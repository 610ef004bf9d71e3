import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Client } from '../api.js';
import { errorMessage, isFlotillaError } from '../common/errors.js';
import { loadAppFile, type AppSpec } from './app-file.js';
import { deployAppFile, type ApplyOptions } from './deploy.js';
import type { DeployStep } from './deploy-steps.js';

export interface DevLoopOptions extends ApplyOptions {
  log(line: string): void;
  /** How long to wait for more changes before deploying (an editor saves several files at once). Default 300. */
  quietMs?: number;
}

/** Paths under a context that never change the image: dependencies the build installs itself, and version control. */
const IGNORED = /(^|\/)(node_modules|\.git|__pycache__)(\/|$)/;

/**
 * `flotilla dev FILE` (or `deploy --watch`): deploys the app file, then watches it and every backend's context
 * directory; after each change (once the files have been quiet for `quietMs`) it checks the file again and deploys
 * what differs: config changes are applied live, changed files roll out a new version replica by replica. Each round
 * prints its steps, each rolled-out backend's result, and a failed rollout's reason and replica errors. A change
 * during a round starts another once it ends; rounds never overlap.
 */
export class DevLoop {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(
    private readonly client: Client,
    private readonly file: string,
    private readonly options: DevLoopOptions,
  ) {}

  /** The first deploy; watching starts with it. */
  start(): Promise<void> {
    this.trigger();
    return this.round ?? Promise.resolve();
  }

  /** Stops watching and waits for a round under way. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    for (const watcher of this.watchers) watcher.close();
    await this.round;
  }

  private trigger(): void {
    if (this.closed) return;
    if (this.round !== undefined) {
      this.again = true;
      return;
    }
    this.round = this.deploy().finally(() => {
      this.round = undefined;
      if (this.again) {
        this.again = false;
        this.trigger();
      }
    });
  }

  private changed(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.trigger(), this.options.quietMs ?? 300);
  }

  private async deploy(): Promise<void> {
    const { log } = this.options;
    let spec: AppSpec;
    try {
      spec = loadAppFile(this.file);
    } catch (error) {
      log(`${this.file} has problems; nothing was deployed. Fix them and save again:\n${errorMessage(error)}`);
      this.watchAll(undefined);
      return;
    }
    this.watchAll(spec);
    const started = Date.now();
    try {
      const steps = await deployAppFile(this.client, this.file, this.options);
      await this.report(steps.filter((step) => step.op === 'createBackend' || step.op === 'updateBackend').map(backendOf));
      if (steps.length > 0) log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (error) {
      log(`deploy failed: ${isFlotillaError(error) ? `${error.code}: ` : ''}${errorMessage(error)}`);
      await this.report(Object.keys(spec.backends), true);
    }
    if (!this.closed)
      log(
        `watching ${this.file} and ${this.contexts(spec).length} context director${this.contexts(spec).length === 1 ? 'y' : 'ies'} for changes (Ctrl-C to stop)`,
      );
  }

  /** Each backend's rollout result; with `failedOnly`, only those whose rollout failed, with their replicas' errors. */
  private async report(backends: string[], failedOnly = false): Promise<void> {
    for (const backend of backends) {
      try {
        const [info, replicas] = await Promise.all([this.client.getBackendConfig(backend), this.client.listReplicas(backend)]);
        const rollout = info.rollout;
        const failed = rollout !== null && (rollout.state === 'rolled-back' || rollout.state === 'paused');
        if (failedOnly && !failed) continue;
        const ready = replicas.filter((replica) => replica.state === 'ready' && replica.version === info.version).length;
        this.options.log(
          failed
            ? `${backend}: rollout ${rollout.state} (${rollout.fromVersion} → ${rollout.targetVersion})${rollout.reason === null ? '' : `: ${rollout.reason}`}`
            : `${backend}: version ${info.version} live, ${ready}/${info.numReplicas} replicas ready`,
        );
        for (const replica of replicas.filter((candidate) => candidate.lastError !== null))
          this.options.log(`  replica ${replica.id}: ${replica.lastError}`);
      } catch (error) {
        if (!isFlotillaError(error, 'BACKEND_NOT_FOUND')) throw error;
      }
    }
  }

  private contexts(spec: AppSpec): string[] {
    return [...new Set(Object.values(spec.backends).flatMap((backend) => backend.runtimeEnv.context ?? []))];
  }

  /** Watches the app file (through its directory: editors replace a file by renaming) and the file's contexts. */
  private watchAll(spec: AppSpec | undefined): void {
    for (const watcher of this.watchers) watcher.close();
    this.watchers = [];
    if (this.closed) return;
    const name = basename(this.file);
    this.watchers.push(watch(dirname(resolve(this.file)), (_event, changed) => changed === name && this.changed()));
    for (const context of spec === undefined ? [] : this.contexts(spec)) {
      this.watchers.push(
        watch(context, { recursive: true }, (_event, changed) => {
          if (changed === null || !IGNORED.test(changed)) this.changed();
        }),
      );
    }
  }
}

function backendOf(step: DeployStep): string {
  return 'backend' in step ? step.backend : '';
}
