import { afterEach, describe, expect, it } from 'vitest';
import { Dispatcher } from '../../src/dataplane/dispatcher.js';
import { IDLE_RETURN_MS, LeaseClient } from '../../src/front-door/workers/leased-router.js';
import { LeaseDesk } from '../../src/front-door/workers/lease-desk.js';
import type { Lease } from '../../src/dataplane/replica-router.js';
import type { ReplicaTarget } from '../../src/runtime/container-runtime.js';
import type { FromWorker, ToWorker } from '../../src/front-door/workers/worker-protocol.js';

/** The control plane's Dispatcher with a LeaseDesk, and front-door workers' Dispatchers on LeaseClients, wired as IPC would (JSON, later). */
function bench(settings: { replicas: number; maxConcurrentQueries: number; maxQueuedRequests: number }) {
  let desk: LeaseDesk | undefined = undefined;
  const primary = new Dispatcher({ onQueued: (backend) => void desk?.contend(backend) });
  desk = new LeaseDesk(primary);
  const snapshot = {
    endpoints: [],
    backends: [
      {
        name: 'b',
        ...settings,
        noReplicaWaitMs: 1000,
        requestTimeoutS: null,
        replicas: Array.from({ length: settings.replicas }, (_, i) => ({ id: `r${i + 1}`, target: { socketPath: `/r${i + 1}` } })),
      },
    ],
  };
  primary.update(snapshot);
  const workers = [0, 1].map(() => {
    const wants: FromWorker[] = [];
    let client: LeaseClient | undefined = undefined;
    const seat = desk!.seat((message: ToWorker) => setTimeout(() => client!.receive(JSON.parse(JSON.stringify(message)) as ToWorker)));
    client = new LeaseClient((message) => {
      wants.push(message);
      setTimeout(() => desk!.receive(seat, JSON.parse(JSON.stringify(message)) as FromWorker));
    });
    const dispatcher = new Dispatcher({ router: (backend) => client!.router(backend) });
    dispatcher.update(snapshot);
    return { dispatcher, client, seat, sent: (t: FromWorker['t']) => wants.filter((m) => m.t === t).length };
  });
  const acquire = (worker: number, signal: AbortSignal): Promise<Lease<ReplicaTarget>> =>
    workers[worker]!.dispatcher.acquire('b', { signal });
  const take = (worker: number): Promise<Lease<ReplicaTarget>> => {
    const held = workers[worker]!.dispatcher.tryAcquire('b');
    return held !== undefined ? Promise.resolve(held) : workers[worker]!.dispatcher.acquire('b');
  };
  const close = (): void => {
    for (const worker of workers) worker.client.close();
    desk!.close();
  };
  return { primary, desk, workers, acquire, take, close, lent: () => primary.ongoingRequests('b') };
}

let opened: ReturnType<typeof bench> | undefined;
afterEach(() => opened?.close());

describe('slot leasing between front-door workers and the control plane', () => {
  it('keeps a lease after its request, so the next request asks the control plane nothing', async () => {
    const { workers, take } = (opened = bench({ replicas: 1, maxConcurrentQueries: 4, maxQueuedRequests: 4 }));
    (await take(0)).release();
    for (let i = 0; i < 5; i++) (await take(0)).release();
    expect(workers[0]!.sent('want')).toBe(1);
  });

  it('never prefers a replica for the idle lease it holds: sequential requests take turns over the replicas', async () => {
    const { workers, take } = (opened = bench({ replicas: 2, maxConcurrentQueries: 4, maxQueuedRequests: 4 }));
    const reached: string[] = [];
    for (let i = 0; i < 8; i++) {
      const lease = await take(0);
      reached.push(lease.replica.id);
      lease.release();
    }
    expect(reached).toEqual(['r1', 'r2', 'r1', 'r2', 'r1', 'r2', 'r1', 'r2']);
    expect(workers[0]!.sent('want')).toBe(2);
  });

  it('serves from its idle lease when the control plane has no free slot (a spare want is refused, not queued)', async () => {
    const { take, primary, workers } = (opened = bench({ replicas: 2, maxConcurrentQueries: 1, maxQueuedRequests: 4 }));
    const mine = await take(0);
    const other = await take(1);
    expect(other.replica.id).not.toBe(mine.replica.id);
    mine.release();
    const again = await take(0);
    expect(again.replica.id).toBe(mine.replica.id);
    expect(primary.queued('b')).toBe(0);
    expect(workers[0]!.sent('return')).toBe(0);
    again.release();
    other.release();
  });

  it('never lends more than maxConcurrentQueries over the workers, and queues at most maxQueuedRequests', async () => {
    const { take, primary } = (opened = bench({ replicas: 1, maxConcurrentQueries: 2, maxQueuedRequests: 1 }));
    const held = [await take(0), await take(0)];
    const queued = take(1);
    await expect.poll(() => primary.queued('b')).toBe(1);
    await expect(take(1)).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    held[0]!.release();
    const served = await queued;
    expect(served.replica.id).toBe('r1');
    expect(primary.queued('b')).toBe(0);
  });

  it('takes back idle leases before it refuses a request', async () => {
    const { take, lent } = (opened = bench({ replicas: 2, maxConcurrentQueries: 1, maxQueuedRequests: 0 }));
    const held = [await take(0), await take(0)];
    for (const lease of held) lease.release();
    expect(lent()).toBe(2);
    const [a, b] = [await take(1), await take(1)];
    expect(new Set([a.replica.id, b.replica.id])).toEqual(new Set(['r1', 'r2']));
  });

  it('serves the queue in order: a worker holding a lease returns it while another worker waits', async () => {
    const { take, primary } = (opened = bench({ replicas: 1, maxConcurrentQueries: 1, maxQueuedRequests: 4 }));
    const first = await take(0);
    const order: string[] = [];
    const waiting = take(1).then((lease) => (order.push('worker 1'), lease));
    await expect.poll(() => primary.queued('b')).toBe(1);
    first.release();
    const next = take(0).then((lease) => (order.push('worker 0'), lease));
    (await waiting).release();
    (await next).release();
    expect(order).toEqual(['worker 1', 'worker 0']);
  });

  it('gives back the leases of a worker that leaves, and drops its wants', async () => {
    const { desk, workers, take, lent, primary } = (opened = bench({ replicas: 1, maxConcurrentQueries: 1, maxQueuedRequests: 2 }));
    await take(0);
    void take(0).catch(() => undefined);
    await expect.poll(() => [lent(), primary.queued('b')]).toEqual([2, 1]);
    desk.unseat(workers[0]!.seat);
    expect([lent(), primary.queued('b')]).toEqual([0, 0]);
  });

  it('takes a cancelled wait out of the control plane queue', async () => {
    const { take, acquire, primary } = (opened = bench({ replicas: 1, maxConcurrentQueries: 1, maxQueuedRequests: 2 }));
    await take(0);
    const controller = new AbortController();
    const waiting = acquire(1, controller.signal);
    await expect.poll(() => primary.queued('b')).toBe(1);
    controller.abort();
    await expect(waiting).rejects.toThrow(/aborted while queued/);
    await expect.poll(() => primary.queued('b')).toBe(0);
  });

  it('returns a lease left idle, so the control plane counts only what is in use', async () => {
    const { take, lent } = (opened = bench({ replicas: 1, maxConcurrentQueries: 2, maxQueuedRequests: 0 }));
    (await take(0)).release();
    expect(lent()).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, IDLE_RETURN_MS * 2 + 50));
    expect(lent()).toBe(0);
  });

  it('holds no lease for a backend the control plane said is contended before the worker knew the backend', async () => {
    const sent: FromWorker[] = [];
    const client = new LeaseClient((message) => sent.push(message));
    client.receive({ t: 'contended', backend: 'late', contended: true });
    const router = client.router('late');
    router.update([{ id: 'r1', target: { socketPath: '/r1' } }]);
    const waiting = router.acquire();
    client.receive({ t: 'lease', want: 1, lease: 7, replica: { id: 'r1', target: { socketPath: '/r1' } } });
    (await waiting).release();
    expect(sent.at(-1)).toEqual({ t: 'return', leases: [7] });
    expect(router.tryAcquire()).toBeUndefined();
    client.close();
  });

  it('stops using a replica that failed and returns its idle leases', async () => {
    const { workers, take } = (opened = bench({ replicas: 2, maxConcurrentQueries: 1, maxQueuedRequests: 2 }));
    const [a, b] = [await take(0), await take(0)];
    a.release();
    b.release();
    workers[0]!.dispatcher.reportFailure('b', 'r1');
    const next = await take(0);
    expect(next.replica.id).toBe('r2');
  });
});
