import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { Client } from '../../src/index.js';
import { containersOf, FIXTURES, inspect, startFlotilla, deployEndpoint } from './harness.js';

function handleRequest() {
  return 'hello world';
}

class RequestHandler {
  constructor(private readonly msg: string) {}
  call() {
    return this.msg;
  }
}

describe.each(['unix', 'tcp'] as const)('the Core API over the %s transport', (transport) => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla({ transport }));
  });

  it('serves the README example end to end and leaves no container behind', async () => {
    await client.createBackend('simple_backend', handleRequest);
    await client.createBackend('simple_backend_class', RequestHandler, { initArgs: ['hello, world!'] });
    await client.createBackend('imported', 'handlers/echo.js:Echo', {
      initArgs: ['input_arg'],
      replicaOptions: { runtimeEnv: { context: join(FIXTURES, 'my-backend') } },
    });
    const defaults = { numReplicas: 1, maxConcurrentQueries: 100, userConfig: null, maxBatchSize: 1, gracefulShutdownTimeoutS: 20 };
    expect(await client.listBackends()).toEqual({
      simple_backend: expect.objectContaining(defaults),
      simple_backend_class: expect.objectContaining(defaults),
      imported: expect.objectContaining(defaults),
    });
    expect(containersOf(instance)).toHaveLength(3);

    await client.createEndpoint('class_endpoint', { backend: 'simple_backend_class', route: '/class' });
    expect(await (await fetch(`${client.httpUrl}/class`)).text()).toBe('hello, world!');
    await client.deleteEndpoint('class_endpoint');
    await client.deleteBackend('simple_backend_class');
    expect(Object.keys(await client.listBackends()).sort()).toEqual(['imported', 'simple_backend']);
    expect(containersOf(instance, 'simple_backend_class')).toEqual([]);

    await client.createEndpoint('simple_endpoint', { backend: 'simple_backend', route: '/simple', methods: ['GET'] });
    const response = await fetch(`${client.httpUrl}/simple`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await response.text()).toBe('hello world');
    expect(await client.getHandle('simple_endpoint').remote()).toBe('hello world');

    await client.createEndpoint('imported_endpoint', { backend: 'imported', route: '/echo', methods: ['GET', 'POST'] });
    const echoed = await fetch(`${client.httpUrl}/echo/deeper?x=1`);
    expect(await echoed.json()).toEqual({ arg: 'input_arg', method: 'GET', path: '/echo/deeper', query: { x: '1' } });

    expect(await client.listEndpoints()).toEqual({
      simple_endpoint: { route: '/simple', methods: ['GET'], traffic: { simple_backend: 1 }, shadows: {} },
      imported_endpoint: { route: '/echo', methods: ['GET', 'POST'], traffic: { imported: 1 }, shadows: {} },
    });
    await client.deleteEndpoint('simple_endpoint');
    expect((await fetch(`${client.httpUrl}/simple`)).status).toBe(404);

    await client.shutdown();
    expect(containersOf(instance)).toEqual([]);
    await expect(client.listBackends()).resolves.toEqual({});
    await expect(client.createBackend('late', handleRequest)).rejects.toMatchObject({ code: 'SHUT_DOWN' });
  });

  afterAll(async () => {
    await client.shutdown().catch(() => undefined);
  });
});

describe('replicas', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  it('run as a non-root user with no-new-privileges, one container each', async () => {
    await deployEndpoint(client, 'whoami', () => ({ uid: process.getuid!(), host: process.env.HOSTNAME }), { config: { numReplicas: 2 } });
    const ids = containersOf(instance, 'whoami');
    expect(ids).toHaveLength(2);
    for (const id of ids) {
      const info = inspect(id);
      expect(info.Config.User).toBe('1000:1000');
      expect(info.HostConfig.SecurityOpt).toContain('no-new-privileges');
    }
    const answers = (await Promise.all(Array.from({ length: 20 }, async () => (await fetch(`${client.httpUrl}/whoami`)).json()))) as Array<{
      uid: number;
      host: string;
    }>;
    expect(new Set(answers.map((a) => a.uid))).toEqual(new Set([1000]));
    expect(new Set(answers.map((a) => a.host)).size).toBe(2);
  });

  it('scale up and down with updateBackendConfig, changing only the given keys', async () => {
    await deployEndpoint(client, 'scaled', () => process.env.HOSTNAME, { config: { maxConcurrentQueries: 7 } });
    await client.updateBackendConfig('scaled', { numReplicas: 3 });
    expect(await client.getBackendConfig('scaled')).toMatchObject({ numReplicas: 3, maxConcurrentQueries: 7 });
    expect(containersOf(instance, 'scaled')).toHaveLength(3);
    const hosts = await Promise.all(Array.from({ length: 30 }, async () => (await fetch(`${client.httpUrl}/scaled`)).text()));
    expect(new Set(hosts).size).toBe(3);

    await client.updateBackendConfig('scaled', { numReplicas: 1 });
    expect(containersOf(instance, 'scaled')).toHaveLength(1);
    const after = await Promise.all(Array.from({ length: 10 }, async () => (await fetch(`${client.httpUrl}/scaled`)).text()));
    expect(new Set(after).size).toBe(1);
  });
});
