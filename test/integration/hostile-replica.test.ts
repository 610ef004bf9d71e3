import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { FIXTURES, memoryOf, startFlotilla } from './harness.js';

const MIB = 1024 * 1024;
/** What a replica's endless answers may add to the control plane's memory (it held 1.2 GiB before they were bounded). */
const BOUND = 96 * MIB;

/** Samples the process's RSS every 50 ms while `work` runs; resolves with the highest. */
async function highestRss<T>(work: () => Promise<T>): Promise<{ result: PromiseSettledResult<T>; highest: number }> {
  let highest = memoryOf(process.pid).rss;
  const sampler = setInterval(() => (highest = Math.max(highest, memoryOf(process.pid).rss)), 50);
  const [result] = await Promise.allSettled([work()]);
  clearInterval(sampler);
  return { result: result!, highest: Math.max(highest, memoryOf(process.pid).rss) };
}

describe('a replica that answers with endless bodies', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla({ healthCheckPeriodS: 1, handle: { maxResponseBytes: MIB } }));
    await client.createBackend('flood', 'handlers/flood.js:Flood', {
      config: { requestTimeoutS: 10 },
      replicaOptions: { numCpus: 0.25, runtimeEnv: { context: join(FIXTURES, 'flooding-backend') } },
    });
    await client.createEndpoint('flood', { backend: 'flood' });
  });
  afterAll(() => client.shutdown());

  it("costs the control plane a bounded amount of memory, whether it floods health checks, config pushes or a handle's answer", async () => {
    const handle = client.getHandle('flood');
    const idle = memoryOf(process.pid).rss;
    const { result, highest } = await highestRss(async () => {
      await handle.options({ methodName: 'flood' }).remote();
      // Five health checks, each answered with an endless body.
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      // Its status is all a health check reads: the replica stays ready.
      expect((await client.listReplicas('flood')).map((r) => r.state)).toEqual(['ready']);
      await expect(client.updateBackendConfig('flood', { userConfig: { any: 1 } })).rejects.toThrow(/larger than 65536 bytes/);
      return handle.remote({ any: 1 });
    });
    console.log(`control plane: idle RSS ${(idle / MIB).toFixed(0)} MiB, highest ${(highest / MIB).toFixed(0)} MiB while flooded`);
    expect(result).toMatchObject({ status: 'rejected', reason: { code: 'RESPONSE_TOO_LARGE', details: { maxBytes: MIB } } });
    expect(highest - idle).toBeLessThan(BOUND);
  }, 120_000);
});
