import { isFlotillaError } from '../../common/errors.js';
import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { Dispatcher } from '../../dataplane/dispatcher.js';
import type { Lease } from '../../dataplane/replica-router.js';
import { Asks } from './asks.js';
import { NO_FREE_SLOT } from './leased-router.js';
import type { FromWorker, ToWorker } from './worker-protocol.js';

/** How often a contended backend is checked for an empty queue, after which workers keep their leases again. */
const CALM_CHECK_MS = 100;
/** How long contend() waits for a worker to return its idle leases before it goes on without them. */
const RECLAIM_TIMEOUT_MS = 1_000;

/** One worker as the desk knows it: the leases it holds and the wants it waits on. */
export class DeskSeat {
  readonly leases = new Map<number, { backend: string; lease: Lease<ReplicaTarget> }>();
  readonly waits = new Map<number, AbortController>();
  /** The contended messages not yet acknowledged, by reclaim id. */
  readonly reclaims = new Asks<void>();

  constructor(readonly send: (message: ToWorker) => void) {}

  /** Tells the worker the backend is contended; resolves when it has returned its idle leases, or after RECLAIM_TIMEOUT_MS. */
  reclaim(backend: string): Promise<void> {
    return this.reclaims
      .ask((reclaim) => this.send({ t: 'contended', backend, contended: true, reclaim }), RECLAIM_TIMEOUT_MS)
      .catch(() => undefined);
  }
}

/**
 * The primary's side of slot leasing: it lends the slots of the Dispatcher's
 * ReplicaRouters to front-door workers. A want is granted at once when a
 * replica has a slot no one holds; otherwise the backend becomes contended:
 * every worker returns its idle leases (and, until the queue is empty, each
 * lease as its request ends), and only then does the want queue in the
 * router, so a request is never refused QUEUE_FULL while another worker sits
 * on an idle slot. A worker that exits gives everything back.
 */
export class LeaseDesk {
  private readonly seats = new Set<DeskSeat>();
  private readonly contended = new Map<string, Promise<void>>();
  private readonly calmCheck: NodeJS.Timeout;
  /**
   * Lease ids, unique over the desk's seats and (started from the clock) over desks: a seat that left and came back
   * (a control plane re-attached) may return a lease of its old seat, which must not release another's.
   */
  private nextLease = Date.now() * 1024;

  constructor(private readonly dispatcher: Dispatcher) {
    this.calmCheck = setInterval(() => this.calmDown(), CALM_CHECK_MS).unref();
  }

  seat(send: (message: ToWorker) => void): DeskSeat {
    const seat = new DeskSeat(send);
    this.seats.add(seat);
    // Told once its caller has it: a send made while seat() runs would reach a worker its caller has not built yet.
    queueMicrotask(() => {
      if (!this.seats.has(seat)) return;
      for (const backend of this.contended.keys()) send({ t: 'contended', backend, contended: true });
    });
    return seat;
  }

  unseat(seat: DeskSeat): void {
    this.seats.delete(seat);
    for (const controller of seat.waits.values()) controller.abort();
    for (const { lease } of seat.leases.values()) lease.release();
    seat.leases.clear();
    seat.reclaims.dropAll(new Error('the worker left'));
  }

  /** Handles a worker's lease message; false for one that is not about leases. */
  receive(seat: DeskSeat, message: FromWorker): boolean {
    switch (message.t) {
      case 'want':
        void this.want(seat, message.want, message.backend, new Set(message.exclude), message.spare === true);
        return true;
      case 'cancel':
        seat.waits.get(message.want)?.abort();
        return true;
      case 'return':
        for (const id of message.leases) {
          seat.leases.get(id)?.lease.release();
          seat.leases.delete(id);
        }
        if (message.ack !== undefined) seat.reclaims.answer(message.ack, undefined);
        return true;
      default:
        return false;
    }
  }

  /** Requests wait for the backend (at the router, or a want found no free slot): workers stop keeping leases (each has RECLAIM_TIMEOUT_MS to return its idle ones). */
  contend(backend: string): Promise<void> {
    let reclaimed = this.contended.get(backend);
    if (reclaimed === undefined) {
      reclaimed = Promise.all([...this.seats].map((seat) => seat.reclaim(backend))).then(() => undefined);
      this.contended.set(backend, reclaimed);
    }
    return reclaimed;
  }

  close(): void {
    clearInterval(this.calmCheck);
    for (const seat of [...this.seats]) this.unseat(seat);
  }

  private async want(seat: DeskSeat, want: number, backend: string, exclude: ReadonlySet<string>, spare: boolean): Promise<void> {
    let lease = this.dispatcher.tryAcquire(backend, exclude);
    if (lease === undefined && spare) {
      seat.send({ t: 'refused', want, code: NO_FREE_SLOT, message: 'no slot is free: use the idle lease' });
      return;
    }
    if (lease === undefined) {
      const controller = new AbortController();
      seat.waits.set(want, controller);
      try {
        await this.contend(backend);
        lease = this.dispatcher.tryAcquire(backend, exclude) ?? (await this.dispatcher.acquire(backend, controller, exclude));
      } catch (error) {
        if (!controller.signal.aborted && this.seats.has(seat)) {
          const { code, message } = isFlotillaError(error) ? error : { code: 'INTERNAL_ERROR', message: String(error) };
          seat.send({ t: 'refused', want, code, message });
        }
        return;
      } finally {
        seat.waits.delete(want);
      }
      if (controller.signal.aborted || !this.seats.has(seat)) {
        lease.release();
        return;
      }
    }
    const id = this.nextLease++;
    seat.leases.set(id, { backend, lease });
    seat.send({ t: 'lease', want, lease: id, replica: lease.replica });
  }

  private calmDown(): void {
    for (const [backend, reclaimed] of this.contended) {
      if (this.dispatcher.queued(backend) > 0) continue;
      void reclaimed.then(() => {
        if (this.contended.get(backend) !== reclaimed || this.dispatcher.queued(backend) > 0) return;
        this.contended.delete(backend);
        for (const seat of this.seats) seat.send({ t: 'contended', backend, contended: false });
      });
    }
  }
}
