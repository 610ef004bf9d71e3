import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { startFlotilla, deployEndpoint } from './harness.js';

class Calculator {
  private calls = 0;
  constructor(private readonly base: number) {}
  async call(request: Request) {
    const body = (await request.json()) as { add: number };
    this.calls += 1;
    return { sum: this.base + body.add, calls: this.calls };
  }
  describe() {
    return `calculator with base ${this.base}`;
  }
}

describe('handlers', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
    await deployEndpoint(client, 'calc', Calculator, { initArgs: [10] }, { methods: ['POST'] });
    await client.createBackend('kinds', async (request: Request) => {
      const kind = new URL(request.url).searchParams.get('kind');
      if (kind === 'bytes') return new Uint8Array([1, 2, 3]);
      if (kind === 'response') return new Response('teapot', { status: 418, headers: { 'x-custom': 'yes' } });
      if (kind === 'json') return { list: [1, 'two'], nested: { ok: true } };
      if (kind === 'echo') return { method: request.method, text: await request.text(), type: request.headers.get('content-type') };
      if (kind === 'throw') throw new TypeError('kind must not be throw');
      if (kind === 'unserializable') return 10n;
      return 'text';
    });
    await client.createEndpoint('kinds', { backend: 'kinds', route: '/kinds', methods: ['GET', 'POST'] });
  });
  afterAll(() => client.shutdown());

  const get = (query: string) => fetch(`${client.httpUrl}/kinds?kind=${query}`);

  it('maps return values to HTTP responses', async () => {
    const text = await get('text');
    expect(text.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await text.text()).toBe('text');

    const bytes = await get('bytes');
    expect(bytes.headers.get('content-type')).toBe('application/octet-stream');
    expect([...new Uint8Array(await bytes.arrayBuffer())]).toEqual([1, 2, 3]);

    const json = await get('json');
    expect(json.headers.get('content-type')).toBe('application/json');
    expect(await json.json()).toEqual({ list: [1, 'two'], nested: { ok: true } });

    const response = await get('response');
    expect(response.status).toBe(418);
    expect(response.headers.get('x-custom')).toBe('yes');
    expect(await response.text()).toBe('teapot');
  });

  it('passes method, body and headers to the handler', async () => {
    const response = await fetch(`${client.httpUrl}/kinds?kind=echo`, {
      method: 'POST',
      body: 'payload',
      headers: { 'content-type': 'text/x-test' },
    });
    expect(await response.json()).toEqual({ method: 'POST', text: 'payload', type: 'text/x-test' });
  });

  it('answers a throwing handler with a 500 naming the error, and keeps serving', async () => {
    const failed = await get('throw');
    expect(failed.status).toBe(500);
    expect(await failed.json()).toEqual({
      error: { code: 'HANDLER_ERROR', type: 'TypeError', message: 'kind must not be throw' },
    });
    const unserializable = await get('unserializable');
    expect(unserializable.status).toBe(500);
    expect((await unserializable.json()).error.message).toMatch(/BigInt/);
    expect((await get('text')).status).toBe(200);
  });

  it('keeps class state per replica and calls other methods through handle options', async () => {
    const first = await fetch(`${client.httpUrl}/calc`, { method: 'POST', body: JSON.stringify({ add: 5 }) });
    expect(await first.json()).toEqual({ sum: 15, calls: 1 });
    const handle = client.getHandle('calc');
    expect(await handle.remote({ add: 1 })).toEqual({ sum: 11, calls: 2 });
    expect(await handle.options({ methodName: 'describe' }).remote()).toBe('calculator with base 10');
  });

  it('rejects a handle call with the handler error', async () => {
    const handle = client.getHandle('kinds');
    await expect(handle.options({ methodName: 'nope' }).remote()).rejects.toMatchObject({
      code: 'HANDLER_ERROR',
      message: expect.stringMatching(/no method 'nope'/),
    });
  });

  it('passes handle bodies as text, bytes or JSON', async () => {
    const handle = client.getHandle('kinds');
    expect(await handle.remote('plain')).toBe('text');
    const calc = client.getHandle('calc');
    await expect(calc.remote('not json')).rejects.toMatchObject({ code: 'HANDLER_ERROR', message: expect.stringMatching(/JSON/) });
  });

  it('does not let HTTP callers pick a class method', async () => {
    const response = await fetch(`${client.httpUrl}/calc`, {
      method: 'POST',
      body: JSON.stringify({ add: 1 }),
      headers: { 'x-flotilla-method': 'describe' },
    });
    expect((await response.json()).sum).toBe(11);
  });

  it('refuses a handle for an unknown endpoint', () => {
    expect(() => client.getHandle('missing')).toThrow(expect.objectContaining({ code: 'ENDPOINT_NOT_FOUND' }));
  });
});
