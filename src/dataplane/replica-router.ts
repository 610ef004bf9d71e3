import { FlotillaError } from '../common/errors.js';
import { InFlight } from './in-flight.js';
import { leastBusy, Quarantine, QUARANTINE_MS } from './quarantine.js';

export { QUARANTINE_MS };

export interface RoutedReplica<T> {
  id: string;
  target: T;
}

export interface Lease<T> {
  replica: RoutedReplica<T>;
  release(): void;
}

/** What a queued request stops waiting on: its `signal`, read only when the request has to queue. */
export interface Abortable {
  readonly signal: AbortSignal;
}

export interface RouterSettings {
  maxConcurrentQueries: number;
  maxQueuedRequests: number;
  /** How long a request waits for a replica when the backend has none ready; 0 refuses at once. */
  noReplicaWaitMs: number;
  /** The backend scales from zero: a request still waiting for a first replica after noReplicaWaitMs gets COLD_START_TIMEOUT, not NO_REPLICAS. */
  coldStart?: boolean;
}

/** What the Dispatcher asks of the part that picks one backend's replica for a request (ReplicaRouter, or a front-door worker's LeasedRouter). */
export interface BackendRouter<T> {
  /** Requests queued and in flight. */
  readonly ongoing: number;
  readonly queued: number;
  inFlight(replicaId: string): number;
  update(replicas: RoutedReplica<T>[], settings: RouterSettings): void;
  tryAcquire(exclude?: ReadonlySet<string>): Lease<T> | undefined;
  acquire(abortable?: Abortable, exclude?: ReadonlySet<string>): Promise<Lease<T>>;
  drained(replicaId: string): Promise<void>;
  eject(replicaId: string): void;
  close(): void;
}

const NONE: ReadonlySet<string> = new Set();

interface Slot<T> {
  replica: RoutedReplica<T>;
  inFlight: number;
}

interface Waiter<T> {
  exclude: ReadonlySet<string>;
  resolve(lease: Lease<T>): void;
  reject(error: Error): void;
  timer?: NodeJS.Timeout;
}

/**
 * Spreads one backend's requests over its ready replicas: each request goes to
 * the replica with the fewest in flight, no replica ever holds more than
 * maxConcurrentQueries, and up to maxQueuedRequests more wait in FIFO order;
 * beyond that a request is refused with QUEUE_FULL. A waiter whose signal
 * aborts leaves the queue; a lease releases exactly once. A replica removed by
 * update() keeps counting its leases until they are released (drained()).
 *
 * Preferences, never dead ends: a retry excludes the replicas it already
 * tried, and eject() takes a replica that failed a connection out of
 * rotation until the next update() or QUARANTINE_MS, whichever comes first.
 * Both only narrow the choice while another candidate exists: when every
 * replica is tried or ejected, those are used again, so no request waits for
 * a replica that cannot come. A waiter that cannot be served never holds up
 * later ones that can.
 *
 * For the autoscaler: `ongoing` counts the requests queued and in flight, and
 * a request that arrives while the backend has no replica is reported as
 * demand (onDemand), so that one can be started.
 */
export class ReplicaRouter<T> implements BackendRouter<T> {
  private slots: Slot<T>[] = [];
  private readonly queue: Waiter<T>[] = [];
  private readonly leases = new InFlight();
  private nextStart = 0;
  private readonly quarantine = new Quarantine();
  private ejectionTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly backend: string,
    private settings: RouterSettings,
    /** Called when a request arrives while the backend has no replica (whether it then waits or is refused QUEUE_FULL). */
    private readonly onDemand: () => void = () => undefined,
    /** Called when a request starts waiting in the queue. */
    private readonly onQueued: () => void = () => undefined,
  ) {}

  update(replicas: RoutedReplica<T>[], settings: RouterSettings): void {
    const previous = new Map(this.slots.map((slot) => [slot.replica.id, slot]));
    this.slots = replicas.map((replica) => previous.get(replica.id) ?? { replica, inFlight: 0 });
    this.quarantine.clear();
    clearTimeout(this.ejectionTimer);
    this.settings = settings;
    if (this.slots.length === 0 && settings.noReplicaWaitMs === 0) this.rejectAll(() => this.noReplicas());
    if (this.slots.length === 0)
      this.queue.filter((waiter) => waiter.timer === undefined).forEach((waiter) => this.armNoReplicaTimer(waiter));
    this.drainQueue();
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Requests queued and in flight, on replicas still routed to or leaving. */
  get ongoing(): number {
    return this.queue.length + this.leases.total;
  }

  inFlight(replicaId: string): number {
    return this.leases.count(replicaId);
  }

  /** Resolves once no lease on this replica is outstanding. */
  drained(replicaId: string): Promise<void> {
    return this.leases.idle(replicaId);
  }

  /** Takes the replica out of rotation (see the class comment); unknown ids are ignored. */
  eject(replicaId: string): void {
    if (!this.slots.some((s) => s.replica.id === replicaId)) return;
    this.quarantine.eject(replicaId);
    clearTimeout(this.ejectionTimer);
    this.ejectionTimer = setTimeout(() => this.drainQueue(), QUARANTINE_MS + 1);
    this.ejectionTimer.unref();
  }

  /** A lease at once, when nothing is queued and a replica has room; otherwise undefined (and acquire() decides). */
  tryAcquire(exclude: ReadonlySet<string> = NONE): Lease<T> | undefined {
    const slot = this.queue.length === 0 ? this.freeSlot(exclude) : undefined;
    return slot === undefined ? undefined : this.lease(slot);
  }

  acquire(abortable?: Abortable, exclude: ReadonlySet<string> = NONE): Promise<Lease<T>> {
    if (this.slots.length === 0 && this.settings.noReplicaWaitMs === 0) return Promise.reject(this.noReplicas());
    const lease = this.tryAcquire(exclude);
    if (lease !== undefined) return Promise.resolve(lease);
    if (this.slots.length === 0) this.onDemand();
    if (this.queue.length >= this.settings.maxQueuedRequests) {
      return Promise.reject(
        new FlotillaError(
          'QUEUE_FULL',
          `backend '${this.backend}' is saturated: every replica is at maxConcurrentQueries and ${this.queue.length} requests are queued`,
        ),
      );
    }
    return new Promise<Lease<T>>((resolve, reject) => {
      const waiter: Waiter<T> = { exclude, resolve, reject };
      this.queue.push(waiter);
      this.onQueued();
      if (this.slots.length === 0) this.armNoReplicaTimer(waiter);
      const signal = abortable?.signal;
      if (signal?.aborted) this.leave(waiter, new Error('request aborted while queued'));
      else signal?.addEventListener('abort', () => this.leave(waiter, new Error('request aborted while queued')), { once: true });
      if (this.queue.length > 1) this.drainQueue();
    });
  }

  close(): void {
    this.slots = [];
    clearTimeout(this.ejectionTimer);
    this.rejectAll(() => this.noReplicas());
  }

  private armNoReplicaTimer(waiter: Waiter<T>): void {
    waiter.timer = setTimeout(() => {
      waiter.timer = undefined;
      if (this.slots.length > 0) return;
      this.leave(waiter, this.settings.coldStart === true ? this.coldStartTimeout() : this.noReplicas());
    }, this.settings.noReplicaWaitMs);
  }

  private leave(waiter: Waiter<T>, error: Error): void {
    const index = this.queue.indexOf(waiter);
    if (index < 0) return;
    this.queue.splice(index, 1);
    clearTimeout(waiter.timer);
    waiter.reject(error);
  }

  /**
   * The least loaded replica with room, among the best class that has any
   * replica at all: untried and in rotation, else untried, else any.
   */
  private freeSlot(exclude: ReadonlySet<string>): Slot<T> | undefined {
    const { slots, quarantine, nextStart } = this;
    const count = slots.length;
    const now = quarantine.size > 0 ? performance.now() : 0;
    const at = (i: number): Slot<T> => slots[(nextStart + i) % count]!;
    const picked = leastBusy(
      count,
      (i) => {
        const id = at(i).replica.id;
        return exclude.size > 0 && exclude.has(id) ? 2 : quarantine.size > 0 && quarantine.holds(id, now) ? 1 : 0;
      },
      (i) => at(i).inFlight,
      (i) => at(i).inFlight < this.settings.maxConcurrentQueries,
    );
    this.nextStart = count === 0 ? 0 : (nextStart + 1) % count;
    return picked < 0 ? undefined : at(picked);
  }

  private lease(slot: Slot<T>): Lease<T> {
    slot.inFlight++;
    const leave = this.leases.enter(slot.replica.id);
    let released = false;
    return {
      replica: slot.replica,
      release: () => {
        if (released) return;
        released = true;
        slot.inFlight--;
        leave();
        this.drainQueue();
      },
    };
  }

  private drainQueue(): void {
    for (let i = 0; i < this.queue.length;) {
      const waiter = this.queue[i];
      if (waiter === undefined) return;
      const slot = this.freeSlot(waiter.exclude);
      if (slot === undefined) {
        if (waiter.exclude.size === 0 && this.quarantine.size === 0) return;
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      clearTimeout(waiter.timer);
      waiter.resolve(this.lease(slot));
    }
  }

  private rejectAll(error: () => Error): void {
    for (const waiter of this.queue.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(error());
    }
  }

  private coldStartTimeout(): FlotillaError {
    const seconds = this.settings.noReplicaWaitMs / 1000;
    return new FlotillaError(
      'COLD_START_TIMEOUT',
      `backend '${this.backend}' had no replica ready within ${seconds} s of this request (coldStartTimeoutS); try again`,
    );
  }

  private noReplicas(): FlotillaError {
    return new FlotillaError('NO_REPLICAS', `backend '${this.backend}' has no ready replicas`);
  }
}
