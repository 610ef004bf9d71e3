import { execFile, spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { containersOf, FIXTURES, inspect, startFlotilla } from './harness.js';

const python = { runtimeEnv: { runtime: 'python' as const, context: join(FIXTURES, 'py-replica') } };

/** What the replica container wrote on stderr: the runtime's JSON lines. */
function replicaLog(instance: string, backend: string): Array<Record<string, unknown>> {
  const [id] = containersOf(instance, backend);
  const { stderr } = spawnSync('docker', ['logs', id!], { encoding: 'utf8' });
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A request straight to the replica's unix socket, past the front door (which does not forward x-flotilla-* headers). */
function straight(
  socketPath: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, headers, method: body === undefined ? 'GET' : 'POST' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function socketOf(instance: string, backend: string): string {
  const [id] = containersOf(instance, backend);
  const mounts = inspect(id!).Mounts as Array<{ Source: string; Destination: string }>;
  return join(mounts.find((m) => m.Destination === '/run/flotilla')!.Source, 'replica.sock');
}

describe('the Python replica runtime (uvicorn, Starlette requests)', () => {
  let client: Client;
  let instance: string;
  const url = (path: string) => `${client.httpUrl}${path}`;
  const call = (method: string, body?: unknown) => client.getHandle('inspector').options({ methodName: method }).remote(body);

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
    await Promise.all([
      client.createBackend('inspector', 'handlers.py:Inspector', { replicaOptions: python }),
      client.createBackend('hello', 'handlers.py:hello', { config: { maxConcurrentQueries: 64 }, replicaOptions: python }),
      client.createBackend('batched', 'handlers.py:BatchedCall', { replicaOptions: python }),
      client.createBackend('paths', 'handlers.py:by_path', { replicaOptions: python }),
    ]);
    await client.createEndpoint('inspector', { backend: 'inspector', route: '/inspect', methods: ['GET', 'POST'] });
    await client.createEndpoint('hello', { backend: 'hello', route: '/hello' });
    await client.createEndpoint('batched', { backend: 'batched', route: '/batched' });
    await client.createEndpoint('paths', { backend: 'paths', route: '/paths' });
  }, 300_000);
  afterAll(() => client.shutdown());

  it("hands async handlers a Starlette Request with the caller's method, url, query, headers and body, on the event loop", async () => {
    const response = await fetch(url('/inspect/deeper?model=small&n=2'), {
      method: 'POST',
      headers: { 'x-probe': 'here', 'content-type': 'application/json' },
      body: JSON.stringify({ features: [1, 2] }),
    });
    expect(await response.json()).toEqual({
      isStarletteRequest: true,
      method: 'POST',
      url: expect.stringMatching(/^http:\/\/[^/]+\/inspect\/deeper\?model=small&n=2$/),
      path: '/inspect/deeper',
      query: { model: 'small', n: '2' },
      probe: 'here',
      json: { features: [1, 2] },
      pathParams: {},
      onEventLoop: true,
    });
    expect(response.headers.get('server'), 'a reply does not advertise the runtime or its version').toBeNull();
  });

  it('passes path parameters from x-flotilla-path-params to request.path_params', async () => {
    const answer = await straight(socketOf(instance, 'inspector'), '/api/ada', { 'x-flotilla-path-params': '{"username":"ada"}' });
    expect(JSON.parse(answer.text)).toMatchObject({ path: '/api/ada', pathParams: { username: 'ada' } });
  });

  it("calls a method with a handle's own positional and keyword arguments (x-flotilla-call: args)", async () => {
    const socket = socketOf(instance, 'inspector');
    const headers = { 'x-flotilla-call': 'args', 'x-flotilla-method': 'add' };
    expect(await straight(socket, '/', headers, JSON.stringify({ args: [2, 3], kwargs: { scale: 10 } }))).toEqual({
      status: 200,
      text: '50',
    });
    const refused = await straight(socket, '/', headers, '[2, 3]');
    expect([refused.status, JSON.parse(refused.text).error.message]).toEqual([500, expect.stringMatching(/takes \{"args"/)]);
  });

  it('runs sync handlers on a thread pool, off the event loop, several at once', async () => {
    expect(await call('sync')).toEqual({ onEventLoop: false, thread: 'flotilla-handler' });
    expect(await Promise.all([call('meet'), call('meet')])).toEqual([{ waited: true }, { waited: true }]);
  });

  it('sends a Starlette StreamingResponse chunked, and any other Response with its status and headers', async () => {
    const csv = await fetch(url('/paths/csv'));
    expect([csv.status, csv.headers.get('content-type'), csv.headers.get('transfer-encoding'), csv.headers.get('x-rows')]).toEqual([
      200,
      'text/csv; charset=utf-8',
      'chunked',
      '3',
    ]);
    expect(await csv.text()).toBe('0,0\n1,1\n2,4\n');
    await expect(call('created')).resolves.toEqual({ made: true });
    const created = await straight(socketOf(instance, 'inspector'), '/', { 'x-flotilla-method': 'created' });
    expect(created).toEqual({ status: 201, text: '{"made":true}' });
  });

  it('gives a batch handler on __call__ a list also at maxBatchSize 1, and batches a marked method once configured', async () => {
    const single = await Promise.all([1, 2, 3].map(() => fetch(url('/batched')).then((r) => r.json())));
    expect(single).toEqual([1, 2, 3].map(() => ({ isList: true, batch: 1 })));
    await client.updateBackendConfig('batched', { maxBatchSize: 4, batchWaitTimeoutS: 0.5 });
    const handle = client.getHandle('batched');
    const embedded = (await Promise.all(
      ['a', 'b', 'c', 'd'].map((text) => handle.options({ methodName: 'embed' }).remote(text)),
    )) as Array<{ text: string; batch: number }>;
    expect(embedded.map((answer) => answer.text)).toEqual(['a', 'b', 'c', 'd']);
    expect(embedded.every((answer) => answer.batch === 4)).toBe(true);
    const called = (await Promise.all(Array.from({ length: 4 }, () => fetch(url('/batched')).then((r) => r.json())))) as Array<{
      batch: number;
    }>;
    expect(called.every((answer) => answer.batch === 4)).toBe(true);
    await expect(handle.options({ methodName: 'single' }).remote()).resolves.toEqual({ isRequest: true });
  });

  it('refuses batching on a class that marks nothing with accept_batch', async () => {
    await expect(
      client.createBackend('not-batched', 'handlers.py:NotBatched', { config: { maxBatchSize: 2 }, replicaOptions: python }),
    ).rejects.toMatchObject({ code: 'REPLICA_START_FAILED', message: expect.stringMatching(/needs a handler that accepts batches/) });
  });

  it('answers 64 connections at once through the front door with no request lost', async () => {
    const statuses = new Map<number | string, number>();
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        for (let i = 0; i < 25; i++) {
          const key = await fetch(url('/hello')).then(
            async (response) => ((await response.text()) === 'hello' ? response.status : `${response.status} ${response.statusText}`),
            (error: Error) => error.name,
          );
          statuses.set(key, (statuses.get(key) ?? 0) + 1);
        }
      }),
    );
    expect(Object.fromEntries(statuses)).toEqual({ 200: 64 * 25 });
  });

  it('does not log a caller that hangs up as an error, and logs a handler error once with type, stack and path', async () => {
    const finished = async () => ((await (await fetch(url('/paths/finished'))).json()) as { finishedSlow: number }).finishedSlow;
    const before = await finished();
    await expect(fetch(url('/paths/slow'), { signal: AbortSignal.timeout(300) })).rejects.toThrow();
    await expect.poll(finished, { timeout: 10_000 }).toBe(before + 1);
    const endless = await fetch(url('/paths/endless'));
    const reader = endless.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toMatch(/^tick 0/);
    await reader.cancel();

    const thrown = await fetch(url('/paths/throw'));
    expect(thrown.status).toBe(500);
    expect(((await thrown.json()) as { error: unknown }).error).toEqual({
      code: 'HANDLER_ERROR',
      type: 'ValueError',
      message: 'the model is not loaded',
    });
    await expect
      .poll(() => replicaLog(instance, 'paths').filter((line) => line.event === 'handler_error'), { timeout: 5000 })
      .toEqual([
        {
          component: 'replica',
          event: 'handler_error',
          type: 'ValueError',
          message: 'the model is not loaded',
          path: '/paths/throw',
          traceback: expect.stringMatching(/Traceback[\s\S]*handlers\.py", line \d+, in by_path[\s\S]*ValueError: the model is not loaded/),
        },
      ]);
    expect(replicaLog(instance, 'paths').filter((line) => !['ready', 'handler_error'].includes(line.event as string))).toEqual([]);
  });

  it('drains on SIGTERM: answers the request in flight, then exits 0', async () => {
    await client.createBackend('drain', 'handlers.py:by_path', { replicaOptions: python });
    const [id] = containersOf(instance, 'drain');
    const socket = socketOf(instance, 'drain');
    const exited = promisify(execFile)('docker', ['wait', id!], { encoding: 'utf8' });
    const slow = straight(socket, '/drain/slow', {});
    await expect
      .poll(async () => (JSON.parse((await straight(socket, '/drain/finished', {})).text) as { startedSlow: number }).startedSlow)
      .toBe(1);
    spawnSync('docker', ['kill', '--signal', 'TERM', id!]);
    expect(await slow).toEqual({ status: 200, text: 'too late' });
    expect((await exited).stdout.trim()).toBe('0');
    expect(replicaLog(instance, 'drain').map((line) => line.event)).toEqual(['ready', 'draining']);
  });
});
