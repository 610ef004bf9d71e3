import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { startFlotilla } from './harness.js';
import { startLoad } from './load.js';

const answerA = () => 'a';
const answerB = () => 'b';

class SlowEcho {
  async call() {
    await new Promise((resolve) => setTimeout(resolve, 5000));
    return 'a';
  }
}

function failing(): string {
  throw new Error('shadow model is broken');
}

describe('traffic', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
    await client.createBackend('a', answerA);
    await client.createBackend('b', answerB);
    await client.createBackend('slow', SlowEcho);
    await client.createBackend('failing', failing);
    await client.createBackend('saturated', SlowEcho, { config: { maxConcurrentQueries: 1, maxQueuedRequests: 0 } });
    await client.createEndpoint('split', { backend: 'a', route: '/split' });
    await client.createEndpoint('shadowed', { backend: 'a', route: '/shadowed' });
  });
  afterAll(() => client.shutdown());

  const hit = async (path: string, headers: Record<string, string> = {}) => (await fetch(`${client.httpUrl}${path}`, { headers })).text();

  async function countAnswers(total: number): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (let i = 0; i < total; i += 50) {
      const answers = await Promise.all(Array.from({ length: Math.min(50, total - i) }, () => hit('/split')));
      for (const answer of answers) counts[answer] = (counts[answer] ?? 0) + 1;
    }
    return counts;
  }

  it('splits requests by weight', async () => {
    await client.setTraffic('split', { a: 0.3, b: 0.7 });
    expect((await client.listEndpoints()).split?.traffic).toEqual({ a: 0.3, b: 0.7 });
    const counts = await countAnswers(1000);
    expect((counts.a ?? 0) + (counts.b ?? 0)).toBe(1000);
    expect(counts.a).toBeGreaterThan(230);
    expect(counts.a).toBeLessThan(370);
  });

  it('changes weights without dropping a request', async () => {
    const load = startLoad(() => fetch(`${client.httpUrl}/split`), 8);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await client.setTraffic('split', { b: 1 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await client.setTraffic('split', { a: 0.5, b: 0.5 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await client.setTraffic('split', { b: 1 });
    const result = await load.stop();
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
    expect(await countAnswers(100)).toEqual({ b: 100 });
  });

  it('keeps a shard key on one backend while the policy stays the same', async () => {
    await client.setTraffic('split', { a: 0.5, b: 0.5 });
    const seen = new Set<string>();
    for (let key = 0; key < 20; key++) {
      const answers = await Promise.all(Array.from({ length: 10 }, () => hit('/split', { 'x-serve-shard-key': `user-${key}` })));
      expect(new Set(answers).size).toBe(1);
      seen.add(answers[0]!);
      const handle = client.getHandle('split').options({ shardKey: `user-${key}` });
      expect(await Promise.all(Array.from({ length: 5 }, () => handle.remote()))).toEqual(Array(5).fill(answers[0]));
    }
    expect(seen).toEqual(new Set(['a', 'b']));
  });

  it.each([
    ['weights that do not sum to 1', () => client.setTraffic('split', { a: 0.5, b: 0.4 }), 'INVALID_ARGUMENT', /sum to 1/],
    ['a negative weight', () => client.setTraffic('split', { a: 1.5, b: -0.5 }), 'INVALID_ARGUMENT', />= 0/],
    ['an unknown backend', () => client.setTraffic('split', { a: 0.5, ghost: 0.5 }), 'BACKEND_NOT_FOUND', /'ghost'/],
    ['an unknown endpoint', () => client.setTraffic('nowhere', { a: 1 }), 'ENDPOINT_NOT_FOUND', /'nowhere'/],
    ['empty weights', () => client.setTraffic('split', {}), 'INVALID_ARGUMENT', /mapping backend names/],
    ['a shadow proportion above 1', () => client.shadowTraffic('split', 'b', 1.5), 'INVALID_ARGUMENT', /from 0 to 1/],
    ['an unknown shadow backend', () => client.shadowTraffic('split', 'ghost', 0.5), 'BACKEND_NOT_FOUND', /'ghost'/],
  ])('refuses %s and changes nothing', async (_what, call, code, message) => {
    const before = await client.listEndpoints();
    await expect(call()).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    expect(await client.listEndpoints()).toEqual(before);
  });

  it('refuses to delete a backend that carries traffic or shadows', async () => {
    await expect(client.deleteBackend('b')).rejects.toMatchObject({ code: 'BACKEND_IN_USE', message: expect.stringMatching(/'split'/) });
    await client.shadowTraffic('split', 'failing', 0.5);
    await expect(client.deleteBackend('failing')).rejects.toMatchObject({ code: 'BACKEND_IN_USE' });
    await client.shadowTraffic('split', 'failing', 0);
    expect((await client.listEndpoints()).split?.shadows).toEqual({});
  });

  it('mirrors to shadows without slowing or failing the primary, and compares their answers', async () => {
    await client.shadowTraffic('shadowed', 'slow', 1);
    await client.shadowTraffic('shadowed', 'failing', 1);
    await client.shadowTraffic('shadowed', 'saturated', 1);
    expect((await client.listEndpoints()).shadowed?.shadows).toEqual({ slow: 1, failing: 1, saturated: 1 });

    const responses = await Promise.all(Array.from({ length: 20 }, () => fetch(`${client.httpUrl}/shadowed`)));
    expect(responses.map((r) => r.status)).toEqual(Array(20).fill(200));
    expect(await Promise.all(responses.map((r) => r.text()))).toEqual(Array(20).fill('a'));
    const early = await client.getShadowStats('shadowed');
    expect(early.slow?.compared).toBe(0);

    await expect.poll(async () => (await client.getShadowStats('shadowed')).slow?.compared, { timeout: 20_000, interval: 500 }).toBe(20);
    const stats = await client.getShadowStats('shadowed');
    expect(stats.slow).toMatchObject({ sent: 20, compared: 20, matches: 20, statusMismatches: 0, bodyMismatches: 0 });
    expect(stats.slow?.shadowLatencyMs.p50).toBeGreaterThan(stats.slow?.primaryLatencyMs.p50 ?? Infinity);
    expect(stats.failing).toMatchObject({ sent: 20, compared: 20, matches: 0, statusMismatches: 20 });
    expect(stats.saturated?.dropped).toBeGreaterThan(0);
    expect((stats.saturated?.sent ?? 0) + (stats.saturated?.dropped ?? 0)).toBe(20);

    const metrics = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
    expect(metrics).toContain('serve_num_http_requests_total{endpoint="shadowed",backend="a",status_code="200"} 20');
    expect(metrics).toContain('flotilla_shadow_requests_total{endpoint="shadowed",backend="slow",outcome="match"} 20');
    expect(metrics).toContain('flotilla_shadow_requests_total{endpoint="shadowed",backend="failing",outcome="mismatch"} 20');
    expect(metrics).toMatch(/flotilla_shadow_requests_total\{endpoint="shadowed",backend="saturated",outcome="dropped"\} [1-9]/);
    expect(metrics).toContain('flotilla_replicas{backend="a",state="ready"} 1');
    expect(metrics).toMatch(/serve_http_request_latency_seconds_count\{endpoint="shadowed",backend="a"\} 20/);
  });
});
