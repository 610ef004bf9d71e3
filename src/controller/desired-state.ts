import { FlotillaError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { RoutingSnapshot } from '../dataplane/dispatcher.js';
import { CHECKPOINT_VERSION, parseCheckpoint, type EndpointRecord, type SavedBackend } from '../spec/saved-state.js';
import { BackendState } from './backend-state.js';
import { EndpointState } from './endpoint-state.js';
import type { StateStore } from './state-store.js';
import { savedTarget, targetOf, type BackendTarget } from './target.js';

export const shutDown = (): FlotillaError => new FlotillaError('SHUT_DOWN', 'Flotilla has been shut down; start a new client');

/**
 * The controller's desired state: its backends and endpoints in memory, and
 * the state file they are saved to first (a failed save changes nothing).
 * A backend being deleted stays in memory, not in the file, until its replicas are gone.
 */
export class DesiredState {
  readonly backends = new Map<string, BackendState>();
  endpoints = new EndpointState();
  /** Set when the controller stops: nothing is saved any more. */
  stopped = false;

  constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
  ) {}

  /** Reads the state file (refusing one it cannot read) into memory; false when there was none. */
  load(): boolean {
    const saved = parseCheckpoint(this.store.path, this.store.load());
    for (const backend of saved?.backends ?? []) {
      this.backends.set(backend.name, new BackendState(targetOf(backend), backend.replicaConfigs, backend.rollout));
    }
    this.endpoints = new EndpointState(saved?.endpoints);
    return saved !== undefined;
  }

  /** The backends that are not being deleted. */
  live(): BackendState[] {
    return [...this.backends.values()].filter((b) => b.deleting === undefined);
  }

  isLive(name: string): boolean {
    return this.backends.has(name) && this.backends.get(name)?.deleting === undefined;
  }

  backend(name: string): BackendState {
    const state = this.backends.get(name);
    if (state === undefined || state.deleting !== undefined)
      throw new FlotillaError('BACKEND_NOT_FOUND', `backend '${name}' does not exist`);
    return state;
  }

  savedBackends(): SavedBackend[] {
    return this.live().map((b) => b.saved());
  }

  save(backends: SavedBackend[] = this.savedBackends(), endpoints: EndpointRecord[] = this.endpoints.list()): void {
    if (this.stopped) throw shutDown();
    try {
      this.store.save({ version: CHECKPOINT_VERSION, backends, endpoints });
    } catch (error) {
      throw new FlotillaError(
        'STATE_SAVE_FAILED',
        `saving the state file ${this.store.path} failed (${errorMessage(error)}); nothing was changed. Check the disk and the permissions of stateDir`,
        undefined,
        { cause: error },
      );
    }
  }

  /** Saves the backend with a new target, before memory is changed. */
  saveTarget(state: BackendState, target: BackendTarget): void {
    this.save(this.savedBackends().map((b) => (b.name === state.name ? { ...state.saved(), ...savedTarget(target) } : b)));
  }

  /** Saves what memory holds, for bookkeeping the reconciler changed (config hashes, a rollout's progress); a failure is logged. */
  saveQuietly(): void {
    if (this.stopped) return;
    try {
      this.save();
    } catch (error) {
      this.log.error('could not save the state file', { error: errorMessage(error) });
    }
  }

  /** Stops saving and forgets the state file and the endpoints (shutdown). */
  clear(): void {
    this.stopped = true;
    this.store.clear();
    this.endpoints.clear();
  }

  /** What the data plane routes by: the endpoints, and each backend's limits and routable replicas. */
  routing(coldStartMs: number): RoutingSnapshot {
    return {
      endpoints: this.endpoints.routing(),
      backends: [...this.backends.values()].map((b) => ({
        name: b.name,
        maxConcurrentQueries: b.target.config.maxConcurrentQueries,
        maxQueuedRequests: b.target.config.maxQueuedRequests,
        requestTimeoutS: b.target.config.requestTimeoutS,
        noReplicaWaitMs: b.noReplicaWaitMs(coldStartMs),
        coldStart: b.target.config.autoscaling !== null,
        replicas: b.routable(),
      })),
    };
  }
}
