import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { FIXTURES, startFlotilla } from './harness.js';

const IMAGE = 'flotilla-test/http-stream-server:1';
const killed = new Set<string>();

/** Kills the replica of the backend whose log shows it is serving `path`, once one does. */
async function killServing(client: Client, backend: string, path: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    for (const replica of await client.listReplicas(backend)) {
      const logs = execFileSync('docker', ['logs', replica.containerId], { encoding: 'utf8' });
      if (logs.includes(`serving ${path}\n`)) {
        execFileSync('docker', ['kill', replica.containerId]);
        killed.add(replica.containerId);
        return replica.containerId;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no replica of ${backend} logged serving ${path}`);
}

async function replicaFailures(client: Client, backend: string): Promise<number> {
  const text = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
  return Number(new RegExp(`^flotilla_replica_failures_total\\{backend="${backend}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
}

describe('a replica that dies while serving a request', () => {
  let client: Client;

  beforeAll(async () => {
    const base = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';
    execFileSync('docker', ['build', '-q', '-t', IMAGE, '--build-arg', `BASE=${base}`, join(FIXTURES, 'http-stream-server')]);
    ({ client } = await startFlotilla());
    await client.createBackend('s', 'stream-server', {
      config: { numReplicas: 2 },
      replicaOptions: { runtimeEnv: { image: IMAGE, port: 8080, healthPath: '/healthz' } },
    });
    await client.createEndpoint('s', { backend: 's', route: '/s', methods: ['GET', 'POST'] });
  });
  afterAll(() => client.shutdown());

  const waitForTwoReady = () =>
    expect
      .poll(async () => (await client.listReplicas('s')).filter((r) => r.state === 'ready' && !killed.has(r.containerId)).length, {
        timeout: 60_000,
      })
      .toBe(2);

  it('mid-response: the client connection is closed promptly and the failure is counted', async () => {
    const before = await replicaFailures(client, 's');
    const response = await fetch(`${client.httpUrl}/s/mid/partial`, { signal: AbortSignal.timeout(30_000) });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    expect((await reader.read()).value?.length).toBeGreaterThan(0);
    await killServing(client, 's', '/s/mid/partial');
    const killed = Date.now();
    const rest = await (async () => {
      for (;;) if ((await reader.read()).done) return 'ended';
    })().catch((error: Error) => error.name);
    expect(rest).not.toBe('ended');
    expect(rest).not.toBe('TimeoutError');
    expect(Date.now() - killed).toBeLessThan(5000);
    await expect.poll(() => replicaFailures(client, 's'), { timeout: 10_000 }).toBe(before + 1);
    await waitForTwoReady();
  });

  it('before answering: a GET is retried on the other replica, a POST gets 502, within seconds', async () => {
    await waitForTwoReady();
    const get = fetch(`${client.httpUrl}/s/get/hold`, { signal: AbortSignal.timeout(30_000) });
    const victim = await killServing(client, 's', '/s/get/hold');
    let started = Date.now();
    const answer = await get;
    expect(answer.status).toBe(200);
    expect(((await answer.json()) as { host: string }).host).not.toBe(victim.slice(0, 12));
    expect(Date.now() - started).toBeLessThan(8000);

    await waitForTwoReady();
    const post = fetch(`${client.httpUrl}/s/post/hold`, { method: 'POST', body: 'once', signal: AbortSignal.timeout(30_000) });
    await killServing(client, 's', '/s/post/hold');
    started = Date.now();
    const refused = await post;
    expect(refused.status).toBe(502);
    expect(await refused.json()).toMatchObject({ error: { code: 'REPLICA_UNREACHABLE' } });
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
