import { afterEach, describe, expect, it } from 'vitest';
import { isFlotillaError } from '../../src/common/errors.js';
import { ServeHandle } from '../../src/handle/serve-handle.js';
import { sendWithRetries } from '../../src/dataplane/pipeline.js';
import { echo, startFrontDoor, type FrontDoor, type Seen } from './front-door-harness.js';

let door: FrontDoor | undefined;
afterEach(async () => {
  await door?.close();
  door = undefined;
});

describe('ServeHandle', () => {
  it.each(['call\r\nx-evil: 1', 'a b', '1abc', '', 'm\u0000', 'x'.repeat(200)])(
    'refuses the method name %j with INVALID_ARGUMENT before any replica sees it',
    async (methodName) => {
      door = await startFrontDoor();
      const handle = new ServeHandle(door.dispatcher, 'echo');
      expect(() => handle.options({ methodName })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
      expect(() => new ServeHandle(door!.dispatcher, 'echo', { methodName })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
      expect(await handle.options({ methodName: 'stats' }).remote('after')).toMatchObject({ headers: { 'x-flotilla-method': 'stats' } });
      expect(door.seen.length).toBe(1);
      expect(door.failures).toEqual([]);
    },
  );

  it('ends a call to a backend without requestTimeoutS after its default timeout, and frees the replica slot it held', async () => {
    const held: { destroy(): void }[] = [];
    const hang = (req: { socket: { destroy(): void } }) => void held.push(req.socket);
    door = await startFrontDoor({ handlers: { r1: hang as never } });
    const error = await new ServeHandle(door.dispatcher, 'echo', {}, 50).remote('x').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'REQUEST_TIMEOUT' });
    expect(door.dispatcher['routers'].get('echo')!.inFlight('r1')).toBe(0);
    for (const socket of held) socket.destroy();
  });

  it('retries on another replica through the shared pipeline and never counts a bad call against a replica', async () => {
    const seen: Seen[] = [];
    const die = (_: unknown, res: { socket: { destroy(): void } | null }) => res.socket?.destroy();
    door = await startFrontDoor({ handlers: { r1: die as never, r2: echo('r2', seen) } });
    door.dispatcher['routers'].get('echo')!.eject('r2');
    const answer = await new ServeHandle(door.dispatcher, 'echo').remote();
    expect(answer).toMatchObject({ replica: 'r2' });
    expect(door.failures).toEqual(['r1']);

    const call = { endpoint: 'echo', backend: 'echo', method: 'GET', signal: new AbortController().signal };
    const bad = Object.assign(new TypeError('Invalid character in header content'), { code: 'ERR_INVALID_CHAR' });
    const error = await sendWithRetries(door.dispatcher, call, () => Promise.reject(bad)).catch((e: unknown) => e);
    expect(error).toBe(bad);
    expect(isFlotillaError(error)).toBe(false);
    expect(door.failures).toEqual(['r1']);
    expect(door.dispatcher['routers'].get('echo')!.inFlight('r2')).toBe(0);
  });
});
