import { mkdtempSync, readdirSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { PROTOCOL } from '../../src/replica/protocol.js';
import { startFlotilla } from './harness.js';

/** What shipped code finds as the global `serve` in a Node replica. */
declare const serve: { getHandle(endpoint: string): { remote(...args: unknown[]): Promise<unknown> } };

function postToSocket(socketPath: string, headers: Record<string, string>, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: 'POST', path: PROTOCOL.handleCallPath, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('composition: a replica calls another endpoint through a handle', () => {
  let client: Client;
  let instance: string;
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-'));

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla({ stateDir }));
    await client.createBackend('model', async (request: Request) => {
      const { words } = (await request.json()) as { words: string[] };
      return { label: words.length > 2 ? 'long' : 'short', seen: words };
    });
    await client.createEndpoint('model', { backend: 'model' });
    await client.createBackend('preprocess', async (request: Request) => {
      const words = (await request.text()).trim().toLowerCase().split(/\s+/);
      return serve.getHandle('model').remote({ words });
    });
    await client.createEndpoint('preprocess', { backend: 'preprocess', route: '/classify', methods: ['POST'] });
    await client.createBackend(
      'loop',
      async () => {
        await serve.getHandle('loop').remote();
        return 'unreachable';
      },
      { config: { maxConcurrentQueries: 1, requestTimeoutS: 3 } },
    );
    await client.createEndpoint('loop', { backend: 'loop', route: '/loop' });
    await client.createBackend(
      'narrow',
      async (request: Request) => {
        if (request.headers.get('host') === 'serve-handle') return 'inner call served';
        return serve
          .getHandle('narrow')
          .remote()
          .catch((error: { code?: string }) => `inner call refused: ${error.code}`);
      },
      { config: { maxConcurrentQueries: 1, maxQueuedRequests: 0 } },
    );
    await client.createEndpoint('narrow', { backend: 'narrow', route: '/narrow' });
  }, 300_000);
  afterAll(() => client.shutdown());

  it('runs a pipeline of two backends, over HTTP and from a handle', async () => {
    const res = await fetch(`${client.httpUrl}/classify`, { method: 'POST', body: '  Hello Big   World ' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ label: 'long', seen: ['hello', 'big', 'world'] });
    expect(await client.getHandle('preprocess').remote('one two')).toEqual({ label: 'short', seen: ['one', 'two'] });
  });

  it('ends a cycle with a timeout error rather than a hang, and the slot is free again after it', async () => {
    for (let round = 0; round < 2; round++) {
      const res = await fetch(`${client.httpUrl}/loop`);
      expect(res.status).toBeGreaterThanOrEqual(500);
      expect(await res.text()).toContain('REQUEST_TIMEOUT');
    }
  });

  it("counts a replica's calls against the target's limits: a call to itself finds its only slot taken and no queue", async () => {
    expect(await (await fetch(`${client.httpUrl}/narrow`)).text()).toBe('inner call refused: QUEUE_FULL');
  });

  it("refuses a call without the replica's token or with a forged one", async () => {
    const runDir = join(stateDir, 'run', instance);
    const socketPath = join(runDir, readdirSync(runDir)[0] ?? '', PROTOCOL.handleSocketName);
    const body = JSON.stringify({ endpoint: 'model', input: { json: { words: ['a'] } } });
    const headers = { 'content-type': 'application/json' };
    const missing = await postToSocket(socketPath, headers, body);
    expect(missing.status).toBe(403);
    expect(JSON.parse(missing.body)).toMatchObject({ error: { code: 'FORBIDDEN' } });
    const forged = await postToSocket(socketPath, { ...headers, [PROTOCOL.handleTokenHeader]: 'forged' }, body);
    expect(forged.status).toBe(403);
  });
});
