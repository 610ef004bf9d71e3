import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { containersOf, FIXTURES, startFlotilla, deployEndpoint } from './harness.js';

const IMAGE = 'flotilla-test/http-server:1';

describe('an existing HTTP container as a backend', () => {
  let client: Client;
  let instance: string;
  const web = { runtimeEnv: { image: IMAGE, port: 8080, healthPath: '/healthz' } };

  beforeAll(async () => {
    const base = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';
    execFileSync('docker', ['build', '-q', '-t', IMAGE, '--build-arg', `BASE=${base}`, join(FIXTURES, 'http-server')]);
    ({ client, instance } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  it('is routed to, balanced, scaled and split like any backend', async () => {
    await deployEndpoint(client, 'web', 'web-server', { config: { numReplicas: 2 }, replicaOptions: web });
    const answers = (await Promise.all(
      Array.from({ length: 20 }, async () => (await fetch(`${client.httpUrl}/web/page`)).json()),
    )) as Array<{
      path: string;
      host: string;
    }>;
    expect(new Set(answers.map((a) => a.path))).toEqual(new Set(['/web/page']));
    expect(new Set(answers.map((a) => a.host)).size).toBe(2);

    await client.updateBackendConfig('web', { numReplicas: 3 });
    expect(containersOf(instance, 'web')).toHaveLength(3);

    await client.createBackend('fn', () => 'from a function');
    await client.setTraffic('web', { web: 0.5, fn: 0.5 });
    const mixed = await Promise.all(Array.from({ length: 40 }, async () => (await fetch(`${client.httpUrl}/web`)).text()));
    expect(mixed.filter((text) => text === 'from a function').length).toBeGreaterThan(5);
    expect(mixed.filter((text) => text.startsWith('{')).length).toBeGreaterThan(5);
    await client.setTraffic('web', { web: 1 });
  });

  it('is health-checked and replaced when it dies', async () => {
    const [victim] = await client.listReplicas('web');
    execFileSync('docker', ['kill', victim!.containerId]);
    await expect
      .poll(async () => (await client.listReplicas('web')).filter((r) => r.state === 'ready' && r.restarts === 1).length, {
        timeout: 30_000,
      })
      .toBe(1);
    expect((await fetch(`${client.httpUrl}/web`)).status).toBe(200);
  });

  it('refuses what needs the replica protocol, and images the engine does not have', async () => {
    await expect(client.updateBackendConfig('web', { userConfig: { a: 1 } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/plain HTTP container/),
    });
    await expect(
      client.createBackend('missing', 'x', { replicaOptions: { runtimeEnv: { image: 'flotilla-test/absent:0', port: 80 } } }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/not on the Docker engine/) });
    await expect(client.createBackend('portless', 'x', { replicaOptions: { runtimeEnv: { port: 80 } } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/replicaOptions\.runtimeEnv\.port: .*; set runtimeEnv\.image too/),
      details: { issues: [{ path: ['replicaOptions', 'runtimeEnv', 'port'], message: expect.stringMatching(/^is the port of/) }] },
    });
  });
});
