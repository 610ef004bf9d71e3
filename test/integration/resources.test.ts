import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { containersOf, inspect, recordingEngine, startFlotilla, deployEndpoint } from './harness.js';

const threads = () => ({ omp: process.env.OMP_NUM_THREADS, nvidia: process.env.NVIDIA_VISIBLE_DEVICES, extra: process.env.EXTRA });

function hog(request: Request) {
  if (new URL(request.url).searchParams.get('hog') === null) return 'fine';
  const hoard: Buffer[] = [];
  for (let i = 0; i < 100; i++) hoard.push(Buffer.alloc(16 * 1024 * 1024, i));
  return `survived with ${hoard.length} buffers`;
}

describe('CPU and memory', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla({ cpuCapacity: 2, memoryCapacityMb: 1024 }));
  });
  afterAll(() => client.shutdown());

  it('turns numCpus into CPU shares without a cap, memoryMb into a limit, and shows them', async () => {
    await client.createBackend('limited', threads, { replicaOptions: { numCpus: 0.5, memoryMb: 128 } });
    const [id] = containersOf(instance, 'limited');
    const host = inspect(id!).HostConfig;
    expect(host).toMatchObject({
      CpuShares: 512,
      CpuPeriod: 0,
      CpuQuota: 0,
      Memory: 128 * 1024 * 1024,
      MemorySwap: 128 * 1024 * 1024,
    });
    expect(host.DeviceRequests ?? []).toEqual([]);
    expect((await client.getBackendConfig('limited')).resources).toEqual({ numCpus: 0.5, memoryMb: 128, numGpus: 0, env: {} });
    const [replica] = await client.listReplicas('limited');
    expect(replica?.placement).toEqual({ cpus: 0.5, memoryMb: 128, gpuIds: [], gpuShare: 0 });
  });

  it('caps a replica at cpuLimit with a CFS quota, reserving only numCpus', async () => {
    await client.createBackend('capped', threads, { replicaOptions: { numCpus: 0.25, cpuLimit: 0.5 } });
    const [id] = containersOf(instance, 'capped');
    expect(inspect(id!).HostConfig).toMatchObject({ CpuShares: 256, CpuPeriod: 100000, CpuQuota: 50000 });
    expect((await client.getBackendConfig('capped')).resources).toMatchObject({ numCpus: 0.25, cpuLimit: 0.5 });
    expect((await client.listReplicas('capped'))[0]?.placement.cpus).toBe(0.25);
    await expect(client.createBackend('inverted', threads, { replicaOptions: { numCpus: 0.5, cpuLimit: 0.25 } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/cpuLimit: 0.25 is below numCpus \(0.5\)/),
    });
    await client.deleteBackend('capped');
  });

  it('sets OMP_NUM_THREADS=1 and hides GPUs by default, and lets env override', async () => {
    await client.createEndpoint('limited', { backend: 'limited', route: '/limited' });
    expect(await (await fetch(`${client.httpUrl}/limited`)).json()).toEqual({ omp: '1', nvidia: 'void' });
    await deployEndpoint(client, 'threaded', threads, { replicaOptions: { numCpus: 0.5, env: { OMP_NUM_THREADS: '4', EXTRA: 'yes' } } });
    expect(await (await fetch(`${client.httpUrl}/threaded`)).json()).toEqual({ omp: '4', nvidia: 'void', extra: 'yes' });
    await expect(
      client.createBackend('sneaky', threads, { replicaOptions: { env: { NVIDIA_VISIBLE_DEVICES: 'all' } } }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/set by Flotilla/) });
  });

  it('refuses a scale-up beyond capacity, saying what is free, and leaves running replicas alone', async () => {
    const running = containersOf(instance).sort();
    await expect(client.updateBackendConfig('limited', { numReplicas: 4 })).rejects.toMatchObject({
      code: 'INSUFFICIENT_RESOURCES',
      message: expect.stringMatching(
        /backend 'limited' cannot add 3 replica\(s\): not enough resources: a replica needs 0.5 CPU, 0 of 2 free; 1 CPUs and 896 MB were free/,
      ),
    });
    expect(containersOf(instance).sort()).toEqual(running);
    expect((await client.getBackendConfig('limited')).numReplicas).toBe(1);
    await expect(client.createBackend('big', threads, { replicaOptions: { numCpus: 1.5 } })).rejects.toMatchObject({
      code: 'INSUFFICIENT_RESOURCES',
    });
    await client.deleteEndpoint('threaded');
    await client.deleteBackend('threaded');
    await client.createBackend('big', threads, { replicaOptions: { numCpus: 1.5 } });
    expect(containersOf(instance, 'big')).toHaveLength(1);
  });

  it('replaces a replica killed for exceeding its memory limit, and says so', async () => {
    await client.deleteBackend('big');
    await deployEndpoint(client, 'hog', hog, { replicaOptions: { numCpus: 0.5, memoryMb: 96 } });
    const [before] = await client.listReplicas('hog');
    const response = await fetch(`${client.httpUrl}/hog?hog=1`, { method: 'GET', signal: AbortSignal.timeout(60_000) });
    expect(response.status).toBeGreaterThanOrEqual(500);
    await expect
      .poll(async () => (await client.listReplicas('hog')).find((r) => r.state === 'ready' && r.id !== before!.id)?.lastError, {
        timeout: 30_000,
        interval: 500,
      })
      .toMatch(/OOM/);
    expect(await (await fetch(`${client.httpUrl}/hog`)).text()).toBe('fine');
  });
});

describe('GPUs', () => {
  it('sends device requests with explicit DeviceIDs, packing fractions, and names the missing NVIDIA runtime', async () => {
    const engine = await recordingEngine();
    const { client } = await startFlotilla({ dockerSocket: engine.socketPath, gpus: '0=FakeGPU,1=FakeGPU' });
    try {
      await expect(
        client.createBackend('gpu', threads, { config: { numReplicas: 3 }, replicaOptions: { numGpus: 0.5 } }),
      ).rejects.toMatchObject({
        code: 'GPU_RUNTIME_MISSING',
        message: expect.stringMatching(/no NVIDIA container runtime/),
      });
      const gpuCreates = engine.creates.filter((c) => c.HostConfig?.DeviceRequests?.length > 0);
      expect(gpuCreates).toHaveLength(3);
      const requests = gpuCreates.map((c) => c.HostConfig.DeviceRequests[0]);
      expect(requests.every((r) => r.Driver === 'nvidia' && r.Count === undefined)).toBe(true);
      expect(requests.map((r) => r.DeviceIDs.join(',')).sort()).toEqual(['0', '0', '1']);
      for (const create of gpuCreates) {
        expect(create.Env).toContain(`NVIDIA_VISIBLE_DEVICES=${create.HostConfig.DeviceRequests[0].DeviceIDs.join(',')}`);
      }

      await expect(client.createBackend('two', threads, { replicaOptions: { numGpus: 2 } })).rejects.toMatchObject({
        code: 'GPU_RUNTIME_MISSING',
      });
      expect(engine.creates.at(-1)?.HostConfig.DeviceRequests[0].DeviceIDs).toEqual(['0', '1']);

      await client.createBackend('cpu', threads);
      expect(engine.creates.at(-1)?.Env).toContain('NVIDIA_VISIBLE_DEVICES=void');
      expect(engine.creates.at(-1)?.HostConfig.DeviceRequests ?? null).toBeNull();
      await expect(client.createBackend('three', threads, { replicaOptions: { numGpus: 3 } })).rejects.toMatchObject({
        code: 'INSUFFICIENT_RESOURCES',
        message: expect.stringMatching(/a replica needs 3 GPUs \(GPU 0: 1 free, GPU 1: 1 free\)/),
      });
    } finally {
      await client.shutdown();
      await engine.close();
    }
  });
});
