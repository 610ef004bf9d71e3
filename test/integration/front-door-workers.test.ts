import { execFileSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { createLogger } from '../../src/common/logger.js';
import { frontDoorWorkerEnv, loadConfig } from '../../src/config/config.js';
import { Dispatcher } from '../../src/dataplane/dispatcher.js';
import { FrontDoorWorkers } from '../../src/front-door/workers/front-door-workers.js';
import { ESCAPED_EXIT_CODE } from '../../src/common/last-resort.js';
import type { Logger } from '../../src/common/logger.js';
import { freePort, startFlotilla, deployEndpoint } from './harness.js';

/** Counts the calls it serves at once and remembers the most it ever served together. */
class Counter {
  private now = 0;
  private most = 0;
  async call(request: Request) {
    const url = new URL(request.url);
    if (url.searchParams.has('most')) return { most: this.most };
    if (url.searchParams.has('reset')) return { most: (this.most = 0) };
    const ms = Number(url.searchParams.get('ms') ?? JSON.parse((await request.text()) || '0'));
    this.now += 1;
    this.most = Math.max(this.most, this.now);
    await new Promise((resolve) => setTimeout(resolve, ms));
    this.now -= 1;
    return { served: true };
  }
}

function workerPids(): number[] {
  const out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((line) => line.includes('worker-process.js'))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

/** A GET on a connection of its own, so that requests spread over the workers. */
async function get(url: string): Promise<{ status: number; code?: string }> {
  const response = await fetch(url, { headers: { connection: 'close' } });
  const body = (await response.json()) as { error?: { code: string } };
  return { status: response.status, code: body.error?.code };
}

describe('the front door as two worker processes', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla({ http: { host: '127.0.0.1', port: 0, workers: 2, headersTimeoutS: 1 } }));
    await deployEndpoint(client, 'counter', Counter, { config: { maxConcurrentQueries: 2, maxQueuedRequests: 3 } }, { route: '/count' });
  });
  afterAll(() => client.shutdown());

  it('runs two workers behind the one port', async () => {
    expect(workerPids()).toHaveLength(2);
    const answers = await Promise.all(Array.from({ length: 5 }, () => get(`${client.httpUrl}/count`)));
    expect(answers.map((a) => a.status)).toEqual(Array(5).fill(200));
    const routes = await (await fetch(`${client.httpUrl}/-/routes`)).json();
    expect(routes).toEqual({ '/count': { endpoint: 'counter', methods: ['GET'] } });
  });

  it('answers 408 on every worker to clients that never finish their headers', async () => {
    const { port } = new URL(client.httpUrl);
    const slow = () =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET /count HTTP/1.1\r\nHost: x\r\n'));
        let answer = '';
        socket.on('data', (chunk) => (answer += chunk.toString()));
        socket.on('close', () => resolve(answer));
        socket.on('error', reject);
      });
    const answers = await Promise.all([slow(), slow()]);
    for (const answer of answers) expect(answer).toMatch(/^HTTP\/1.1 408/);
  });

  it('keeps maxConcurrentQueries and maxQueuedRequests exact over both workers and the handles', async () => {
    await get(`${client.httpUrl}/count?reset`);
    const handle = client.getHandle('counter');
    const calls: Array<Promise<{ status: number; code?: string }>> = [
      ...Array.from({ length: 11 }, () => get(`${client.httpUrl}/count?ms=1500`)),
      handle.remote(1500).then(
        () => ({ status: 200 }),
        (error: { code: string }) => ({ status: 503, code: error.code }),
      ),
    ];
    const answers = await Promise.all(calls);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(5);
    expect(answers.filter((a) => a.status === 503).map((a) => a.code)).toEqual(Array(7).fill('QUEUE_FULL'));
    expect(await (await fetch(`${client.httpUrl}/count?most`)).json()).toEqual({ most: 2 });
  });

  it('counts what every worker served in /-/metrics', async () => {
    const served = (text: string) =>
      text
        .split('\n')
        .filter((line) => line.startsWith('serve_num_http_requests_total{') && line.includes('endpoint="counter"'))
        .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
    const before = served(await (await fetch(`${client.httpUrl}/-/metrics`)).text());
    for (let i = 0; i < 10; i++) await get(`${client.httpUrl}/count`);
    // One render serves the scrapes of the second after it.
    await expect.poll(async () => served(await (await fetch(`${client.httpUrl}/-/metrics`)).text()) - before).toBe(10);
  });

  it('replaces a worker that dies, with its slots given back', async () => {
    const [victim] = workerPids();
    const inFlight = Array.from({ length: 4 }, () => get(`${client.httpUrl}/count?ms=1000`));
    await new Promise((resolve) => setTimeout(resolve, 300));
    process.kill(victim!, 'SIGKILL');
    await Promise.allSettled(inFlight);
    await expect.poll(() => workerPids().filter((pid) => pid !== victim).length, { timeout: 15_000 }).toBe(2);
    await get(`${client.httpUrl}/count?reset`);
    const answers = await Promise.all(Array.from({ length: 2 }, () => get(`${client.httpUrl}/count?ms=1200`)));
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    expect(await (await fetch(`${client.httpUrl}/count?most`)).json()).toEqual({ most: 2 });
  });

  it('starts a replica for a backend at zero when requests come to the workers', async () => {
    await client.createBackend('woken', Counter, {
      config: { autoscaling: { minReplicas: 0, maxReplicas: 1, metricsIntervalS: 0.1, lookBackPeriodS: 1, downscaleDelayS: 600 } },
    });
    await client.createEndpoint('woken', { backend: 'woken', route: '/woken' });
    expect(await client.listReplicas('woken')).toHaveLength(0);
    const answers = await Promise.all(Array.from({ length: 4 }, () => get(`${client.httpUrl}/woken`)));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    expect(await client.listReplicas('woken')).toHaveLength(1);
  });

  it('sums the shadow copies every worker sent in getShadowStats and /-/metrics', async () => {
    await client.createBackend('mirror', Counter);
    await client.createEndpoint('mirrored', { backend: 'counter', route: '/mirrored' });
    await client.shadowTraffic('mirrored', 'mirror', 1);
    for (let i = 0; i < 6; i++) expect((await get(`${client.httpUrl}/mirrored`)).status).toBe(200);
    await expect.poll(async () => (await client.getShadowStats('mirrored')).mirror?.compared).toBe(6);
    expect((await client.getShadowStats('mirrored')).mirror).toMatchObject({ sent: 6, matches: 6, dropped: 0, failed: 0 });
    const metrics = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
    expect(metrics).toContain('flotilla_shadow_requests_total{endpoint="mirrored",backend="mirror",outcome="match"} 6');
  });

  it('deletes an endpoint once the request a worker has in flight for it is answered', async () => {
    await client.createEndpoint('slow', { backend: 'counter', route: '/slow' });
    const slow = get(`${client.httpUrl}/slow?ms=1500`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = performance.now();
    await client.deleteEndpoint('slow');
    expect(performance.now() - started).toBeGreaterThan(900);
    expect(await slow).toEqual({ status: 200, code: undefined });
    expect((await get(`${client.httpUrl}/slow`)).code).toBe('ROUTE_NOT_FOUND');
  });
});

describe('http.maxConnections over two workers', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla({ http: { host: '127.0.0.1', port: 0, workers: 2, maxConnections: 3 } }));
  });
  afterAll(() => client.shutdown());

  it('closes connections beyond the limit counted over all workers, and takes new ones when others close', async () => {
    const { port } = new URL(client.httpUrl);
    const open = () =>
      new Promise<{ socket: Socket; answer: Promise<string> }>((resolve) => {
        const socket = connect(Number(port), '127.0.0.1', () => {
          const answer = new Promise<string>((done) => {
            let text = '';
            socket.on('data', (chunk) => (text += chunk.toString()));
            socket.on('close', () => done(text));
            socket.on('error', () => undefined);
          });
          socket.write('GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n');
          resolve({ socket, answer });
        });
      });
    const state = async (connection: { socket: Socket; answer: Promise<string> }) =>
      Promise.race([connection.answer, new Promise<string>((resolve) => setTimeout(() => resolve('still open'), 500))]);
    const kept = [await open(), await open(), await open()];
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refused = await open();
    expect(await refused.answer).toBe('');
    for (const connection of kept) expect(await state(connection)).toBe('still open');
    kept[0]!.socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const next = await open();
    expect(await state(next)).toBe('still open');
    for (const connection of [...kept, next]) connection.socket.destroy();
  });
});

describe('front-door workers watched and kept at their number', () => {
  let client: Client;
  let adminUrl: string;
  /** The front door's own health (undefined when no answer came within 2 s: a stopped worker holds what it was given). */
  const healthz = async (): Promise<{ status: number; serving?: number }> => {
    try {
      const response = await fetch(`${client.httpUrl}/-/healthz`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(2000) });
      const body = (await response.json()) as { workers?: { serving: number } };
      return { status: response.status, serving: body.workers?.serving };
    } catch {
      return { status: 0 };
    }
  };
  const serving = async () => (await healthz()).serving;

  beforeAll(async () => {
    const port = await freePort();
    adminUrl = `http://127.0.0.1:${port}`;
    ({ client } = await startFlotilla({
      http: { host: '127.0.0.1', port: 0, workers: 2 },
      admin: { host: '127.0.0.1', port, auth: 'none' },
    }));
    await deployEndpoint(client, 'counter', Counter, { config: { maxConcurrentQueries: 4 } }, { route: '/count' });
  });
  afterAll(() => client.shutdown());

  it('survives workers killed while /-/metrics is scraped under load, and replaces them', async () => {
    let running = true;
    const loop = async (url: string) => {
      while (running)
        await fetch(url, { headers: { connection: 'close' } }).then(
          (r) => r.arrayBuffer(),
          () => undefined,
        );
    };
    const loops = Array.from({ length: 8 }, (_, i) => loop(i % 2 === 0 ? `${client.httpUrl}/-/metrics` : `${client.httpUrl}/count?ms=20`));
    for (let kill = 0; kill < 3; kill++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const [victim] = workerPids();
      process.kill(victim!, 'SIGKILL');
      await expect.poll(() => workerPids().includes(victim!)).toBe(false);
    }
    running = false;
    await Promise.all(loops);
    await expect.poll(serving, { timeout: 30_000 }).toBe(2);
    expect(workerPids()).toHaveLength(2);
    expect((await get(`${client.httpUrl}/count`)).status).toBe(200);
    expect(Object.keys(await client.listBackends())).toContain('counter');
  });

  it('kills a worker that stops answering its heartbeat (SIGSTOP) and starts another', async () => {
    await expect.poll(serving, { timeout: 30_000 }).toBe(2);
    const [stuck] = workerPids();
    process.kill(stuck!, 'SIGSTOP');
    try {
      await expect.poll(() => workerPids().includes(stuck!), { timeout: 20_000 }).toBe(false);
    } finally {
      if (workerPids().includes(stuck!)) process.kill(stuck!, 'SIGCONT');
    }
    await expect.poll(serving, { timeout: 30_000 }).toBe(2);
    const answers = await Promise.all(Array.from({ length: 6 }, () => get(`${client.httpUrl}/count`)));
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200));
  });

  it('replaces a worker that dies before it is ready', async () => {
    await expect.poll(serving, { timeout: 30_000 }).toBe(2);
    const before = workerPids();
    process.kill(before[0]!, 'SIGKILL');
    let starting: number | undefined;
    await expect.poll(() => (starting = workerPids().find((pid) => !before.includes(pid))), { interval: 5, timeout: 30_000 }).toBeDefined();
    process.kill(starting!, 'SIGKILL');
    await expect.poll(serving, { timeout: 60_000 }).toBe(2);
    expect(workerPids()).not.toContain(starting);
    expect(workerPids()).toHaveLength(2);
  });

  it('answers 503 and fails /api/health while no worker serves, and says so in the metrics', async () => {
    await expect.poll(serving, { timeout: 60_000 }).toBe(2);
    const whileNone = async () => {
      for (const pid of workerPids()) process.kill(pid, 'SIGKILL');
      const answers = Promise.all([
        fetch(`${client.httpUrl}/-/healthz`).then(async (r) => [r.status, ((await r.json()) as { error?: { code: string } }).error?.code]),
        fetch(`${adminUrl}/api/health`).then(async (r) => [r.status, ((await r.json()) as { error?: { code: string } }).error?.code]),
        fetch(`${adminUrl}/api/metrics`).then((r) => r.text()),
      ]);
      const [front, health, metrics] = await answers.catch((error: Error) => [error.message, error.message, '']);
      return { front, health, serving: /flotilla_front_door_workers\{state="serving"\} (\d+)/.exec(metrics)?.[1] };
    };
    await expect
      .poll(whileNone, { timeout: 30_000, interval: 100 })
      .toEqual({ front: [503, 'FRONT_DOOR_UNAVAILABLE'], health: [503, 'FRONT_DOOR_UNAVAILABLE'], serving: '0' });
    await expect.poll(serving, { timeout: 90_000 }).toBe(2);
    expect((await fetch(`${adminUrl}/api/health`)).status).toBe(200);
  });
});

describe('a metrics render that fails behind front-door workers', () => {
  it('is answered 500 by the worker, not kept, and harms nothing else', async () => {
    const config = loadConfig({ logLevel: 'error', http: { workers: 2 } });
    const dispatcher = new Dispatcher();
    let renders = 0;
    const render = async () => {
      renders += 1;
      if (renders === 1) throw new Error('a collect callback failed');
      return { contentType: 'text/plain; version=0.0.4', body: `renders ${renders}\n` };
    };
    const workers = new FrontDoorWorkers(2, dispatcher, config.http, config, createLogger('error', 'json'), render, frontDoorWorkerEnv());
    const { port } = await workers.listen('127.0.0.1', 0);
    try {
      const failed = await fetch(`http://127.0.0.1:${port}/-/metrics`);
      expect(failed.status).toBe(500);
      expect(await failed.json()).toMatchObject({ error: { code: 'INTERNAL_ERROR' } });
      const next = await fetch(`http://127.0.0.1:${port}/-/metrics`);
      expect([next.status, await next.text()]).toEqual([200, 'renders 2\n']);
      expect(await (await fetch(`http://127.0.0.1:${port}/-/healthz`)).json()).toEqual({
        status: 'ok',
        workers: { serving: 2, configured: 2 },
      });
    } finally {
      await workers.close(0);
      dispatcher.close();
    }
  });
});

describe('a front-door worker that throws', () => {
  it('exits with the status of its last line of defence and is replaced', async () => {
    const config = loadConfig({ logLevel: 'error', http: { workers: 2 } });
    const dispatcher = new Dispatcher();
    const logged: string[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: () => undefined,
      error: (message) => void logged.push(message),
      child: () => logger,
    };
    const render = async () => ({ contentType: 'text/plain', body: '' });
    const workers = new FrontDoorWorkers(2, dispatcher, config.http, config, logger, render, frontDoorWorkerEnv());
    const { port } = await workers.listen('127.0.0.1', 0);
    try {
      // A snapshot the worker's Dispatcher cannot read: it throws inside the worker's message listener.
      const [victim] = (workers as unknown as { workers: Array<{ child: { send(message: unknown): void } }> }).workers;
      victim!.child.send({ t: 'snapshot', snapshot: null });
      await expect.poll(() => logged).toContain(`front-door worker exited (code ${ESCAPED_EXIT_CODE}); starting another`);
      await expect
        .poll(async () => (await (await fetch(`http://127.0.0.1:${port}/-/healthz`)).json()) as unknown)
        .toEqual({ status: 'ok', workers: { serving: 2, configured: 2 } });
    } finally {
      await workers.close(0);
      dispatcher.close();
    }
  });
});
