import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client, ServeRequest } from '../../src/index.js';
import { startFlotilla } from './harness.js';
import type { ServeHandle } from '../../src/handle/serve-handle.js';

class Calculator {
  call(request: ServeRequest) {
    return `called with ${request.method}`;
  }
  add(a: number, b: number) {
    return a + b;
  }
  describe(request: ServeRequest) {
    return `describe with ${request.method}`;
  }
}

describe("Ray 1.x's routes and handle calls", () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla());
    await client.createBackend('user', (request: ServeRequest) => ({
      params: request.params,
      path: new URL(request.url).pathname,
      forged: request.headers.get('x-flotilla-path-params') === '{"username":"mallory"}',
    }));
    await client.createEndpoint('user', { backend: 'user', route: '/api/{username}/items/{id}' });
    await client.createBackend('admin', () => 'admin');
    await client.createEndpoint('admin', { backend: 'admin', route: '/api/admin/items/all' });
    await client.createBackend('calc', Calculator);
    await client.createEndpoint('calc', { backend: 'calc', route: '/calc', methods: ['GET', 'POST'], allowCallMethod: true });
    await client.createEndpoint('closed', { backend: 'calc', route: '/closed' });
    await client.createBackend('multiply', (a: number, b: number) => a * b);
    await client.createEndpoint('multiply', { backend: 'multiply' });
  }, 300_000);
  afterAll(() => client.shutdown());

  it("passes the path parameters to the handler as request.params, decoded, and never a caller's own", async () => {
    const res = await fetch(`${client.httpUrl}/api/J%C3%BCrgen/items/7?x=1`, {
      headers: { 'x-flotilla-path-params': '{"username":"mallory"}' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ params: { username: 'Jürgen', id: '7' }, path: '/api/J%C3%BCrgen/items/7', forged: false });
    expect(await (await fetch(`${client.httpUrl}/api/admin/items/all`)).text()).toBe('admin');
    expect((await fetch(`${client.httpUrl}/api/ada/items`)).status).toBe(404);
  });

  it('passes two or more handle arguments to the method as they are, and refuses keyword arguments to a Node backend', async () => {
    expect(await client.getHandle('calc').remote('body')).toBe('called with POST');
    expect(await client.getHandle('calc').options({ methodName: 'add' }).remote(2, 3)).toBe(5);
    expect(await client.getHandle('multiply').remote(6, 7)).toBe(42);
    const handle = client.getHandle('calc').options({ methodName: 'add' }) as ServeHandle;
    await expect(handle.callArguments([1], { b: 2 })).rejects.toMatchObject({
      code: 'HANDLER_ERROR',
      message: expect.stringContaining('keyword'),
    });
    await expect(handle.remote(1, new Uint8Array([1]))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('lets HTTP callers choose a method with X-SERVE-CALL-METHOD only where the endpoint allows it', async () => {
    const chosen = await fetch(`${client.httpUrl}/calc`, { method: 'POST', headers: { 'X-SERVE-CALL-METHOD': 'describe' } });
    expect(await chosen.text()).toBe('describe with POST');
    expect(await (await fetch(`${client.httpUrl}/calc`)).text()).toBe('called with GET');
    const refused = await fetch(`${client.httpUrl}/closed`, { headers: { 'X-SERVE-CALL-METHOD': 'describe' } });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining('allowCallMethod') },
    });
    expect((await fetch(`${client.httpUrl}/calc`, { headers: { 'X-SERVE-CALL-METHOD': 'no such' } })).status).toBe(400);
    expect((await client.listEndpoints()).calc).toMatchObject({ allowCallMethod: true });
    expect((await client.listEndpoints()).closed).not.toHaveProperty('allowCallMethod');
  });

  it('refuses a route of the same shape as one taken, and a malformed parameter', async () => {
    await client.createBackend('other', () => 'other');
    await expect(client.createEndpoint('other', { backend: 'other', route: '/api/{name}/items/{n}' })).rejects.toMatchObject({
      code: 'ROUTE_TAKEN',
    });
    await expect(client.createEndpoint('other', { backend: 'other', route: '/api/{id:int}' })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});
