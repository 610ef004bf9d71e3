import { describe, expect, it, vi } from 'vitest';
import { isFlotillaError } from '../../src/common/errors.js';
import { QUARANTINE_MS, ReplicaRouter } from '../../src/dataplane/replica-router.js';

const replicas = (...ids: string[]) => ids.map((id) => ({ id, target: id }));
const limits = (maxConcurrentQueries: number, maxQueuedRequests = 100, noReplicaWaitMs = 0) => ({
  maxConcurrentQueries,
  maxQueuedRequests,
  noReplicaWaitMs,
});

describe('ReplicaRouter', () => {
  it('sends each request to the replica with the fewest in flight', async () => {
    const router = new ReplicaRouter<string>('b', limits(10));
    router.update(replicas('r1', 'r2', 'r3'), limits(10));
    const leases = await Promise.all(Array.from({ length: 6 }, () => router.acquire()));
    expect(['r1', 'r2', 'r3'].map((id) => router.inFlight(id))).toEqual([2, 2, 2]);
    leases.filter((l) => l.replica.id === 'r2').forEach((l) => l.release());
    const next = await router.acquire();
    expect(next.replica.id).toBe('r2');
  });

  it('never exceeds maxConcurrentQueries and queues the rest in order', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1'), limits(1));
    const first = await router.acquire();
    const order: number[] = [];
    const second = router.acquire().then((l) => (order.push(2), l));
    const third = router.acquire().then((l) => (order.push(3), l));
    expect(router.queued).toBe(2);
    expect(router.inFlight('r1')).toBe(1);
    first.release();
    (await second).release();
    (await third).release();
    expect(order).toEqual([2, 3]);
    expect(router.inFlight('r1')).toBe(0);
  });

  it('releases a lease only once', async () => {
    const router = new ReplicaRouter<string>('b', limits(2));
    router.update(replicas('r1'), limits(2));
    const lease = await router.acquire();
    await router.acquire();
    lease.release();
    lease.release();
    expect(router.inFlight('r1')).toBe(1);
  });

  it('drops an aborted waiter from the queue', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1'), limits(1));
    const held = await router.acquire();
    const controller = new AbortController();
    const aborted = router.acquire(controller);
    controller.abort();
    await expect(aborted).rejects.toThrow(/aborted/);
    expect(router.queued).toBe(0);
    held.release();
    expect(router.inFlight('r1')).toBe(0);
  });

  it('refuses to queue a request that was aborted before it asked, and reads its signal only when it has to queue', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1'), limits(1));
    const reads: string[] = [];
    const abortable = (signal: AbortSignal) => ({
      get signal() {
        reads.push('read');
        return signal;
      },
    });
    const held = await router.acquire(abortable(new AbortController().signal));
    expect(reads).toEqual([]);
    await expect(router.acquire(abortable(AbortSignal.abort()))).rejects.toThrow(/aborted/);
    expect(reads).toEqual(['read']);
    expect(router.queued).toBe(0);
    held.release();
  });

  it('hands a lease at once with tryAcquire only when a replica has room and nothing is queued', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1'), limits(1));
    const lease = router.tryAcquire();
    expect(lease?.replica.id).toBe('r1');
    expect(router.tryAcquire()).toBeUndefined();
    const waiting = router.acquire();
    lease!.release();
    const next = await waiting;
    expect(router.tryAcquire()).toBeUndefined();
    next.release();
    expect(router.tryAcquire()?.replica.id).toBe('r1');
  });

  it('serves queued requests when replicas are added', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1'), limits(1));
    await router.acquire();
    const waiting = router.acquire();
    router.update(replicas('r1', 'r2'), limits(1));
    expect((await waiting).replica.id).toBe('r2');
  });

  it('refuses with QUEUE_FULL beyond maxQueuedRequests', async () => {
    const router = new ReplicaRouter<string>('b', limits(1, 2));
    router.update(replicas('r1'), limits(1, 2));
    await router.acquire();
    const queued = [router.acquire(), router.acquire()];
    await expect(router.acquire()).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    expect(router.queued).toBe(2);
    void queued;
  });

  it('prefers a replica not yet tried, waiting for one that is busy', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1', 'r2'), limits(1));
    const held = await router.acquire(undefined, new Set(['r1']));
    expect(held.replica.id).toBe('r2');
    const waiting = router.acquire(undefined, new Set(['r1']));
    expect(router.queued).toBe(1);
    held.release();
    expect((await waiting).replica.id).toBe('r2');
  });

  it('uses a tried replica when the untried ones are gone, instead of waiting forever', async () => {
    const router = new ReplicaRouter<string>('b', limits(5));
    router.update(replicas('r1', 'r2'), limits(5));
    const waiting = router.acquire(undefined, new Set(['r2']));
    expect((await waiting).replica.id).toBe('r1');
    router.update(replicas('r2'), limits(5));
    const retry = await router.acquire(undefined, new Set(['r2']));
    expect(retry.replica.id).toBe('r2');
  });

  it('serves a queued retry with a tried replica once the untried one is removed', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1', 'r2'), limits(1));
    const busy = await router.acquire(undefined, new Set(['r1']));
    const retry = router.acquire(undefined, new Set(['r1']));
    expect(router.queued).toBe(1);
    router.update(replicas('r1'), limits(1));
    expect((await retry).replica.id).toBe('r1');
    busy.release();
  });

  it('never lets a waiting retry block later requests that can take a free slot (retry wedge)', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1', 'r2'), limits(1));
    const onR2 = await router.acquire(undefined, new Set(['r1']));
    const retry = router.acquire(undefined, new Set(['r1']));
    const onR1 = await Promise.race([
      router.acquire(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('a free slot was held up by the waiting retry')), 200)),
    ]);
    expect(onR1.replica.id).toBe('r1');
    onR2.release();
    expect((await retry).replica.id).toBe('r2');
  });

  it('takes an ejected replica out of rotation until the next update', async () => {
    const router = new ReplicaRouter<string>('b', limits(10));
    router.update(replicas('r1', 'r2'), limits(10));
    router.eject('r1');
    const leases = await Promise.all(Array.from({ length: 4 }, () => router.acquire()));
    expect(leases.map((l) => l.replica.id)).toEqual(['r2', 'r2', 'r2', 'r2']);
    router.update(replicas('r1', 'r2'), limits(10));
    expect((await router.acquire()).replica.id).toBe('r1');
  });

  it('lets an ejected replica back after its quarantine, serving requests that waited meanwhile', async () => {
    vi.useFakeTimers();
    try {
      const router = new ReplicaRouter<string>('b', limits(1));
      router.update(replicas('r1', 'r2'), limits(1));
      router.eject('r1');
      await router.acquire();
      const waiting = router.acquire();
      expect(router.queued).toBe(1);
      vi.advanceTimersByTime(QUARANTINE_MS + 10);
      expect((await waiting).replica.id).toBe('r1');
    } finally {
      vi.useRealTimers();
    }
  });

  it('still uses ejected replicas when every replica is ejected', async () => {
    const router = new ReplicaRouter<string>('b', limits(5));
    router.update(replicas('r1', 'r2'), limits(5));
    router.eject('r1');
    router.eject('r2');
    const lease = await router.acquire();
    expect(['r1', 'r2']).toContain(lease.replica.id);
  });

  it('tells when a removed replica has no lease left', async () => {
    const router = new ReplicaRouter<string>('b', limits(5));
    router.update(replicas('r1', 'r2'), limits(5));
    const lease = await router.acquire(undefined, new Set(['r2']));
    router.update(replicas('r2'), limits(5));
    let drained = false;
    const done = router.drained('r1').then(() => (drained = true));
    await Promise.resolve();
    expect(drained).toBe(false);
    lease.release();
    await done;
    expect(drained).toBe(true);
  });

  it('lets requests wait for a replica when the backend has none for a while, then refuses', async () => {
    vi.useFakeTimers();
    try {
      const router = new ReplicaRouter<string>('b', limits(1, 100, 1000));
      router.update([], limits(1, 100, 1000));
      const served = router.acquire();
      router.update(replicas('r1'), limits(1, 100, 1000));
      expect((await served).replica.id).toBe('r1');
      router.update([], limits(1, 100, 1000));
      const refused = router.acquire();
      vi.advanceTimersByTime(1001);
      await expect(refused).rejects.toMatchObject({ code: 'NO_REPLICAS' });
    } finally {
      vi.useRealTimers();
    }
  });

  it('at zero replicas of a backend that scales from zero: signals demand, counts the wait, and refuses with COLD_START_TIMEOUT', async () => {
    vi.useFakeTimers();
    try {
      const settings = { ...limits(1, 2, 1000), coldStart: true };
      let demand = 0;
      const router = new ReplicaRouter<string>('b', settings, () => demand++);
      router.update([], settings);
      const first = router.acquire();
      const second = router.acquire();
      expect(demand).toBe(2);
      expect(router.ongoing).toBe(2);
      await expect(router.acquire()).rejects.toMatchObject({ code: 'QUEUE_FULL' });
      expect(demand).toBe(3);
      router.update(replicas('r1'), settings);
      const lease = await first;
      expect(router.ongoing).toBe(2);
      lease.release();
      (await second).release();
      expect(router.ongoing).toBe(0);
      router.update([], settings);
      const late = router.acquire();
      vi.advanceTimersByTime(1001);
      await expect(late).rejects.toMatchObject({ code: 'COLD_START_TIMEOUT', status: 503 });
      expect(router.ongoing).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('counts the requests on a removed replica as ongoing until they end', async () => {
    const router = new ReplicaRouter<string>('b', limits(5));
    router.update(replicas('r1'), limits(5));
    const lease = await router.acquire();
    router.update(replicas('r2'), limits(5));
    expect(router.ongoing).toBe(1);
    lease.release();
    expect(router.ongoing).toBe(0);
  });

  it('keeps in-flight counts across updates', async () => {
    const router = new ReplicaRouter<string>('b', limits(5));
    router.update(replicas('r1'), limits(5));
    await router.acquire();
    router.update(replicas('r1', 'r2'), limits(5));
    expect(router.inFlight('r1')).toBe(1);
  });

  it('refuses with NO_REPLICAS when the backend has none', async () => {
    const router = new ReplicaRouter<string>('b', limits(1));
    router.update(replicas('r1'), limits(1));
    await router.acquire();
    const waiting = router.acquire();
    router.update([], limits(1));
    const error = await waiting.catch((e: unknown) => e);
    expect(isFlotillaError(error, 'NO_REPLICAS')).toBe(true);
    await expect(router.acquire()).rejects.toMatchObject({ code: 'NO_REPLICAS' });
  });
});
