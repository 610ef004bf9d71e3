import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { startFlotilla, deployEndpoint } from './harness.js';

class Gauge {
  private inFlight = 0;
  private maxInFlight = 0;
  private cancelled = 0;

  async call(request: Request) {
    const path = new URL(request.url).pathname;
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const ms = path.endsWith('/hang') ? 60_000 : path.endsWith('/fast') ? 0 : 150;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        request.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          this.cancelled += 1;
          resolve();
        });
      });
      return path;
    } finally {
      this.inFlight -= 1;
    }
  }

  stats() {
    return { inFlight: this.inFlight, maxInFlight: this.maxInFlight, cancelled: this.cancelled };
  }
}

describe('the HTTP front door', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
    await client.createBackend('path', (request: Request) => `${request.method} ${new URL(request.url).pathname}`);
    await client.createEndpoint('a', { backend: 'path', route: '/a', methods: ['GET', 'POST'] });
    await client.createEndpoint('ab', { backend: 'path', route: '/a/b/', methods: ['PUT'] });
    await deployEndpoint(client, 'gauge', Gauge, { config: { maxConcurrentQueries: 2 } });
  });
  afterAll(() => client.shutdown());

  it('routes by longest prefix at / boundaries', async () => {
    expect(await (await fetch(`${client.httpUrl}/a`)).text()).toBe('GET /a');
    expect(await (await fetch(`${client.httpUrl}/a/x/y`, { method: 'POST' })).text()).toBe('POST /a/x/y');
    expect(await (await fetch(`${client.httpUrl}/a/b/c`, { method: 'PUT' })).text()).toBe('PUT /a/b/c');
  });

  it('answers an unknown path with a JSON 404', async () => {
    const response = await fetch(`${client.httpUrl}/ab`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ error: { code: 'ROUTE_NOT_FOUND' } });
  });

  it('answers a wrong method with 405 and an Allow header', async () => {
    const response = await fetch(`${client.httpUrl}/a/b`, { method: 'GET' });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('PUT');
    expect(await response.json()).toMatchObject({ error: { code: 'METHOD_NOT_ALLOWED' } });
  });

  it('lists routes and answers health checks', async () => {
    expect(await (await fetch(`${client.httpUrl}/-/routes`)).json()).toEqual({
      '/a': { endpoint: 'a', methods: ['GET', 'POST'] },
      '/a/b': { endpoint: 'ab', methods: ['PUT'] },
      '/gauge': { endpoint: 'gauge', methods: ['GET'] },
    });
    const health = await fetch(`${client.httpUrl}/-/healthz`);
    expect(health.status).toBe(200);
  });

  it('queues requests beyond maxConcurrentQueries instead of failing them', async () => {
    const statuses = await Promise.all(Array.from({ length: 12 }, async () => (await fetch(`${client.httpUrl}/gauge`)).status));
    expect(statuses).toEqual(Array(12).fill(200));
    const stats = (await client.getHandle('gauge').options({ methodName: 'stats' }).remote()) as { maxInFlight: number };
    expect(stats.maxInFlight).toBe(2);
  });

  it('releases the upstream request and the replica slot when a client hangs up', async () => {
    const stats = client.getHandle('gauge').options({ methodName: 'stats' });
    const before = (await stats.remote()) as { cancelled: number };
    const hangers = Array.from({ length: 2 }, () => {
      const abort = new AbortController();
      const request = fetch(`${client.httpUrl}/gauge/hang`, { signal: abort.signal }).catch((error: Error) => error.name);
      return { abort, request };
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    hangers.forEach(({ abort }) => abort.abort());
    expect(await Promise.all(hangers.map(({ request }) => request))).toEqual(['AbortError', 'AbortError']);
    const fast = await fetch(`${client.httpUrl}/gauge/fast`, { signal: AbortSignal.timeout(20_000) });
    expect(await fast.text()).toBe('/gauge/fast');
    await expect.poll(async () => ((await stats.remote()) as { cancelled: number }).cancelled).toBe(before.cancelled + 2);
  });
});
