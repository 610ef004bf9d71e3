import { FlotillaError, type ErrorCode } from '../../common/errors.js';
import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { Abortable, BackendRouter, Lease, RoutedReplica } from '../../dataplane/replica-router.js';
import { leastBusy, Quarantine } from '../../dataplane/quarantine.js';
import { Asks } from './asks.js';
import type { FromWorker, ToWorker } from './worker-protocol.js';

/** A lease no request used for this long goes back to the primary (so that its slot counts where it is needed). */
export const IDLE_RETURN_MS = 250;

const NONE: ReadonlySet<string> = new Set();
/** The refusal of a spare want: no slot is free now, use the idle lease in hand. */
export const NO_FREE_SLOT = 'NO_FREE_SLOT';

class NoFreeSlot extends Error {}

interface Held {
  id: number;
  replica: RoutedReplica<ReplicaTarget>;
  idleSince: number;
}

/**
 * A front-door worker's side of slot leasing: sends wants to the primary and
 * routes its answers (leases, refusals, contention) to the backend routers.
 */
export class LeaseClient {
  private readonly wants = new Asks<Held>();
  private readonly routers = new Map<string, LeasedRouter>();
  /** The backends the primary said are contended, kept for routers made later (a snapshot can come after the word). */
  private readonly contended = new Set<string>();
  private readonly sweep: NodeJS.Timeout;

  constructor(private readonly send: (message: FromWorker) => void) {
    this.sweep = setInterval(() => {
      const now = performance.now();
      for (const router of this.routers.values()) router.returnIdle(now);
    }, IDLE_RETURN_MS).unref();
  }

  router(backend: string): LeasedRouter {
    const router = new LeasedRouter(backend, this);
    router.setContended(this.contended.has(backend));
    this.routers.set(backend, router);
    return router;
  }

  forget(router: LeasedRouter): void {
    if (this.routers.get(router.backend) === router) this.routers.delete(router.backend);
  }

  want(router: LeasedRouter, exclude: ReadonlySet<string>, abortable?: Abortable, spare = false): Promise<Held> {
    let id = 0;
    const held = this.wants.ask((want) => {
      id = want;
      this.send({ t: 'want', want, backend: router.backend, exclude: [...exclude], ...(spare ? { spare } : {}) });
    });
    const signal = abortable?.signal;
    const abandon = (): void => {
      if (this.wants.drop(id, new Error('request aborted while queued'))) this.send({ t: 'cancel', want: id });
    };
    if (signal?.aborted) abandon();
    else signal?.addEventListener('abort', abandon, { once: true });
    return held;
  }

  giveBack(leases: number[], ack?: number): void {
    if (leases.length > 0 || ack !== undefined) this.send({ t: 'return', leases, ...(ack === undefined ? {} : { ack }) });
  }

  /** Handles the primary's answers; false for a message that is not about leases. */
  receive(message: ToWorker): boolean {
    if (message.t === 'refused') {
      this.wants.drop(
        message.want,
        message.code === NO_FREE_SLOT ? new NoFreeSlot(message.message) : new FlotillaError(message.code as ErrorCode, message.message),
      );
      return true;
    }
    if (message.t === 'lease') {
      if (!this.wants.answer(message.want, { id: message.lease, replica: message.replica, idleSince: 0 })) this.giveBack([message.lease]);
      return true;
    }
    if (message.t === 'contended') {
      if (message.contended) this.contended.add(message.backend);
      else this.contended.delete(message.backend);
      const router = this.routers.get(message.backend);
      const idle = router?.setContended(message.contended) ?? [];
      if (message.contended) this.giveBack(idle, message.reclaim);
      return true;
    }
    return false;
  }

  /**
   * The primary went away (a front door the control plane lost): every want fails with `error`, and the idle leases
   * are forgotten, not returned, as that primary took them back; the contended word is forgotten with them.
   */
  reset(error: Error): void {
    this.wants.dropAll(error);
    this.contended.clear();
    for (const router of this.routers.values()) router.forgetIdle();
  }

  close(): void {
    clearInterval(this.sweep);
  }
}

/**
 * One backend's replicas as a front-door worker sees them: it admits a
 * request on a lease it holds (no message to the primary), else asks the
 * primary for one, where the backend's only ReplicaRouter queues it, FIFO
 * with the other workers' and the handles' requests, and refuses it at
 * maxQueuedRequests; so maxConcurrentQueries and maxQueuedRequests hold
 * across workers. A lease whose request ended is kept for the next request,
 * but goes back when the primary says requests wait for the backend
 * (contended), when it stays idle IDLE_RETURN_MS, or when its replica
 * leaves the routing or fails a connection.
 */
export class LeasedRouter implements BackendRouter<ReplicaTarget> {
  closed = false;
  private replicas = new Map<string, RoutedReplica<ReplicaTarget>>();
  private idle: Held[] = [];
  private readonly busy = new Map<string, number>();
  private busyTotal = 0;
  private waiting = 0;
  private contended = false;
  private readonly quarantine = new Quarantine();

  constructor(
    readonly backend: string,
    private readonly client: LeaseClient,
  ) {}

  get ongoing(): number {
    return this.busyTotal + this.waiting;
  }

  get queued(): number {
    return this.waiting;
  }

  inFlight(replicaId: string): number {
    return this.busy.get(replicaId) ?? 0;
  }

  update(replicas: RoutedReplica<ReplicaTarget>[]): void {
    this.replicas = new Map(replicas.map((replica) => [replica.id, replica]));
    this.quarantine.clear();
    this.giveBackIdle((held) => !this.replicas.has(held.replica.id));
  }

  /**
   * A lease at once from those held idle, when this worker holds a lease on every replica it may use: otherwise a
   * replica it holds none on may be less busy over all, which only the primary knows (acquire asks it).
   */
  tryAcquire(exclude: ReadonlySet<string> = NONE): Lease<ReplicaTarget> | undefined {
    if (this.contended || this.unheld(exclude)) return undefined;
    return this.useIdle(exclude);
  }

  /**
   * Takes a lease held idle only when the primary has no free slot better than it: a worker never prefers a replica
   * because it holds an idle lease on it. A want `spare` (with an idle lease in hand) is answered NO_FREE_SLOT rather
   * than queued; the idle lease serves then.
   */
  async acquire(abortable?: Abortable, exclude: ReadonlySet<string> = NONE): Promise<Lease<ReplicaTarget>> {
    const lease = this.tryAcquire(exclude);
    if (lease !== undefined) return lease;
    const spare = !this.contended && this.usableIdle(exclude) >= 0;
    this.waiting++;
    let held: Held;
    try {
      held = await this.client.want(this, exclude, abortable, spare);
    } catch (error) {
      if (error instanceof NoFreeSlot) {
        const idle = this.useIdle(exclude);
        if (idle !== undefined) return idle;
        return this.acquire(abortable, exclude);
      }
      throw error;
    } finally {
      this.waiting--;
    }
    if (this.closed) {
      this.client.giveBack([held.id]);
      throw new FlotillaError('NO_REPLICAS', `backend '${this.backend}' has no ready replicas`);
    }
    return this.use(held);
  }

  /** The primary's router counts this worker's leases: the controller waits on that one. */
  drained(): Promise<void> {
    return Promise.resolve();
  }

  eject(replicaId: string): void {
    this.quarantine.eject(replicaId);
    this.giveBackIdle((held) => held.replica.id === replicaId);
  }

  close(): void {
    this.closed = true;
    this.giveBackIdle(() => true);
    this.client.forget(this);
  }

  forgetIdle(): void {
    this.idle = [];
    this.contended = false;
  }

  /** Sets whether requests wait for the backend at the primary; when they start to, returns the idle leases, no longer held. */
  setContended(contended: boolean): number[] {
    this.contended = contended;
    if (!contended) return [];
    return this.idle.splice(0).map((held) => held.id);
  }

  returnIdle(now: number): void {
    this.giveBackIdle((held) => now - held.idleSince >= IDLE_RETURN_MS);
  }

  /** Whether a replica this worker may use has no lease of it, idle or busy. */
  private unheld(exclude: ReadonlySet<string>): boolean {
    const now = this.quarantine.size > 0 ? performance.now() : 0;
    const idle = new Set(this.idle.map((held) => held.replica.id));
    for (const id of this.replicas.keys()) {
      if (exclude.has(id) || this.quarantine.holds(id, now)) continue;
      if (!idle.has(id) && !this.busy.has(id)) return true;
    }
    return false;
  }

  /** The idle lease to use: on the least busy replica, the one idle longest on ties (so replicas take turns); -1 for none. */
  private usableIdle(exclude: ReadonlySet<string>): number {
    const { idle, quarantine } = this;
    const now = quarantine.size > 0 ? performance.now() : 0;
    return leastBusy(
      idle.length,
      (i) => {
        const id = idle[i]!.replica.id;
        return exclude.has(id) || quarantine.holds(id, now) ? -1 : 0;
      },
      (i) => this.busy.get(idle[i]!.replica.id) ?? 0,
      () => true,
    );
  }

  private useIdle(exclude: ReadonlySet<string>): Lease<ReplicaTarget> | undefined {
    const best = this.usableIdle(exclude);
    if (best < 0) return undefined;
    const [held] = this.idle.splice(best, 1);
    return this.use(held!);
  }

  private use(held: Held): Lease<ReplicaTarget> {
    const id = held.replica.id;
    this.busy.set(id, (this.busy.get(id) ?? 0) + 1);
    this.busyTotal++;
    let released = false;
    return {
      replica: this.replicas.get(id) ?? held.replica,
      release: () => {
        if (released) return;
        released = true;
        this.busyTotal--;
        const busy = this.busy.get(id)! - 1;
        if (busy === 0) this.busy.delete(id);
        else this.busy.set(id, busy);
        const now = performance.now();
        if (this.contended || this.closed || !this.replicas.has(id) || this.quarantine.holds(id, now)) {
          this.client.giveBack([held.id]);
          return;
        }
        held.idleSince = now;
        this.idle.push(held);
      },
    };
  }

  private giveBackIdle(returned: (held: Held) => boolean): void {
    const back: number[] = [];
    this.idle = this.idle.filter((held) => {
      if (!returned(held)) return true;
      back.push(held.id);
      return false;
    });
    this.client.giveBack(back);
  }
}
