import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createParser } from 'eventsource-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { FIXTURES, startFlotilla, freePort } from './harness.js';

/** Picks what to stream by the path's last segment (HTTP) or the body (handles). */
async function streamer(request: Request): Promise<unknown> {
  const shape = request.method === 'POST' ? await request.text() : new URL(request.url).pathname.split('/').pop();
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const state = globalThis as { cleanups?: number };
  if (shape === 'gap')
    return (async function* () {
      yield 'first\n';
      await sleep(2000);
      yield 'second\n';
    })();
  // serve.sse, read from the replica's global: vitest rewrites the module's own import of serve in shipped source.
  const { sse } = (globalThis as unknown as { serve: typeof serve }).serve;
  if (shape === 'sse')
    return sse(
      (async function* () {
        for (const word of ['Streaming', 'from', 'Node']) {
          yield word;
          await sleep(100);
        }
      })(),
    );
  if (shape === 'endless')
    return (async function* () {
      try {
        for (let tick = 0; ; tick++) {
          yield `tick ${tick}\n`;
          await sleep(100);
        }
      } finally {
        state.cleanups = (state.cleanups ?? 0) + 1;
      }
    })();
  if (shape === 'cleanups') return { cleanups: state.cleanups ?? 0 };
  if (shape === 'fails')
    return (async function* () {
      yield 'partial ';
      await sleep(100);
      throw new RangeError('the model ran out of tokens');
    })();
  return (async function* () {
    for (let n = 0; n < 3; n++) yield { n };
  })();
}

/** When each piece of a stream arrived, and the pieces joined. */
async function timed(chunks: AsyncIterable<unknown>): Promise<{ text: string; times: number[] }> {
  let text = '';
  const times: number[] = [];
  const decoder = new TextDecoder();
  for await (const chunk of chunks) {
    text += typeof chunk === 'string' ? chunk : decoder.decode(chunk as Uint8Array);
    times.push(Date.now());
  }
  return { text, times };
}

/** The gap between the arrival of "first" and of "second". */
function gap(result: { text: string; times: number[] }): number {
  expect(result.text).toBe('first\nsecond\n');
  return result.times.at(-1)! - result.times[0]!;
}

async function sseEvents(url: string): Promise<string[]> {
  const response = await fetch(url);
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(response.headers.get('x-accel-buffering')).toBe('no');
  const events: string[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event.data) });
  const decoder = new TextDecoder();
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
  return events;
}

/** Reads three chunks of an endless stream, then hangs up. */
async function readThreeAndLeave(url: string): Promise<string> {
  const cancel = new AbortController();
  const response = await fetch(url, { signal: cancel.signal });
  const reader = response.body!.getReader();
  let text = '';
  for (let read = 0; read < 3; read++) text += new TextDecoder().decode((await reader.read()).value);
  cancel.abort();
  return text;
}

describe('streamed answers on the real engine', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-stream-'));
  const instance = `str-${shortId(3)}`;
  let client: Client;
  let adminPort: number;

  beforeAll(async () => {
    adminPort = await freePort();
    ({ client } = await startFlotilla({ instance, stateDir, admin: { host: '127.0.0.1', port: adminPort } }));
    await Promise.all([
      client.createBackend('node-stream', streamer, { config: { maxConcurrentQueries: 1 } }),
      client.createBackend('py-stream', 'stream.py:streamer', {
        config: { maxConcurrentQueries: 1 },
        replicaOptions: { runtimeEnv: { runtime: 'python', context: join(FIXTURES, 'py-stream') } },
      }),
    ]);
    await client.createEndpoint('node', { backend: 'node-stream', route: '/node', methods: ['GET', 'POST'] });
    await client.createEndpoint('py', { backend: 'py-stream', route: '/py', methods: ['GET', 'POST'] });
  }, 300_000);
  afterAll(() => client.shutdown());

  for (const runtime of ['node', 'py'] as const) {
    describe(runtime === 'node' ? 'Node' : 'Python', () => {
      it('delivers the first chunk over HTTP at least 1 s before the second, which comes 2 s later', async () => {
        const response = await fetch(`${client.httpUrl}/${runtime}/gap`);
        expect(response.headers.get('transfer-encoding')).toBe('chunked');
        expect(gap(await timed(response.body as unknown as AsyncIterable<Uint8Array>))).toBeGreaterThanOrEqual(1000);
      });

      it('delivers the first chunk through a handle at least 1 s before the second', async () => {
        expect(gap(await timed(client.getHandle(runtime).stream('gap')))).toBeGreaterThanOrEqual(1000);
      });

      it('answers server-sent events that a real SSE parser reads', async () => {
        expect(await sseEvents(`${client.httpUrl}/${runtime}/sse`)).toEqual(['Streaming', 'from', runtime === 'node' ? 'Node' : 'Python']);
      });

      it('streams other values as NDJSON, which a handle yields as values', async () => {
        const response = await fetch(`${client.httpUrl}/${runtime}/values`);
        expect(response.headers.get('content-type')).toBe('application/x-ndjson');
        expect(await response.text()).toBe('{"n":0}\n{"n":1}\n{"n":2}\n');
        const values: unknown[] = [];
        for await (const value of client.getHandle(runtime).stream('values')) values.push(value);
        expect(values).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
      });

      it("ends the handler's iteration when the client leaves, and frees its only slot for the next request", async () => {
        const before = ((await (await fetch(`${client.httpUrl}/${runtime}/cleanups`)).json()) as { cleanups: number }).cleanups;
        expect(await readThreeAndLeave(`${client.httpUrl}/${runtime}/endless`)).toMatch(/^tick 0\n/);
        await expect
          .poll(async () => ((await (await fetch(`${client.httpUrl}/${runtime}/cleanups`)).json()) as { cleanups: number }).cleanups, {
            timeout: 5000,
          })
          .toBe(before + 1);
      });

      it('stops the handler when a handle consumer leaves the loop early', async () => {
        const handle = client.getHandle(runtime);
        const before = ((await handle.remote('cleanups')) as { cleanups: number }).cleanups;
        let pieces = 0;
        for await (const piece of handle.stream('endless')) {
          expect(piece).toMatch(/tick/);
          if (++pieces === 3) break;
        }
        await expect
          .poll(async () => ((await handle.remote('cleanups')) as { cleanups: number }).cleanups, { timeout: 5000 })
          .toBe(before + 1);
      });
    });
  }

  it("streams through serve.connect's remote client (the admin API streams the handle call)", async () => {
    const remote = await serve.connect({ address: `http://127.0.0.1:${adminPort}`, instance, stateDir });
    expect(gap(await timed(remote.getHandle('node').stream('gap')))).toBeGreaterThanOrEqual(1000);
    const values: unknown[] = [];
    for await (const value of remote.getHandle('py').stream('values')) values.push(value);
    expect(values).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
  });

  it('cuts a stream that fails midway: HTTP sees an incomplete body, handles (local and remote) the handler error', async () => {
    const response = await fetch(`${client.httpUrl}/node/fails`);
    expect(response.status).toBe(200);
    await expect(response.text()).rejects.toThrow();
    const remote = await serve.connect({ address: `http://127.0.0.1:${adminPort}`, instance, stateDir });
    for (const handle of [client.getHandle('node'), remote.getHandle('node')]) {
      const pieces: unknown[] = [];
      const failure = await (async () => {
        for await (const piece of handle.stream('fails')) pieces.push(piece);
      })().catch((error: unknown) => error);
      expect(pieces.join('')).toBe('partial ');
      expect(failure).toMatchObject({ code: 'HANDLER_ERROR', message: expect.stringMatching(/RangeError: the model ran out of tokens/) });
    }
  });

  it('prints a stream as it comes with flotilla call --stream', async () => {
    const cli = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');
    const args = [
      'call',
      'node',
      'gap',
      '--stream',
      '--address',
      `http://127.0.0.1:${adminPort}`,
      '--instance',
      instance,
      '--state-dir',
      stateDir,
    ];
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const result = await timed(child.stdout as AsyncIterable<Buffer>);
    expect(await exited).toBe(0);
    expect(gap(result)).toBeGreaterThanOrEqual(1000);
  });

  it('refuses batching together with streaming with a clear error, in Node and in Python', async () => {
    const batchTokens = serve.acceptBatch(async function* (requests: Request[]) {
      yield requests.map(() => 'never');
    });
    await expect(client.createBackend('batch-stream', batchTokens, { config: { maxBatchSize: 2 } })).rejects.toMatchObject({
      code: 'REPLICA_START_FAILED',
      message: expect.stringMatching(/batch handler cannot stream/),
    });
    const python = { runtimeEnv: { runtime: 'python' as const, context: join(FIXTURES, 'py-stream') } };
    await expect(
      client.createBackend('py-batch-stream', 'stream.py:batch_tokens', { config: { maxBatchSize: 2 }, replicaOptions: python }),
    ).rejects.toMatchObject({ code: 'REPLICA_START_FAILED', message: expect.stringMatching(/batch handler cannot stream/) });
  });
});
