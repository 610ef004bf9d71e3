import { mkdtempSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { rawRequest, type RawAnswer } from '../unit/front-door-harness.js';
import { startFlotilla, deployEndpoint } from './harness.js';

class Configured {
  private config: unknown = null;

  reconfigure(userConfig: unknown) {
    this.config = userConfig;
  }

  call(request: Request) {
    return { path: new URL(request.url).pathname, config: this.config };
  }

  echo(request: Request) {
    return request.text();
  }
}

/** A raw request to the front door at `url`, waiting up to 10 s for it to answer and close. */
function raw(url: string, parts: Buffer[]): Promise<RawAnswer> {
  return rawRequest(Number(new URL(url).port), parts, 10_000);
}

async function replicaFailures(client: Client, backend: string): Promise<number> {
  const text = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
  return Number(new RegExp(`^flotilla_replica_failures_total\\{backend="${backend}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
}

describe('the front door and handles under hostile input', () => {
  let client: Client;
  let instance: string;
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-'));

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla({ healthCheckPeriodS: 60, stateDir }));
    await client.createBackend('conf', Configured, { config: { userConfig: { v: 1 } } });
    await client.createEndpoint('all', { backend: 'conf', route: '/', methods: ['GET', 'POST', 'PUT'] });
  });
  afterAll(() => client.shutdown());

  const works = async () => {
    const response = await fetch(`${client.httpUrl}/still/here`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ path: '/still/here', config: { v: 1 } });
  };

  it('answers a malformed request line with 400 and keeps running', async () => {
    for (const line of ['GET http://[ HTTP/1.1', 'GET /a b HTTP/1.1', 'G\u0000T / HTTP/1.1']) {
      const answer = await raw(client.httpUrl, [Buffer.from(`${line}\r\nHost: x\r\n\r\n`, 'latin1')]);
      expect(answer.text).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer.closed).toBe(true);
    }
    await works();
  });

  it("never forwards the replica protocol's paths, even with a catch-all route", async () => {
    const response = await fetch(`${client.httpUrl}/-/flotilla/config`, {
      method: 'PUT',
      body: JSON.stringify({ userConfig: { v: 666 } }),
    });
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ error: { code: 'ROUTE_NOT_FOUND' } });
    const body = JSON.stringify({ userConfig: { v: 666 } });
    for (const target of ['/x/../-/flotilla/config', '//-/flotilla/config', '/x/%2e%2e/-/flotilla/config']) {
      const answer = await raw(client.httpUrl, [
        Buffer.from(`PUT ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
      ]);
      expect(answer.text).toMatch(/^HTTP\/1\.1 400 /);
    }
    await works();
  });

  it('answers an 11 MiB chunked body with 413 and closes the connection', async () => {
    const chunk = Buffer.concat([Buffer.from(`10000\r\n`), Buffer.alloc(0x10000, 120), Buffer.from('\r\n')]);
    const parts = [Buffer.from('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')];
    for (let i = 0; i < 176; i++) parts.push(chunk);
    parts.push(Buffer.from('0\r\n\r\n'));
    const started = Date.now();
    const answer = await raw(client.httpUrl, parts);
    expect(answer.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer.text).toMatch(/\r\nconnection: close\r\n/i);
    expect(answer.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(8000);
    await works();
  });

  it('refuses a CR/LF method name with INVALID_ARGUMENT, and normal traffic still works', async () => {
    const handle = client.getHandle('all');
    for (const methodName of ['echo\r\nx-flotilla-method: reconfigure', 'echo\n', 'no such', '__proto__.x'])
      expect(() => handle.options({ methodName })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(await handle.options({ methodName: 'echo' }).remote('hi')).toBe('hi');
    const answers = await Promise.all(Array.from({ length: 10 }, () => handle.remote()));
    expect(answers).toEqual(Array(10).fill({ path: '/', config: { v: 1 } }));
    await works();
    const [replica] = await client.listReplicas('conf');
    expect(replica).toMatchObject({ state: 'ready', restarts: 0 });
    expect(await replicaFailures(client, 'conf')).toBe(0);
  });

  it('takes a replica that fails connections out of rotation at once, while its container still runs', async () => {
    await deployEndpoint(client, 'pair', (request: Request) => new URL(request.url).pathname, { config: { numReplicas: 2 } });
    const [victim] = await client.listReplicas('pair');
    const socket = join(stateDir, 'run', instance, victim!.id, 'replica.sock');
    renameSync(socket, `${socket}.away`);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 30; i++) statuses.push((await fetch(`${client.httpUrl}/pair/${i}`)).status);
      expect(statuses).toEqual(Array(30).fill(200));
      // /-/metrics is rendered at most once a second: the count is read once that render is fresh.
      await expect.poll(() => replicaFailures(client, 'pair'), { timeout: 3000 }).toBe(1);
    } finally {
      renameSync(`${socket}.away`, socket);
    }
  });
});
