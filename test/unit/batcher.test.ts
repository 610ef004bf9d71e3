import { describe, expect, it } from 'vitest';
import { Batcher } from '../../src/replica/batcher.js';

describe('Batcher', () => {
  it('runs a batch as soon as maxBatchSize calls wait', async () => {
    const seen: number[][] = [];
    const batcher = new Batcher<number>({ maxBatchSize: 3, batchWaitTimeoutS: 60 }, async (inputs) => {
      seen.push(inputs);
      return inputs.map((n) => n * 10);
    });
    expect(await Promise.all([1, 2, 3].map((n) => batcher.submit(n)))).toEqual([10, 20, 30]);
    expect(seen).toEqual([[1, 2, 3]]);
  });

  it('runs a partial batch after the wait timeout', async () => {
    const seen: number[][] = [];
    const batcher = new Batcher<number>({ maxBatchSize: 10, batchWaitTimeoutS: 0.05 }, async (inputs) => {
      seen.push(inputs);
      return inputs;
    });
    expect(await Promise.all([1, 2].map((n) => batcher.submit(n)))).toEqual([1, 2]);
    expect(seen).toEqual([[1, 2]]);
  });

  it('fails the whole batch when the result length is wrong', async () => {
    const batcher = new Batcher<number>({ maxBatchSize: 2, batchWaitTimeoutS: 1 }, async () => [1]);
    const results = await Promise.allSettled([batcher.submit(1), batcher.submit(2)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect((results[0] as PromiseRejectedResult).reason.message).toMatch(/returned 1 results for a batch of 2/);
  });

  it('fails the whole batch when the handler throws', async () => {
    const batcher = new Batcher<number>({ maxBatchSize: 2, batchWaitTimeoutS: 1 }, async () => {
      throw new Error('boom');
    });
    await expect(Promise.all([batcher.submit(1), batcher.submit(2)])).rejects.toThrow('boom');
  });
});
