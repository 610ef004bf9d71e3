import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { containersOf, startFlotilla, deployEndpoint } from './harness.js';
import { startLoad } from './load.js';

class Model {
  private version = 'v0';
  reconfigure(config: { version: string }) {
    this.version = config.version;
  }
  async call(request: Request) {
    const ms = Number(new URL(request.url).searchParams.get('ms') ?? '20');
    if (ms < 0) for (;;);
    await new Promise((resolve) => setTimeout(resolve, ms));
    return { version: this.version, replica: process.env.HOSTNAME };
  }
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('replicas that never lose a request', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
    await deployEndpoint(
      client,
      'model',
      Model,
      { config: { userConfig: { version: 'v1' }, gracefulShutdownTimeoutS: 10 } },
      { methods: ['GET', 'POST'] },
    );
  });
  afterAll(() => client.shutdown());

  it('serves every request with a 2xx while scaling 1 → 4 → 1 and pushing a new userConfig', async () => {
    const load = startLoad(() => fetch(`${client.httpUrl}/model?ms=50`, { method: 'POST' }), 8);
    await wait(500);
    await client.updateBackendConfig('model', { numReplicas: 4 });
    await wait(500);
    await client.updateBackendConfig('model', { userConfig: { version: 'v2' } });
    await wait(500);
    await client.updateBackendConfig('model', { numReplicas: 1 });
    await wait(500);
    const result = await load.stop();
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
    expect(result.total).toBeGreaterThan(50);
    expect(containersOf(instance, 'model')).toHaveLength(1);
    expect(await client.getHandle('model').remote()).toMatchObject({ version: 'v2' });
  });

  it('lets in-flight requests finish when scaling down', async () => {
    await client.updateBackendConfig('model', { numReplicas: 3 });
    const slow = Array.from({ length: 6 }, () => fetch(`${client.httpUrl}/model?ms=2000`, { method: 'POST' }));
    await wait(300);
    await client.updateBackendConfig('model', { numReplicas: 1 });
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual(Array(6).fill(200));
    expect(await client.listReplicas('model')).toHaveLength(1);
  });

  it('replaces a killed replica, retrying idempotent requests and failing the others fast', async () => {
    await client.updateBackendConfig('model', { numReplicas: 2 });
    const [victim] = await client.listReplicas('model');
    const load = startLoad(() => fetch(`${client.httpUrl}/model?ms=30`), 6);
    const inFlightPosts = Array.from({ length: 4 }, () =>
      fetch(`${client.httpUrl}/model?ms=3000`, { method: 'POST', signal: AbortSignal.timeout(15_000) }).then(
        (r) => r.status,
        (e: Error) => e.name,
      ),
    );
    await wait(800);
    execFileSync('docker', ['kill', victim!.containerId]);
    await wait(500);
    const posts = await Promise.all(inFlightPosts);
    expect(posts.every((status) => status === 200 || status === 502)).toBe(true);
    await expect
      .poll(async () => (await client.listReplicas('model')).filter((r) => r.state === 'ready').map((r) => r.containerId), {
        timeout: 30_000,
        interval: 500,
      })
      .toHaveLength(2);
    const result = await load.stop();
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });

    const replicas = await client.listReplicas('model');
    expect(replicas.map((r) => r.containerId)).not.toContain(victim!.containerId);
    const replacement = replicas.find((r) => r.restarts === 1);
    expect(replacement?.lastError).toMatch(/exited with code 137/);
  });

  it('replaces a replica that stops answering', async () => {
    await client.updateBackendConfig('model', { numReplicas: 1 });
    const [stuck] = await client.listReplicas('model');
    void fetch(`${client.httpUrl}/model?ms=-1`, { method: 'POST' }).catch(() => undefined);
    await expect
      .poll(async () => (await client.listReplicas('model')).filter((r) => r.state === 'ready' && r.id !== stuck!.id), {
        timeout: 60_000,
        interval: 1000,
      })
      .toHaveLength(1);
    const [replacement] = await client.listReplicas('model');
    expect(replacement?.restarts).toBe(stuck!.restarts + 1);
    expect(replacement?.lastError).toMatch(/stopped answering health checks/);
    expect((await fetch(`${client.httpUrl}/model`)).status).toBe(200);
  });
});

describe('deleting', () => {
  it('drains on deleteEndpoint and skips the drain with deleteBackend force', async () => {
    const { client } = await startFlotilla();
    try {
      await deployEndpoint(client, 'slow', Model, { config: { gracefulShutdownTimeoutS: 1 } }, { methods: ['POST'] });
      const finishing = fetch(`${client.httpUrl}/slow?ms=700`, { method: 'POST' });
      await wait(200);
      await client.deleteEndpoint('slow');
      expect((await finishing).status).toBe(200);

      await client.createEndpoint('slow2', { backend: 'slow', route: '/slow2', methods: ['POST'] });
      const cut = fetch(`${client.httpUrl}/slow2?ms=30000`, { method: 'POST' });
      await wait(200);
      await client.deleteEndpoint('slow2');
      const started = Date.now();
      await client.deleteBackend('slow', { force: true });
      expect(Date.now() - started).toBeLessThan(10_000);
      expect((await cut).status).toBe(502);
    } finally {
      await client.shutdown();
    }
  });
});
