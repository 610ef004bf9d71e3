import { FlotillaError } from '../common/errors.js';

export interface RoutedReplica<T> {
  id: string;
  target: T;
}

export interface Lease<T> {
  replica: RoutedReplica<T>;
  release(): void;
}

interface Slot<T> {
  replica: RoutedReplica<T>;
  inFlight: number;
}

interface Waiter<T> {
  resolve(lease: Lease<T>): void;
  reject(error: Error): void;
}

/**
 * Spreads one backend's requests over its ready replicas: each request goes to
 * the replica with the fewest in flight, no replica ever holds more than
 * maxConcurrentQueries, and requests beyond that wait in FIFO order.
 * A waiter whose signal aborts leaves the queue; a lease releases exactly once.
 */
export class ReplicaRouter<T> {
  private slots: Slot<T>[] = [];
  private readonly queue: Waiter<T>[] = [];
  private nextStart = 0;

  constructor(
    private readonly backend: string,
    private maxConcurrentQueries: number,
  ) {}

  update(replicas: RoutedReplica<T>[], maxConcurrentQueries: number): void {
    const previous = new Map(this.slots.map((slot) => [slot.replica.id, slot]));
    this.slots = replicas.map((replica) => ({ replica, inFlight: previous.get(replica.id)?.inFlight ?? 0 }));
    this.maxConcurrentQueries = maxConcurrentQueries;
    if (this.slots.length === 0) this.rejectAll();
    this.drainQueue();
  }

  get queued(): number {
    return this.queue.length;
  }

  inFlight(replicaId: string): number {
    return this.slots.find((slot) => slot.replica.id === replicaId)?.inFlight ?? 0;
  }

  acquire(signal?: AbortSignal): Promise<Lease<T>> {
    if (this.slots.length === 0) return Promise.reject(this.noReplicas());
    const slot = this.freeSlot();
    if (slot !== undefined && this.queue.length === 0) return Promise.resolve(this.lease(slot));
    return new Promise<Lease<T>>((resolve, reject) => {
      const waiter: Waiter<T> = { resolve, reject };
      this.queue.push(waiter);
      signal?.addEventListener(
        'abort',
        () => {
          const index = this.queue.indexOf(waiter);
          if (index >= 0) {
            this.queue.splice(index, 1);
            reject(new Error('request aborted while queued'));
          }
        },
        { once: true },
      );
    });
  }

  close(): void {
    this.slots = [];
    this.rejectAll();
  }

  private freeSlot(): Slot<T> | undefined {
    let best: Slot<T> | undefined;
    const count = this.slots.length;
    for (let i = 0; i < count; i++) {
      const slot = this.slots[(this.nextStart + i) % count];
      if (slot === undefined || slot.inFlight >= this.maxConcurrentQueries) continue;
      if (best === undefined || slot.inFlight < best.inFlight) best = slot;
    }
    this.nextStart = count === 0 ? 0 : (this.nextStart + 1) % count;
    return best;
  }

  private lease(slot: Slot<T>): Lease<T> {
    slot.inFlight++;
    let released = false;
    return {
      replica: slot.replica,
      release: () => {
        if (released) return;
        released = true;
        slot.inFlight--;
        this.drainQueue();
      },
    };
  }

  private drainQueue(): void {
    while (this.queue.length > 0) {
      const slot = this.freeSlot();
      if (slot === undefined) return;
      this.queue.shift()?.resolve(this.lease(slot));
    }
  }

  private rejectAll(): void {
    for (const waiter of this.queue.splice(0)) waiter.reject(this.noReplicas());
  }

  private noReplicas(): FlotillaError {
    return new FlotillaError('NO_REPLICAS', `backend '${this.backend}' has no ready replicas`);
  }
}
