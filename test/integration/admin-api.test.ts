import fc from 'fast-check';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect as connectSocket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { ROUTES } from '../../src/admin/routes.js';
import { startFlotilla, deployEndpoint, freePort } from './harness.js';

const agent = new Agent({ keepAlive: false });

interface FuzzRequest {
  method: string;
  path: string;
  host: string;
  origin: string | undefined;
  contentType: string | undefined;
  authorization: string | undefined;
  body: string | undefined;
}

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

/** One request with exactly these headers (Host and Origin included), as a browser or a script could send it. */
function send(port: number, { method, path, headers, body }: Sent): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const framed = body === undefined ? headers : { 'content-length': String(Buffer.byteLength(body)), ...headers };
    const req = request({ host: '127.0.0.1', port, method, path, headers: framed, agent, setHost: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(20_000, () => req.destroy(new Error(`${method} ${path} got no answer`)));
    req.on('error', reject);
    req.end(body);
  });
}

function raw(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = connectSocket(port, '127.0.0.1', () => socket.end(bytes));
    let answer = '';
    socket.setTimeout(5000, () => socket.destroy());
    socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
    socket.on('close', () => resolve(answer));
    socket.on('error', () => resolve(answer));
  });
}

async function snapshot(client: Client) {
  return { backends: await client.listBackends(), endpoints: await client.listEndpoints() };
}

const ATTACKER_BODY = JSON.stringify({
  name: 'pwned',
  definition: { kind: 'function', name: 'f', source: 'function f() { return 1; }', hasReconfigure: false, acceptsBatch: false },
  options: { replicaOptions: { runtimeEnv: { context: '/root/.ssh' } } },
});

describe('the admin API with admin.auth=none (the loopback opt-out)', () => {
  let client: Client;
  let port: number;
  let own: string;

  beforeAll(async () => {
    port = await freePort();
    own = `127.0.0.1:${port}`;
    ({ client } = await startFlotilla({ admin: { host: '127.0.0.1', port, auth: 'none' } }));
    await deployEndpoint(client, 'fuzzed', () => 'fuzzed ok');
  });
  afterAll(() => client.shutdown());

  it('refuses a cross-site text/plain POST and a rebinding Host, and changes nothing', async () => {
    const before = await snapshot(client);
    const crossSite = await send(port, {
      method: 'POST',
      path: '/api/backends',
      headers: { host: own, origin: 'http://evil.example', 'content-type': 'text/plain;charset=UTF-8' },
      body: ATTACKER_BODY,
    });
    expect(crossSite.status).toBe(403);
    expect(JSON.parse(crossSite.text).error.code).toBe('FORBIDDEN');
    const plainText = await send(port, {
      method: 'POST',
      path: '/api/backends',
      headers: { host: own, 'content-type': 'text/plain' },
      body: ATTACKER_BODY,
    });
    expect(plainText.status).toBe(415);
    for (const method of ['GET', 'POST']) {
      const rebound = await send(port, {
        method,
        path: '/api/backends',
        headers: { host: `attacker.example:${port}`, origin: `http://attacker.example:${port}`, 'content-type': 'application/json' },
        ...(method === 'POST' ? { body: ATTACKER_BODY } : {}),
      });
      expect({ method, status: rebound.status }).toEqual({ method, status: 403 });
      expect(rebound.text).not.toContain('fuzzed');
    }
    expect(await snapshot(client)).toEqual(before);
  });

  it('refuses a bodiless cross-site POST /api/shutdown and keeps serving', async () => {
    for (const origin of ['http://evil.example', 'null']) {
      const answer = await send(port, { method: 'POST', path: '/api/shutdown', headers: { host: own, origin, 'content-length': '0' } });
      expect(answer.status).toBe(403);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await send(port, { method: 'GET', path: '/api/health', headers: { host: own } })).status).toBe(200);
    expect(await (await fetch(`${client.httpUrl}/fuzzed`)).text()).toBe('fuzzed ok');
  });

  it('survives a seeded fuzz of every route: no 5xx, no state change from a rejected call, still answering', async () => {
    const name = fc.oneof(
      fc.constantFrom('fuzzed', 'nobody', '%', '%E0%A4%A', '%zz', '..', '%2F', '%00', 'fuzz%65d', ''),
      fc.stringMatching(/^[A-Za-z0-9%._~-]{1,12}$/),
    );
    /** Every route with its method (`$` for each name), and paths it does not have. */
    const routes: Array<[string, string]> = [
      ...Object.values(ROUTES).map(({ method, path }): [string, string] => [method, path.replace(/:[a-z]+/g, '$')]),
      ['GET', '/api/$'],
      ['POST', '/$'],
    ];
    const otherMethod = fc.oneof(
      { arbitrary: fc.constant(undefined), weight: 4 },
      { arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND'), weight: 1 },
    );
    const target = fc
      .tuple(
        fc.constantFrom(...routes),
        otherMethod,
        name,
        name,
        fc.dictionary(fc.constantFrom('tail', 'force', 'x'), fc.stringMatching(/^[A-Za-z0-9%-]{0,6}$/)),
      )
      .map(([[method, template], other, first, second, query]) => {
        const filled = template.replace('$', first).replace('$', second);
        const search = new URLSearchParams(query).toString();
        return { method: other ?? method, path: search === '' ? filled : `${filled}?${search}` };
      });
    const fieldNames = fc.constantFrom(
      'name',
      'definition',
      'options',
      'backend',
      'route',
      'methods',
      'weights',
      'proportion',
      'input',
      'numReplicas',
      'userConfig',
    );
    const body = fc.oneof(
      fc.constant(undefined),
      fc.string({ maxLength: 40 }),
      fc.jsonValue({ maxDepth: 2 }).map((value) => JSON.stringify(value)),
      fc.dictionary(fieldNames, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }).map((value) => JSON.stringify({ ...value, __fuzz: 1 })),
    );
    const requestArb: fc.Arbitrary<FuzzRequest> = fc
      .record({
        target,
        host: fc.oneof(
          { arbitrary: fc.constant(own), weight: 3 },
          { arbitrary: fc.constantFrom(`localhost:${port}`, `[::1]:${port}`, `evil.example:${port}`, 'fuzzed', ''), weight: 2 },
        ),
        origin: fc.oneof(
          { arbitrary: fc.constant(undefined), weight: 5 },
          { arbitrary: fc.constantFrom('http://evil.example', 'null', `http://${own}`, 'not a url'), weight: 2 },
        ),
        contentType: fc.option(
          fc.constantFrom(
            'application/json',
            'application/json',
            'application/json',
            'APPLICATION/JSON; charset=utf-8',
            'text/plain',
            'application/x-www-form-urlencoded',
            'multipart/form-data; boundary=x',
            '',
          ),
          { nil: undefined },
        ),
        authorization: fc.option(fc.constantFrom('Bearer x', 'bearer', 'Basic Zm9vOmJhcg=='), { nil: undefined }),
        body,
      })
      .map(({ target: { method, path }, ...rest }) => ({ method, path, ...rest }));
    const isJson = (text: string | undefined) => {
      try {
        return text !== undefined && text !== '' && JSON.parse(text) !== undefined;
      } catch {
        return false;
      }
    };
    /** Could the control plane accept this call and act on it (start containers, delete the fixture, shut down)? */
    const couldAct = (r: FuzzRequest) => {
      const decoded = (() => {
        try {
          return decodeURIComponent(r.path.split('?')[0] ?? '');
        } catch {
          return '';
        }
      })();
      const trusted =
        [own, `localhost:${port}`, `[::1]:${port}`].includes(r.host) &&
        (r.origin === undefined || r.origin === `http://${own}`) &&
        (!['POST', 'PUT', 'PATCH'].includes(r.method) || /^application\/json/i.test(r.contentType ?? ''));
      if (!trusted) return false;
      if (r.method === 'DELETE') return decoded.includes('fuzzed');
      if (r.method === 'POST' && decoded === '/api/shutdown') return r.body === undefined || r.body === '' || isJson(r.body);
      if (['POST', 'PUT', 'PATCH'].includes(r.method))
        return !(r.body?.includes('"__fuzz"') ?? false) && isJson(r.body) && r.body?.trim().startsWith('{') === true;
      return false;
    };
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(requestArb, async (r) => {
        fc.pre(!couldAct(r));
        const headers: Record<string, string> = { host: r.host };
        if (r.origin !== undefined) headers.origin = r.origin;
        if (r.contentType !== undefined) headers['content-type'] = r.contentType;
        if (r.authorization !== undefined) headers.authorization = r.authorization;
        const before = await snapshot(client);
        const answer = await send(port, { method: r.method, path: r.path, headers, ...(r.body === undefined ? {} : { body: r.body }) });
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        expect(answer.status, `${r.method} ${r.path} ${JSON.stringify(headers)}: ${answer.text}`).toBeLessThan(500);
        if (answer.status >= 400 || r.method !== 'GET') expect(await snapshot(client)).toEqual(before);
        if (answer.status >= 400 && r.method !== 'HEAD') expect(JSON.parse(answer.text).error.code).toMatch(/^[A-Z_]+$/);
      }),
      { seed: 20261201, numRuns: 3000 },
    );
    const pastTheGuards = [...statuses].filter(([status]) => ![401, 403, 415].includes(status)).reduce((sum, [, count]) => sum + count, 0);
    expect(pastTheGuards).toBeGreaterThan(1000);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 200 }), async (bytes) => {
        const answer = await raw(port, Buffer.concat([Buffer.from(bytes), Buffer.from('\r\n\r\n')]));
        expect(answer === '' || /^HTTP\/1\.1 [1-4]\d\d /.test(answer)).toBe(true);
      }),
      { seed: 20261201, numRuns: 500 },
    );
    expect((await send(port, { method: 'GET', path: '/api/health', headers: { host: own } })).status).toBe(200);
    expect(Object.keys((await snapshot(client)).backends)).toEqual(['fuzzed']);
    expect(await (await fetch(`${client.httpUrl}/fuzzed`)).text()).toBe('fuzzed ok');
  });
});

describe('the admin API by default', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-admin-'));
  const instance = `adm-${shortId(3)}`;
  let client: Client;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    ({ client } = await startFlotilla({ instance, stateDir, admin: { host: '127.0.0.1', port } }));
  });
  afterAll(() => client.shutdown());

  it('generates a token readable only by its owner, which serve.connect on this machine finds', async () => {
    const file = join(stateDir, 'admin', `${instance}.token`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect((await fetch(`http://127.0.0.1:${port}/api/health`)).status).toBe(401);
    const remote = await serve.connect({ address: `http://127.0.0.1:${port}`, instance, stateDir });
    expect(remote.httpUrl).toBe(client.httpUrl);
    expect(await remote.listBackends()).toEqual({});
  });

  it('keeps refusing foreign Origins and Hosts when the token is presented', async () => {
    const token = readFileSync(join(stateDir, 'admin', `${instance}.token`), 'utf8').trim();
    const authorization = `Bearer ${token}`;
    const cross = await send(port, {
      method: 'POST',
      path: '/api/shutdown',
      headers: { host: `127.0.0.1:${port}`, origin: 'http://evil.example', authorization, 'content-type': 'application/json' },
    });
    expect(cross.status).toBe(403);
    const rebound = await send(port, { method: 'GET', path: '/api/backends', headers: { host: `evil.example:${port}`, authorization } });
    expect(rebound.status).toBe(403);
    expect((await send(port, { method: 'GET', path: '/api/health', headers: { host: `127.0.0.1:${port}`, authorization } })).status).toBe(
      200,
    );
  });
});
