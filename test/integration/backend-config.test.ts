import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { containersOf, startFlotilla, deployEndpoint } from './harness.js';

class Threshold {
  private threshold = 0;
  reconfigure(config: { threshold: number }) {
    if (typeof config.threshold !== 'number') throw new Error('threshold must be a number');
    this.threshold = config.threshold;
  }
  call() {
    return { threshold: this.threshold, replica: process.env.HOSTNAME };
  }
}

class NoReconfigure {
  call() {
    return 'static';
  }
}

const batchModel = serve.acceptBatch(
  class BatchModel {
    private sizes: number[] = [];
    async call(requests: Request[]) {
      this.sizes.push(requests.length);
      await new Promise((resolve) => setTimeout(resolve, 200));
      return Promise.all(requests.map(async (request) => ({ input: await request.text(), batchSize: requests.length })));
    }
    seen() {
      return this.sizes;
    }
  },
);

const wrongLength = serve.acceptBatch((requests: Request[]) => requests.slice(1).map(() => 'x'));

class Sleeper {
  private cancelled = 0;
  async call(request: Request) {
    const ms = Number(new URL(request.url).searchParams.get('ms') ?? ((await request.text()) || '0'));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      request.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        this.cancelled += 1;
        resolve();
      });
    });
    return `slept ${ms}`;
  }
  stats() {
    return { cancelled: this.cancelled };
  }
}

describe('userConfig and reconfigure', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  it('reconfigures every replica in place, before traffic and after updates', async () => {
    await deployEndpoint(client, 'threshold', Threshold, { config: { numReplicas: 2, userConfig: { threshold: 0.5 } } });
    const read = async (count: number) =>
      (await Promise.all(Array.from({ length: count }, async () => (await fetch(`${client.httpUrl}/threshold`)).json()))) as Array<{
        threshold: number;
        replica: string;
      }>;
    expect(new Set((await read(10)).map((a) => a.threshold))).toEqual(new Set([0.5]));

    const containers = containersOf(instance, 'threshold').sort();
    await client.updateBackendConfig('threshold', { userConfig: { threshold: 0.99 } });
    const answers = await read(20);
    expect(new Set(answers.map((a) => a.threshold))).toEqual(new Set([0.99]));
    expect(new Set(answers.map((a) => a.replica)).size).toBe(2);
    expect(containersOf(instance, 'threshold').sort()).toEqual(containers);

    await client.updateBackendConfig('threshold', { numReplicas: 3 });
    const scaled = await read(30);
    expect(new Set(scaled.map((a) => a.replica)).size).toBe(3);
    expect(new Set(scaled.map((a) => a.threshold))).toEqual(new Set([0.99]));
  });

  it('keeps the old config when reconfigure throws, and reports it', async () => {
    await expect(client.updateBackendConfig('threshold', { userConfig: { threshold: 'high' } })).rejects.toMatchObject({
      code: 'RECONFIGURE_FAILED',
      message: expect.stringMatching(/threshold must be a number.*previous config stays in force/),
    });
    expect((await client.getBackendConfig('threshold')).userConfig).toEqual({ threshold: 0.99 });
    const answers = await Promise.all(Array.from({ length: 12 }, async () => (await fetch(`${client.httpUrl}/threshold`)).json()));
    expect(new Set(answers.map((a) => (a as { threshold: number }).threshold))).toEqual(new Set([0.99]));
  });

  it('refuses userConfig where there is no reconfigure', async () => {
    await expect(client.createBackend('fn', () => 1, { config: { userConfig: { a: 1 } } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/reconfigure/),
    });
    await client.createBackend('plain', NoReconfigure);
    await expect(client.updateBackendConfig('plain', { userConfig: { a: 1 } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/NoReconfigure has none/),
    });
    expect((await client.getBackendConfig('plain')).userConfig).toBeNull();
  });
});

describe('batching', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  it('hands concurrent requests to the handler in batches, each caller getting its own element', async () => {
    await deployEndpoint(client, 'batch', batchModel, { config: { maxBatchSize: 4, batchWaitTimeoutS: 0.5 } }, { methods: ['POST'] });
    const answers = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => (await fetch(`${client.httpUrl}/batch`, { method: 'POST', body: `item-${i}` })).json()),
    );
    expect(answers.map((a) => a.input)).toEqual(Array.from({ length: 8 }, (_, i) => `item-${i}`));
    const seen = (await client.getHandle('batch').options({ methodName: 'seen' }).remote()) as number[];
    expect(seen.reduce((a, b) => a + b, 0)).toBe(8);
    expect(Math.max(...seen)).toBe(4);
    expect(seen.length).toBeLessThanOrEqual(3);
  });

  it('fails every call of a batch whose result has the wrong length', async () => {
    await deployEndpoint(client, 'wrong', wrongLength, { config: { maxBatchSize: 2, batchWaitTimeoutS: 0.5 } });
    const responses = await Promise.all([fetch(`${client.httpUrl}/wrong`), fetch(`${client.httpUrl}/wrong`)]);
    expect(responses.map((r) => r.status)).toEqual([500, 500]);
    expect((await responses[0]!.json()).error.message).toMatch(/returned 1 results for a batch of 2/);
  });

  it('refuses maxBatchSize > 1 for a handler that does not accept batches', async () => {
    await expect(client.createBackend('single', () => 1, { config: { maxBatchSize: 8 } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/acceptBatch/),
    });
  });
});

describe('backpressure, timeouts and body limits', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla({ http: { host: '127.0.0.1', port: 0, maxBodyBytes: 1024 } }));
    await deployEndpoint(
      client,
      'sleeper',
      Sleeper,
      { config: { maxConcurrentQueries: 1, maxQueuedRequests: 1, requestTimeoutS: 3 } },
      { route: '/sleep', methods: ['GET', 'POST'] },
    );
  });
  afterAll(() => client.shutdown());

  const sleep = (ms: number, init?: RequestInit) => fetch(`${client.httpUrl}/sleep?ms=${ms}`, init);

  it('answers 503 with Retry-After when every replica is busy and the queue is full', async () => {
    const busy = sleep(1500);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const queued = sleep(0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await sleep(0);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await refused.json()).error.code).toBe('QUEUE_FULL');
    await expect(client.getHandle('sleeper').remote()).rejects.toMatchObject({ code: 'QUEUE_FULL' });
    expect((await busy).status).toBe(200);
    expect((await queued).status).toBe(200);
  });

  it('frees the queue slot of a client that hangs up while queued', async () => {
    const busy = sleep(1500);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const abort = new AbortController();
    const gaveUp = sleep(0, { signal: abort.signal }).catch((error: Error) => error.name);
    await new Promise((resolve) => setTimeout(resolve, 100));
    abort.abort();
    expect(await gaveUp).toBe('AbortError');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const next = await sleep(0);
    expect(next.status).toBe(200);
    expect((await busy).status).toBe(200);
  });

  it('answers 504 after requestTimeoutS and cancels the upstream request', async () => {
    const stats = client.getHandle('sleeper').options({ methodName: 'stats' });
    const before = ((await stats.remote()) as { cancelled: number }).cancelled;
    const response = await sleep(10_000);
    expect(response.status).toBe(504);
    expect((await response.json()).error.code).toBe('REQUEST_TIMEOUT');
    await expect.poll(async () => ((await stats.remote()) as { cancelled: number }).cancelled).toBe(before + 1);
    await expect(client.getHandle('sleeper').remote()).resolves.toBe('slept 0');
  });

  it('rejects a handle call after requestTimeoutS with REQUEST_TIMEOUT', async () => {
    const handle = client.getHandle('sleeper');
    await expect(handle.remote('10000')).rejects.toMatchObject({ code: 'REQUEST_TIMEOUT' });
    await expect(handle.remote('0')).resolves.toBe('slept 0');
  });

  it('answers 413 to a body above maxBodyBytes and keeps serving', async () => {
    const tooLarge = await sleep(0, { method: 'POST', body: 'x'.repeat(2048) });
    expect(tooLarge.status).toBe(413);
    expect((await tooLarge.json()).error.code).toBe('PAYLOAD_TOO_LARGE');
    expect((await sleep(0, { method: 'POST', body: 'x'.repeat(512) })).status).toBe(200);
  });
});
