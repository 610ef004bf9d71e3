import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { backendRouting, echo, rawRequest, startFrontDoor, type FrontDoor, type Seen } from './front-door-harness.js';

let door: FrontDoor | undefined;
afterEach(async () => {
  await door?.close();
  door = undefined;
});

const healthy = async (d: FrontDoor) => (await fetch(`${d.url}/-/healthz`)).status;

function chunked(totalBytes: number, chunkBytes = 64 * 1024): Buffer[] {
  const head = Buffer.from('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
  const parts = [head];
  const chunk = Buffer.concat([Buffer.from(`${chunkBytes.toString(16)}\r\n`), Buffer.alloc(chunkBytes, 97), Buffer.from('\r\n')]);
  for (let sent = 0; sent < totalBytes; sent += chunkBytes) parts.push(chunk);
  parts.push(Buffer.from('0\r\n\r\n'));
  return parts;
}

describe('the front door under bad input', () => {
  it.each([
    ['an unparsable absolute URL', 400, 'GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a request line with spaces', 400, 'GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['binary garbage', 400, '\x00\x01\x02\xff\r\n\r\n'],
    ['an asterisk target', 400, 'GET * HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a dot-dot path', 400, 'GET /a/../-/flotilla/config HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a path starting with //', 400, 'PUT //-/flotilla/config HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}'],
    ['an absolute URL whose path starts with //', 400, 'GET http://x//-/flotilla/config HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a dot-dot path with backslashes', 400, 'GET /a\\..\\-/flotilla/config HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a path starting with a backslash', 400, 'GET /\\-/flotilla/config HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['an encoded dot-dot path', 400, 'GET /a/%2E%2e/x HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a non-http absolute URL', 400, 'GET ftp://x/a HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a bad header', 400, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n'],
    ['a bad content length', 400, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n'],
    ['oversized headers', 431, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
  ])('answers %s with %i and keeps serving', async (_, status, payload) => {
    door = await startFrontDoor();
    const answer = await rawRequest(door.port, payload);
    expect(answer.status).toBe(status);
    expect(answer.closed).toBe(true);
    expect(await healthy(door)).toBe(200);
    expect(door.seen).toEqual([]);
    expect(door.errors).toEqual([]);
  });

  it('forwards an absolute-form request as origin-form', async () => {
    door = await startFrontDoor();
    const answer = await rawRequest(
      door.port,
      'GET http://example.test/a/b?c=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n',
    );
    expect(answer.status).toBe(200);
    expect(door.seen.map((s) => s.url)).toEqual(['/a/b?c=1']);
  });

  it.each(['/-/flotilla/config', '/-/flotilla/health', '/-', '/-/anything?x=1'])(
    'never forwards the replica protocol path %s, even with a catch-all route',
    async (path) => {
      door = await startFrontDoor();
      const response = await fetch(`${door.url}${path}`, { method: 'PUT', body: '{"userConfig":1}' });
      expect(response.status).toBe(404);
      expect(await response.json()).toMatchObject({ error: { code: 'ROUTE_NOT_FOUND' } });
      expect(door.seen).toEqual([]);
    },
  );

  it('answers an 11 MiB chunked body with 413 and closes the connection, without reaching a replica', async () => {
    door = await startFrontDoor();
    const started = Date.now();
    const answer = await rawRequest(door.port, chunked(11 * 1024 * 1024), 10_000);
    expect(answer.status).toBe(413);
    expect(answer.text).toMatch(/connection: close/i);
    expect(answer.text).toContain('PAYLOAD_TOO_LARGE');
    expect(answer.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(8000);
    expect(door.seen).toEqual([]);
    expect(await healthy(door)).toBe(200);
  });

  it('answers 408 to headers that do not arrive within headersTimeoutS', async () => {
    door = await startFrontDoor({ settings: { headersTimeoutS: 1 } });
    const started = Date.now();
    const answer = await rawRequest(door.port, 'GET /slow HTTP/1.1\r\nHost: x\r\n', 5000);
    expect(answer.status).toBe(408);
    expect(answer.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(await healthy(door)).toBe(200);
  });

  it('answers 408 to a body that does not arrive within bodyTimeoutS, and frees the replica slot', async () => {
    door = await startFrontDoor({ settings: { bodyTimeoutS: 1 }, backend: { maxConcurrentQueries: 1 } });
    const answer = await rawRequest(door.port, 'POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part', 4000);
    expect(answer.status).toBe(408);
    expect(answer.text).toContain('CLIENT_TIMEOUT');
    const next = await fetch(`${door.url}/next`, { signal: AbortSignal.timeout(2000) });
    expect(next.status).toBe(200);
  });

  it('refuses bodies beyond maxBufferedBytes with 503 OVERLOADED instead of holding them', async () => {
    door = await startFrontDoor({ settings: { maxBufferedBytes: 1024 * 1024, maxBodyBytes: 1024 * 1024 } });
    const holding = rawRequest(door.port, 'POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nstarted', 1500);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refused = await fetch(`${door.url}/b`, { method: 'POST', body: Buffer.alloc(100_000) });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toMatchObject({ error: { code: 'OVERLOADED' } });
    await holding;
    const accepted = await fetch(`${door.url}/c`, { method: 'POST', body: Buffer.alloc(100_000) });
    expect(accepted.status).toBe(200);
  });
});

describe('forwarding headers', () => {
  const sent = (headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      const req = request(`${door!.url}/h`, { method: 'PUT', headers }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end('body');
    });

  it('replaces X-Forwarded-*, drops hop-by-hop and protocol headers, and adds nothing twice on a retry', async () => {
    const seen: Seen[] = [];
    const reset = (_: unknown, res: { socket: { destroy(): void } | null }) => res.socket?.destroy();
    door = await startFrontDoor({ handlers: { r1: reset as never, r2: echo('r2', seen) } });
    for (let i = 0; i < 2; i++) {
      const status = await sent({
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.test',
        forwarded: 'for=6.6.6.6',
        connection: 'keep-alive, x-secret',
        'x-secret': 'hop',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        trailer: 'x-t',
        'proxy-authorization': 'Basic eA==',
        'x-flotilla-method': 'reconfigure',
        'x-flotilla-anything': '1',
        'transfer-encoding': 'chunked',
        'x-kept': 'yes',
      });
      expect(status).toBe(200);
    }
    expect(seen.length).toBe(2);
    for (const { headers, rawHeaders } of seen) {
      expect(headers).toMatchObject({
        'x-forwarded-for': '127.0.0.1',
        'x-forwarded-proto': 'http',
        'x-kept': 'yes',
        'content-length': '4',
      });
      expect(headers['x-forwarded-host']).toMatch(/^127\.0\.0\.1:\d+$/);
      for (const name of [
        'forwarded',
        'x-secret',
        'keep-alive',
        'te',
        'trailer',
        'proxy-authorization',
        'x-flotilla-method',
        'x-flotilla-anything',
        'transfer-encoding',
      ])
        expect(headers[name], name).toBeUndefined();
      const names = rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      expect(names.filter((n) => n.startsWith('x-forwarded-')).sort()).toEqual([
        'x-forwarded-for',
        'x-forwarded-host',
        'x-forwarded-port',
        'x-forwarded-proto',
      ]);
    }
  });

  it("never passes Flotilla's own credentials to a replica: the dashboard's cookies and x-flotilla-* headers", async () => {
    door = await startFrontDoor();
    const status = await sent({
      cookie: 'theme=dark; flotilla_dashboard_8001=s3cr3t;flotilla_dashboard_9001=other; id=7',
      'x-flotilla-control-secret': 'c0ntr0l',
    });
    expect(status).toBe(200);
    await sent({ cookie: 'flotilla_dashboard_8001=s3cr3t' });
    const [first, second] = door.seen;
    expect(first?.headers.cookie).toBe('theme=dark; id=7');
    expect(second?.headers.cookie).toBeUndefined();
    expect(JSON.stringify(door.seen)).not.toMatch(/s3cr3t|other|c0ntr0l|flotilla_dashboard/);
  });

  it('keeps X-Forwarded-* from a trusted proxy and appends its address', async () => {
    door = await startFrontDoor({ settings: { trustedProxies: '127.0.0.1' } });
    await sent({ 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example' });
    expect(door.seen[0]?.headers).toMatchObject({
      'x-forwarded-for': '203.0.113.7, 127.0.0.1',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'api.example',
    });
  });
});

describe('replica failures', () => {
  it('closes the client connection at once when a replica resets mid-response, frees its slot and counts it', async () => {
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1000' });
          res.write('partial');
          setTimeout(() => res.socket?.destroy(), 100);
        },
      },
      backend: { maxConcurrentQueries: 1 },
    });
    const started = Date.now();
    const response = await fetch(`${door.url}/partial`, { signal: AbortSignal.timeout(5000) });
    expect(response.status).toBe(200);
    const error = await response.text().catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).name).not.toBe('TimeoutError');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(door.replicaFailures).toEqual(['echo']);
    expect(door.failures).toEqual(['r1']);
    await expect.poll(() => door!.dispatcher['routers'].get('echo')?.inFlight('r1')).toBe(0);
  });

  it('retries an idempotent request on another replica when one dies before answering, and answers 502 to a POST', async () => {
    const seen: Seen[] = [];
    const die = (_: unknown, res: { socket: { destroy(): void } | null }) => res.socket?.destroy();
    door = await startFrontDoor({ handlers: { r1: die as never, r2: die as never, r3: echo('r3', seen) } });
    door.dispatcher['routers'].get('echo')!.eject('r3');
    const get = await fetch(`${door.url}/x`);
    expect(get.status).toBe(200);
    expect(seen.map((s) => s.replica)).toEqual(['r3']);
    door.route({
      endpoints: [{ name: 'echo', route: '/', methods: ['GET', 'POST'], traffic: { echo: 1 }, shadows: {} }],
      backends: [
        {
          name: 'echo',
          maxConcurrentQueries: 8,
          maxQueuedRequests: 100,
          noReplicaWaitMs: 0,
          requestTimeoutS: null,
          replicas: [{ id: 'r1', target: { socketPath: door.socketOf('r1') } }],
        },
      ],
    });
    const post = await fetch(`${door.url}/x`, { method: 'POST', body: 'once' });
    expect(post.status).toBe(502);
    expect(await post.json()).toMatchObject({ error: { code: 'REPLICA_UNREACHABLE' } });
  });

  it('sends a POST again, to another replica, when the connection to the first failed before it was sent (EAGAIN)', async () => {
    const seen: Seen[] = [];
    door = await startFrontDoor({ handlers: { r1: 'full', r2: echo('r2', seen) } });
    door.dispatcher['routers'].get('echo')!.eject('r2');
    const post = await fetch(`${door.url}/x`, { method: 'POST', body: 'once' });
    expect(post.status).toBe(200);
    expect(seen.map((s) => [s.replica, s.method, s.bodyLength])).toEqual([['r2', 'POST', 4]]);
    expect(door.failures).toEqual(['r1']);
  });

  it("never names a replica's socket path in an answer to the caller", async () => {
    door = await startFrontDoor({ handlers: { r1: 'full' } });
    const post = await fetch(`${door.url}/x`, { method: 'POST', body: 'once' });
    expect(post.status).toBe(502);
    const text = await post.text();
    expect(JSON.parse(text)).toMatchObject({ error: { code: 'REPLICA_UNREACHABLE', message: expect.stringMatching(/connect EAGAIN/) } });
    expect(text).not.toContain(door.socketOf('r1'));
    expect(text).not.toMatch(/\/tmp|\.sock/);
  });

  it('never sends a request whose client left while it queued, and keeps the slot for the next one', async () => {
    const urls: string[] = [];
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    door = await startFrontDoor({
      backend: { maxConcurrentQueries: 1 },
      handlers: {
        r1: (req, res) => {
          urls.push(req.url ?? '');
          void (req.url === '/first' ? held : Promise.resolve()).then(() => res.end('ok'));
        },
      },
    });
    const first = fetch(`${door.url}/first`);
    await expect.poll(() => urls).toEqual(['/first']);
    const leaving = new AbortController();
    const queued = fetch(`${door.url}/queued`, { signal: leaving.signal }).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50));
    leaving.abort();
    await queued;
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    expect((await first).status).toBe(200);
    expect((await fetch(`${door.url}/third`)).status).toBe(200);
    expect(urls).toEqual(['/first', '/third']);
  });

  it('ejects a replica that refuses connections: later requests do not try it again', async () => {
    const seen: Seen[] = [];
    door = await startFrontDoor({ handlers: { r1: 'closed', r2: echo('r2', seen) } });
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await fetch(`${door.url}/n${i}`)).status);
    expect(statuses).toEqual(Array(10).fill(200));
    expect(door.failures).toEqual(['r1']);
    expect(seen.length).toBe(10);
  });

  it('fails fast with 502 when the only replica refuses connections, and still answers afterwards', async () => {
    door = await startFrontDoor({ handlers: { r1: 'closed' } });
    const started = Date.now();
    const response = await fetch(`${door.url}/x`);
    expect(response.status).toBe(502);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(door.failures).toEqual(['r1', 'r1', 'r1']);
    expect(await healthy(door)).toBe(200);
  });
});

describe('shadow counts', () => {
  it('are kept when a shadow is set to 0, continue when it is set again, and go with the endpoint', async () => {
    door = await startFrontDoor({ handlers: { r1: echo('r1', []), s1: echo('s1', []) } });
    const routing = (shadows: Record<string, number>, endpoints = true) => ({
      endpoints: endpoints ? [{ name: 'echo', route: '/', methods: ['GET'], traffic: { echo: 1 }, shadows }] : [],
      backends: [
        backendRouting('echo', [{ id: 'r1', socketPath: door!.socketOf('r1') }]),
        backendRouting('shadow', [{ id: 's1', socketPath: door!.socketOf('s1') }]),
      ],
    });
    const compared = () => door!.dispatcher.shadows.stats('echo').shadow?.compared;
    door.route(routing({ shadow: 1 }));
    for (let i = 0; i < 3; i++) await (await fetch(`${door.url}/x`)).text();
    await expect.poll(compared).toBe(3);
    door.route(routing({}));
    await (await fetch(`${door.url}/x`)).text();
    expect(door.dispatcher.shadows.stats('echo').shadow).toMatchObject({ sent: 3, compared: 3 });
    door.route(routing({ shadow: 1 }));
    await (await fetch(`${door.url}/x`)).text();
    await expect.poll(compared).toBe(4);
    door.route(routing({}, false));
    expect(door.dispatcher.shadows.stats('echo')).toEqual({});
  });
});

describe('shadow copies of large bodies', () => {
  it('count in maxBufferedBytes: a slow shadow holds at most half of it, and copies beyond are dropped', async () => {
    const MIB = 1024 * 1024;
    const never = () => undefined;
    door = await startFrontDoor({ settings: { maxBufferedBytes: 8 * MIB }, handlers: { r1: echo('r1', []), s1: never } });
    door.route({
      endpoints: [{ name: 'echo', route: '/', methods: ['POST'], traffic: { echo: 1 }, shadows: { slow: 1 } }],
      backends: [
        backendRouting('echo', [{ id: 'r1', socketPath: door.socketOf('r1') }]),
        backendRouting('slow', [{ id: 's1', socketPath: door.socketOf('s1') }], { maxConcurrentQueries: 100 }),
      ],
    });
    const body = Buffer.alloc(MIB, 'b');
    for (let i = 0; i < 20; i++) {
      const answer = await fetch(`${door.url}/x`, { method: 'POST', body });
      expect(answer.status).toBe(200);
      await answer.text();
    }
    // Half the budget is 4 MiB: each request's own 1 MiB, and three held copies.
    expect(door.dispatcher.shadows.stats('echo').slow).toMatchObject({ sent: 3, dropped: 17, compared: 0 });
  });
});

describe('clients that stop reading', () => {
  /** Opens GET `path` on a raw connection and stops reading once the answer has begun; resolves with the socket. */
  const stopReading = (path: string) =>
    new Promise<Socket>((resolve) => {
      const socket = connect(door!.port, '127.0.0.1', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
      socket.on('error', () => undefined);
      socket.once('data', () => {
        socket.pause();
        resolve(socket);
      });
    });

  it('have their connection cut after clientStallTimeoutS, so that their replica slots serve others', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    door = await startFrontDoor({
      settings: { clientStallTimeoutS: 1 },
      backend: { maxConcurrentQueries: 2, maxQueuedRequests: 10, requestTimeoutS: 8 },
      handlers: {
        r1: (req, res) => {
          if (req.url !== '/stream') return void res.end('other');
          const pour = (): void => {
            if (res.destroyed) return;
            if (res.write(chunk)) setImmediate(pour);
            else res.once('drain', pour);
          };
          pour();
        },
      },
    });
    const stalled = [await stopReading('/stream'), await stopReading('/stream')];
    const other = await fetch(`${door.url}/other`);
    expect(other.status).toBe(200);
    expect(await other.text()).toBe('other');
    // Read on: what the front door had sent before it cut the connection, then its end.
    await Promise.all(stalled.map((socket) => new Promise((resolve) => socket.once('close', resolve).resume())));
  });
});
