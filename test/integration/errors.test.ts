import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { Client } from '../../src/index.js';
import { containersOf, FIXTURES, startFlotilla, deployEndpoint } from './harness.js';

class Exploding {
  constructor() {
    throw new Error('model weights missing');
  }
}

describe('errors', () => {
  let client: Client;
  let instance: string;
  let running: string[];

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
    await deployEndpoint(client, 'steady', () => 'still here');
    running = containersOf(instance);
  });
  afterAll(() => client.shutdown());

  async function expectUntouched(): Promise<void> {
    expect(containersOf(instance).sort()).toEqual([...running].sort());
    expect(await (await fetch(`${client.httpUrl}/steady`)).text()).toBe('still here');
    expect(Object.keys(await client.listBackends())).toEqual(['steady']);
    expect(Object.keys(await client.listEndpoints())).toEqual(['steady']);
  }

  it.each([
    ['a duplicate backend', () => client.createBackend('steady', () => 1), 'BACKEND_EXISTS', /already exists/],
    [
      'a duplicate endpoint',
      () => client.createEndpoint('steady', { backend: 'steady', route: '/other' }),
      'ENDPOINT_EXISTS',
      /already exists/,
    ],
    [
      'a route already taken',
      () => client.createEndpoint('second', { backend: 'steady', route: '/steady/' }),
      'ROUTE_TAKEN',
      /endpoint 'steady'/,
    ],
    [
      'an endpoint naming an unknown backend',
      () => client.createEndpoint('x', { backend: 'ghost', route: '/x' }),
      'BACKEND_NOT_FOUND',
      /'ghost'/,
    ],
    ['deleting a backend an endpoint uses', () => client.deleteBackend('steady'), 'BACKEND_IN_USE', /endpoint 'steady'/],
    ['an invalid backend name', () => client.createBackend('no spaces', () => 1), 'INVALID_ARGUMENT', /backend name/],
    [
      'an invalid endpoint name',
      () => client.createEndpoint('a/b', { backend: 'steady', route: '/ab' }),
      'INVALID_ARGUMENT',
      /endpoint name/,
    ],
    [
      'a route without a leading /',
      () => client.createEndpoint('r', { backend: 'steady', route: 'r' }),
      'INVALID_ARGUMENT',
      /starting with '\/'/,
    ],
    [
      'a method that is not HTTP',
      () => client.createEndpoint('m', { backend: 'steady', route: '/m', methods: ['FETCH'] }),
      'INVALID_ARGUMENT',
      /HTTP method/,
    ],
    ['a bad config value', () => client.createBackend('bad', () => 1, { config: { numReplicas: -2 } }), 'INVALID_ARGUMENT', /numReplicas/],
    [
      'an unknown config key',
      () => client.updateBackendConfig('steady', { replicas: 2 } as never),
      'INVALID_ARGUMENT',
      /replicas: unknown key/,
    ],
    [
      'a bad config update',
      () => client.updateBackendConfig('steady', { maxConcurrentQueries: 0 }),
      'INVALID_ARGUMENT',
      /maxConcurrentQueries/,
    ],
    ['an update of an unknown backend', () => client.updateBackendConfig('ghost', { numReplicas: 2 }), 'BACKEND_NOT_FOUND', /'ghost'/],
    ['deleting an unknown endpoint', () => client.deleteEndpoint('ghost'), 'ENDPOINT_NOT_FOUND', /'ghost'/],
    ['a bound function', () => client.createBackend('bound', (() => 1).bind(null)), 'UNSHIPPABLE_DEFINITION', /bound/],
    [
      'a missing context directory',
      () => client.createBackend('ctx', 'x.js', { replicaOptions: { runtimeEnv: { context: '/nonexistent' } } }),
      'INVALID_ARGUMENT',
      /not a directory/,
    ],
  ])('refuses %s and changes nothing', async (_what, call, code, message) => {
    await expect(call()).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    await expectUntouched();
  });

  it('fails createBackend with the constructor error and leaves nothing behind', async () => {
    await expect(client.createBackend('exploding', Exploding)).rejects.toMatchObject({
      code: 'REPLICA_START_FAILED',
      message: expect.stringMatching(/model weights missing/),
    });
    await expectUntouched();
  });

  it('fails createBackend for an import path the image cannot resolve', async () => {
    const context = join(FIXTURES, 'my-backend');
    await expect(
      client.createBackend('missing_export', 'handlers/echo.js:Nope', { replicaOptions: { runtimeEnv: { context } } }),
    ).rejects.toMatchObject({ code: 'REPLICA_START_FAILED', message: expect.stringMatching(/no function or class export 'Nope'/) });
    await expect(
      client.createBackend('missing_module', 'handlers/missing.js:Echo', { replicaOptions: { runtimeEnv: { context } } }),
    ).rejects.toMatchObject({
      code: 'REPLICA_START_FAILED',
      message: expect.stringMatching(/Cannot find module/),
    });
    await expectUntouched();
  });

  it('refuses an invalid scale-up patch and keeps the replicas it had', async () => {
    await expect(client.updateBackendConfig('steady', { numReplicas: 2, maxConcurrentQueries: 0 })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect(await client.getBackendConfig('steady')).toMatchObject({ numReplicas: 1, maxConcurrentQueries: 100 });
    await expectUntouched();
  });
});

describe('a failed image build', () => {
  it('fails createBackend with BUILD_FAILED and the tail of the build log', async () => {
    const { client, instance } = await startFlotilla({ baseImage: 'flotilla-local/no-such-base:1' });
    try {
      const error = await client.createBackend('unbuildable', () => 1).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'BUILD_FAILED', message: expect.stringMatching(/no-such-base/) });
      expect(await client.listBackends()).toEqual({});
      expect(containersOf(instance)).toEqual([]);
    } finally {
      await client.shutdown();
    }
  });
});
