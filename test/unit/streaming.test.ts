import { get, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ServeHandle } from '../../src/handle/serve-handle.js';
import { PROTOCOL } from '../../src/replica/protocol.js';
import { backendRouting, startFrontDoor, type FrontDoor } from './front-door-harness.js';

let door: FrontDoor | undefined;

afterEach(async () => {
  await door?.close();
  door = undefined;
});

/** Reads a response body chunk by chunk, noting when each arrived; rejects if the body was cut. */
async function chunksOf(response: Response): Promise<Array<{ text: string; at: number }>> {
  const chunks: Array<{ text: string; at: number }> = [];
  const decoder = new TextDecoder();
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    chunks.push({ text: decoder.decode(chunk), at: Date.now() });
  }
  return chunks;
}

function later(ms: number, action: () => void): void {
  setTimeout(action, ms);
}

/** A replica that streams the same three chunks, `gapMs` apart. */
function threeChunks(gapMs: number) {
  return (_req: unknown, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('one ');
    later(gapMs, () => res.write('two '));
    later(2 * gapMs, () => res.end('three'));
  };
}

describe('streamed answers through the front door', () => {
  it('relays each chunk as the replica writes it, and marks event streams unbuffered', async () => {
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: first\n\n');
          later(1500, () => res.end('data: second\n\n'));
        },
      },
    });
    const response = await fetch(`${door.url}/events`);
    expect(response.headers.get('x-accel-buffering')).toBe('no');
    const chunks = await chunksOf(response);
    expect(chunks.map((c) => c.text).join('')).toBe('data: first\n\ndata: second\n\n');
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    expect(chunks.at(-1)!.at - chunks[0]!.at).toBeGreaterThanOrEqual(1000);
  });

  /** A replica that answers `count` numbered chunks, one every 400 ms. */
  const counting = (count: number) => (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    let sent = 0;
    const tick = setInterval(() => {
      res.write(`${sent++};`);
      if (sent === count) {
        clearInterval(tick);
        res.end();
      }
    }, 400);
  };

  it.each([
    [
      'bounds only the time to the first byte by requestTimeoutS: a stream longer than it completes',
      5,
      { backend: { requestTimeoutS: 1 } },
    ],
    [
      'keeps a stream whose chunks come more often than streamIdleTimeoutS, however long it runs',
      8,
      { settings: { streamIdleTimeoutS: 1 } },
    ],
  ])('%s', async (_what, count, options) => {
    door = await startFrontDoor({ handlers: { r1: counting(count) }, ...options });
    const response = await fetch(`${door.url}/long`);
    expect(await response.text()).toBe(Array.from({ length: count }, (_, i) => `${i};`).join(''));
    await expect.poll(() => door!.statuses).toEqual([200]);
  });

  it('cuts a stream that goes quiet for streamIdleTimeoutS, counts it as 504, and does not blame the replica', async () => {
    let upstream: ServerResponse | undefined;
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          upstream = res;
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('a');
        },
      },
      settings: { streamIdleTimeoutS: 1 },
      backend: { maxConcurrentQueries: 1 },
    });
    const started = Date.now();
    const response = await fetch(`${door.url}/quiet`);
    await expect(response.text()).rejects.toThrow();
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    await expect.poll(() => door!.statuses).toEqual([504]);
    await expect.poll(() => upstream?.destroyed).toBe(true);
    expect(door.failures).toEqual([]);
    expect(door.dispatcher['routers'].get('echo')?.inFlight('r1')).toBe(0);
  });

  it('cuts the client connection when the handler fails midway (error trailer), counts a 500, keeps the replica', async () => {
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('partial');
          later(100, () => {
            res.addTrailers({ [PROTOCOL.errorHeader]: encodeURIComponent('Error: model crashed') });
            res.end();
          });
        },
      },
    });
    const response = await fetch(`${door.url}/fails`);
    expect(response.status).toBe(200);
    await expect(response.text()).rejects.toThrow();
    await expect.poll(() => door!.statuses).toEqual([500]);
    expect(door.failures).toEqual([]);
    expect((await fetch(`${door.url}/again`)).status).toBe(200);
  });

  it("compares a shadow's whole stream with the primary's, without slowing the primary", async () => {
    door = await startFrontDoor({ handlers: { r1: threeChunks(100), s1: threeChunks(1000) } });
    door.route({
      endpoints: [{ name: 'echo', route: '/', methods: ['GET'], traffic: { echo: 1 }, shadows: { shadow: 1 } }],
      backends: [
        backendRouting('echo', [{ id: 'r1', socketPath: door.socketOf('r1') }]),
        backendRouting('shadow', [{ id: 's1', socketPath: door.socketOf('s1') }]),
      ],
    });
    const started = Date.now();
    expect(await (await fetch(`${door.url}/tokens`)).text()).toBe('one two three');
    expect(Date.now() - started).toBeLessThan(1500);
    expect(door.dispatcher.shadows.stats('echo').shadow).toMatchObject({ sent: 1, compared: 0 });
    await expect.poll(() => door!.dispatcher.shadows.stats('echo').shadow, { timeout: 5000 }).toMatchObject({ compared: 1, matches: 1 });
  });

  it('does not count a slow client against streamIdleTimeoutS', async () => {
    const size = 8 * 1024 * 1024;
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          res.end(Buffer.alloc(size, 1));
        },
      },
      settings: { streamIdleTimeoutS: 1 },
    });
    const received = await new Promise<number>((resolve, reject) => {
      get(`${door!.url}/slow`, (res) => {
        res.pause();
        let bytes = 0;
        later(2500, () => res.resume());
        res.on('data', (chunk: Buffer) => (bytes += chunk.length));
        res.on('end', () => resolve(bytes));
        res.on('error', reject);
      }).on('error', reject);
    });
    expect(received).toBe(size);
    await expect.poll(() => door!.statuses).toEqual([200]);
  });
});

describe('handle.stream', () => {
  it('holds the replica slot while the stream is read and frees it when the consumer leaves early', async () => {
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          const tick = setInterval(() => res.write('tick '), 50);
          res.once('close', () => clearInterval(tick));
        },
      },
      backend: { maxConcurrentQueries: 1 },
    });
    const inFlight = () => door!.dispatcher['routers'].get('echo')?.inFlight('r1');
    let pieces = 0;
    for await (const piece of new ServeHandle(door.dispatcher, 'echo').stream()) {
      expect(piece).toMatch(/tick/);
      expect(inFlight()).toBe(1);
      if (++pieces === 3) break;
    }
    await expect.poll(inFlight).toBe(0);
  });

  it("rejects with the handler's error when the stream fails midway, after the chunks before it", async () => {
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' });
          res.write('{"n":1}\n');
          later(50, () => {
            res.addTrailers({ [PROTOCOL.errorHeader]: encodeURIComponent('ValueError: out of tokens') });
            res.end();
          });
        },
      },
    });
    const values: unknown[] = [];
    const failure = await (async () => {
      for await (const value of new ServeHandle(door!.dispatcher, 'echo').stream()) values.push(value);
    })().catch((error: unknown) => error);
    expect(values).toEqual([{ n: 1 }]);
    expect(failure).toMatchObject({ code: 'HANDLER_ERROR', message: 'ValueError: out of tokens' });
    expect(door.failures).toEqual([]);
  });

  it('rejects with REQUEST_TIMEOUT when the stream goes quiet for streamIdleTimeoutS, and frees the slot', async () => {
    door = await startFrontDoor({
      handlers: {
        r1: (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('only ');
        },
      },
      settings: { streamIdleTimeoutS: 1 },
    });
    const pieces: unknown[] = [];
    const failure = await (async () => {
      for await (const piece of new ServeHandle(door!.dispatcher, 'echo').stream()) pieces.push(piece);
    })().catch((error: unknown) => error);
    expect(pieces).toEqual(['only ']);
    expect(failure).toMatchObject({ code: 'REQUEST_TIMEOUT', message: expect.stringMatching(/streamIdleTimeoutS/) });
    await expect.poll(() => door!.dispatcher['routers'].get('echo')?.inFlight('r1')).toBe(0);
  });
});
