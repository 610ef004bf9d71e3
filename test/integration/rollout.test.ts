import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { startFlotilla } from './harness.js';
import { startLoad } from './load.js';

// The backends and steps of docs/rollout.md, run while a continuous load hits the endpoint.

function sentimentV1(request: Request) {
  const text = new URL(request.url).searchParams.get('text') ?? '';
  const label = /good|great/.test(text) ? 'positive' : 'negative';
  return Response.json({ label }, { headers: { 'x-model-version': 'v1' } });
}

function sentimentV2(request: Request) {
  const text = new URL(request.url).searchParams.get('text') ?? '';
  const label = /good|great|fine/.test(text) ? 'positive' : 'negative';
  return Response.json({ label }, { headers: { 'x-model-version': 'v2' } });
}

const texts = ['good', 'fine', 'bad'];

describe('incremental rollout (docs/rollout.md)', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  /** Sends `count` requests, throws on any that is not a 2xx, and counts the answers by model version. */
  async function sample(count: number): Promise<Record<string, number>> {
    const seen: Record<string, number> = {};
    for (let i = 0; i < count; i++) {
      const response = await fetch(`${client.httpUrl}/sentiment?text=${texts[i % texts.length]}`);
      if (!response.ok) throw new Error(`request ${i} failed with ${response.status}: ${await response.text()}`);
      await response.arrayBuffer();
      const version = response.headers.get('x-model-version') ?? 'unknown';
      seen[version] = (seen[version] ?? 0) + 1;
    }
    return seen;
  }

  it('moves an endpoint from v1 to v2 through a shadow, 10%, 50% and 100% without a failed request', async () => {
    // Step 1: v1 serves the endpoint.
    await client.createBackend('sentiment-v1', sentimentV1, { config: { numReplicas: 2 }, replicaOptions: { numCpus: 0.5 } });
    await client.createEndpoint('sentiment', { backend: 'sentiment-v1', route: '/sentiment' });
    expect(await sample(30)).toEqual({ v1: 30 });

    // The load records which version answered, by the step in force for the whole request; a request that
    // overlaps a change may be routed either way, and is not checked (it must still succeed).
    let step = 'v1';
    const answers: Record<string, Record<string, number>> = {};
    let sent = 0;
    const load = startLoad(async () => {
      const at = step;
      const response = await fetch(`${client.httpUrl}/sentiment?text=${texts[sent++ % texts.length]}`);
      const version = response.headers.get('x-model-version') ?? 'unknown';
      if (at === step) answers[at] = { ...answers[at], [version]: (answers[at]?.[version] ?? 0) + 1 };
      return response;
    }, 4);

    // Step 2: deploy v2 beside v1.
    await client.createBackend('sentiment-v2', sentimentV2, { config: { numReplicas: 2 }, replicaOptions: { numCpus: 0.5 } });
    expect((await client.listEndpoints()).sentiment?.traffic).toEqual({ 'sentiment-v1': 1 });

    // Step 3: shadow v2; callers still get v1's answers only.
    step = 'changing';
    await client.shadowTraffic('sentiment', 'sentiment-v2', 1);
    step = 'shadow';
    expect(await sample(150)).toEqual({ v1: 150 });

    // Step 4: compare. v2 disagrees on 'fine' only: same statuses, some bodies differ.
    await expect.poll(async () => (await client.getShadowStats('sentiment'))['sentiment-v2']?.compared ?? 0).toBeGreaterThanOrEqual(150);
    const stats = (await client.getShadowStats('sentiment'))['sentiment-v2'];
    expect(stats).toMatchObject({ dropped: 0, failed: 0, statusMismatches: 0 });
    expect(stats!.matches).toBeGreaterThan(0);
    expect(stats!.bodyMismatches).toBeGreaterThan(0);
    expect(stats!.matches + stats!.bodyMismatches).toBe(stats!.compared);
    expect(stats!.bodyMismatches / stats!.compared).toBeGreaterThan(0.2);
    expect(stats!.bodyMismatches / stats!.compared).toBeLessThan(0.5);
    expect(stats!.primaryLatencyMs.p50).not.toBeNull();
    expect(stats!.shadowLatencyMs.p50).not.toBeNull();
    step = 'changing';
    await client.shadowTraffic('sentiment', 'sentiment-v2', 0);
    expect((await client.listEndpoints()).sentiment?.shadows).toEqual({});

    // Step 5: shift 10% → 50% → 100%.
    step = 'changing';
    await client.setTraffic('sentiment', { 'sentiment-v1': 0.9, 'sentiment-v2': 0.1 });
    step = '10%';
    const at10 = await sample(100);
    expect((at10.v1 ?? 0) + (at10.v2 ?? 0)).toBe(100);
    expect(at10.v2).toBeGreaterThan(0);
    expect(at10.v2).toBeLessThan(30);

    step = 'changing';
    await client.setTraffic('sentiment', { 'sentiment-v1': 0.5, 'sentiment-v2': 0.5 });
    step = '50%';
    const at50 = await sample(100);
    expect((at50.v1 ?? 0) + (at50.v2 ?? 0)).toBe(100);
    expect(at50.v2).toBeGreaterThan(25);
    expect(at50.v2).toBeLessThan(75);

    step = 'changing';
    await client.setTraffic('sentiment', { 'sentiment-v2': 1 });
    step = '100%';
    expect(await sample(100)).toEqual({ v2: 100 });

    // Step 6: delete v1.
    await client.deleteBackend('sentiment-v1');
    step = 'v1 deleted';
    expect(Object.keys(await client.listBackends())).toEqual(['sentiment-v2']);
    expect(await sample(30)).toEqual({ v2: 30 });

    const result = await load.stop();
    expect(Object.fromEntries(result.statuses)).toEqual({ 200: result.total });
    expect(answers.shadow).toEqual({ v1: expect.any(Number) });
    expect(answers['10%']?.v2).toBeGreaterThan(0);
    expect(answers['50%']?.v2).toBeGreaterThan(0);
    expect(answers['100%']).toEqual({ v2: expect.any(Number) });
    expect(answers['v1 deleted']).toEqual({ v2: expect.any(Number) });
    expect((await client.listEndpoints()).sentiment).toMatchObject({ traffic: { 'sentiment-v2': 1 }, shadows: {} });
  });
});
