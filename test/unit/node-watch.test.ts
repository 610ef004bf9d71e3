import { afterEach, describe, expect, it, vi } from 'vitest';
import { watchNodes } from '../../src/resources/node-watch.js';
import { Scheduler, type NodeCapacity } from '../../src/resources/scheduler.js';
import { silentLogger } from './fakes/silent-logger.js';

const node = (name: string, ready: boolean): NodeCapacity => ({ name, ready, capacity: { cpus: 1, memoryMb: 100, gpus: [] } });

describe('watchNodes', () => {
  afterEach(() => vi.useRealTimers());

  it('stops placing on a node the cluster reports down, places there again once it is back, and logs both', async () => {
    vi.useFakeTimers();
    let nodes = [node('w1', true), node('w2', true)];
    const warnings: unknown[] = [];
    const scheduler = Scheduler.ofNodes(nodes);
    const stop = watchNodes(
      { listNodes: async () => nodes },
      scheduler,
      { ...silentLogger, warn: (message, meta) => warnings.push([message, meta]) },
      1000,
    );
    await vi.advanceTimersByTimeAsync(1000);
    nodes = [node('w1', false), node('w2', true)];
    await vi.advanceTimersByTimeAsync(1000);
    expect(scheduler.reserve('a', { numCpus: 1, memoryMb: null, numGpus: 0 }).node).toBe('w2');
    expect(() => scheduler.reserve('b', { numCpus: 1, memoryMb: null, numGpus: 0 })).toThrow(/1 ready node/);
    nodes = [node('w1', true), node('w2', true)];
    await vi.advanceTimersByTimeAsync(1000);
    expect(scheduler.reserve('b', { numCpus: 1, memoryMb: null, numGpus: 0 }).node).toBe('w1');
    expect(warnings).toEqual([
      ['node down', { component: 'scheduler', node: 'w1' }],
      ['node ready', { component: 'scheduler', node: 'w1' }],
    ]);
    stop();
  });
});
