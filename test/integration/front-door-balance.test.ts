import { Agent, request } from 'node:http';
import { describe, expect, it } from 'vitest';
import { startFlotilla } from './harness.js';

/** GETs sent one after another, `gapMs` apart, on one kept-alive connection; the bodies by count. */
async function keepAliveGets(url: string, count: number, gapMs: number): Promise<Map<string, number>> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const bodies = new Map<string, number>();
  try {
    for (let i = 0; i < count; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        request(url, { agent }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`status ${res.statusCode}: ${text}`))));
        })
          .on('error', reject)
          .end();
      });
      bodies.set(body, (bodies.get(body) ?? 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
  } finally {
    agent.destroy();
  }
  return bodies;
}

describe.each([
  [1, 'in-process'],
  [2, 'in-process'],
  [1, 'process'],
  [2, 'process'],
] as const)('balancing across the front door with %i worker(s), %s', (workers, frontDoor) => {
  it('spreads a keep-alive client, a scale-up and handle calls over every replica', async () => {
    const { client } = await startFlotilla({ http: { workers, frontDoor } });
    await client.createBackend('who', () => process.env.HOSTNAME ?? 'unknown', { config: { numReplicas: 2 } });
    await client.createEndpoint('who', { backend: 'who', route: '/who' });

    const twoReplicas = await keepAliveGets(`${client.httpUrl}/who`, 40, 100);
    expect(twoReplicas.size).toBe(2);
    for (const count of twoReplicas.values()) expect(count).toBeGreaterThanOrEqual(16);

    const handle = client.getHandle('who');
    const handled = new Map<string, number>();
    for (let i = 0; i < 20; i++) {
      const body = String(await handle.remote());
      handled.set(body, (handled.get(body) ?? 0) + 1);
    }
    expect(handled.size).toBe(2);
    for (const count of handled.values()) expect(count).toBeGreaterThanOrEqual(8);

    await client.updateBackendConfig('who', { numReplicas: 3 });
    await expect
      .poll(async () => (await client.listReplicas('who')).filter((r) => r.state === 'ready').length, { timeout: 60_000 })
      .toBe(3);
    const threeReplicas = await keepAliveGets(`${client.httpUrl}/who`, 30, 100);
    expect(threeReplicas.size).toBe(3);
    for (const count of threeReplicas.values()) expect(count).toBeGreaterThanOrEqual(7);
    await client.shutdown();
  });
});
