import { describe, expect, it } from 'vitest';
import { isFlotillaError } from '../../src/common/errors.js';
import { ReplicaRouter } from '../../src/proxy/replica-router.js';

const replicas = (...ids: string[]) => ids.map((id) => ({ id, target: id }));

describe('ReplicaRouter', () => {
  it('sends each request to the replica with the fewest in flight', async () => {
    const router = new ReplicaRouter<string>('b', 10);
    router.update(replicas('r1', 'r2', 'r3'), 10);
    const leases = await Promise.all(Array.from({ length: 6 }, () => router.acquire()));
    expect(['r1', 'r2', 'r3'].map((id) => router.inFlight(id))).toEqual([2, 2, 2]);
    leases.filter((l) => l.replica.id === 'r2').forEach((l) => l.release());
    const next = await router.acquire();
    expect(next.replica.id).toBe('r2');
  });

  it('never exceeds maxConcurrentQueries and queues the rest in order', async () => {
    const router = new ReplicaRouter<string>('b', 1);
    router.update(replicas('r1'), 1);
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
    const router = new ReplicaRouter<string>('b', 2);
    router.update(replicas('r1'), 2);
    const lease = await router.acquire();
    await router.acquire();
    lease.release();
    lease.release();
    expect(router.inFlight('r1')).toBe(1);
  });

  it('drops an aborted waiter from the queue', async () => {
    const router = new ReplicaRouter<string>('b', 1);
    router.update(replicas('r1'), 1);
    const held = await router.acquire();
    const controller = new AbortController();
    const aborted = router.acquire(controller.signal);
    controller.abort();
    await expect(aborted).rejects.toThrow(/aborted/);
    expect(router.queued).toBe(0);
    held.release();
    expect(router.inFlight('r1')).toBe(0);
  });

  it('serves queued requests when replicas are added', async () => {
    const router = new ReplicaRouter<string>('b', 1);
    router.update(replicas('r1'), 1);
    await router.acquire();
    const waiting = router.acquire();
    router.update(replicas('r1', 'r2'), 1);
    expect((await waiting).replica.id).toBe('r2');
  });

  it('keeps in-flight counts across updates', async () => {
    const router = new ReplicaRouter<string>('b', 5);
    router.update(replicas('r1'), 5);
    await router.acquire();
    router.update(replicas('r1', 'r2'), 5);
    expect(router.inFlight('r1')).toBe(1);
  });

  it('refuses with NO_REPLICAS when the backend has none', async () => {
    const router = new ReplicaRouter<string>('b', 1);
    router.update(replicas('r1'), 1);
    await router.acquire();
    const waiting = router.acquire();
    router.update([], 1);
    const error = await waiting.catch((e: unknown) => e);
    expect(isFlotillaError(error, 'NO_REPLICAS')).toBe(true);
    await expect(router.acquire()).rejects.toMatchObject({ code: 'NO_REPLICAS' });
  });
});
