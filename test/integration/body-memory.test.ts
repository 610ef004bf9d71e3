import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { containersOf, memoryOf, spawnControlPlane, testSettings } from './harness.js';

const MIB = 1024 * 1024;
const MAX_BUFFERED = 32 * MIB;
const BODY = 8 * MIB;
const UPLOADS = 48;

/** The documented bound (docs/configuration.md): the front door's peak RSS stays within 2 × maxBufferedBytes above idle, plus slack. */
const BOUND = 2 * MAX_BUFFERED + 48 * MIB;

describe('many concurrent large bodies against the front door', () => {
  const instance = `test-${shortId(3)}`;
  let child: ChildProcess;
  let httpUrl: string;

  beforeAll(async () => {
    const settings = testSettings({
      instance,
      http: { host: '127.0.0.1', port: 0, maxBodyBytes: BODY, maxBufferedBytes: MAX_BUFFERED },
      logLevel: 'error',
    });
    ({ child, httpUrl } = await spawnControlPlane('front-door-memory.mjs', settings));
  });
  afterAll(async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    expect(containersOf(instance)).toEqual([]);
  });

  it(`keeps its RSS within ${BOUND / MIB} MiB above idle (maxBufferedBytes ${MAX_BUFFERED / MIB} MiB) under ${UPLOADS} uploads of ${BODY / MIB} MiB`, async () => {
    const body = Buffer.alloc(BODY, 7);
    expect(await (await fetch(`${httpUrl}/sink`, { method: 'POST', body })).text()).toBe(String(BODY));
    const idle = memoryOf(child.pid!).rss;
    const statuses = await Promise.all(
      Array.from({ length: UPLOADS }, async () => {
        const response = await fetch(`${httpUrl}/sink`, { method: 'POST', body }).catch(() => undefined);
        if (response === undefined) return 'reset';
        const text = await response.text();
        if (response.status === 503) expect(JSON.parse(text)).toMatchObject({ error: { code: 'OVERLOADED' } });
        if (response.status === 200) expect(text).toBe(String(BODY));
        return response.status;
      }),
    );
    const { peak } = memoryOf(child.pid!);
    console.log(`front door: idle RSS ${(idle / MIB).toFixed(0)} MiB, peak ${(peak / MIB).toFixed(0)} MiB; answers`, statuses.join(','));
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(4);
    expect(peak - idle).toBeLessThan(BOUND);
    expect(await (await fetch(`${httpUrl}/sink`, { method: 'POST', body: 'small' })).text()).toBe('5');
  });

  it(`keeps shadow copies of ${UPLOADS} uploads of ${BODY / MIB} MiB to a slow shadow within the same bound`, async () => {
    const body = Buffer.alloc(BODY, 7);
    const idle = memoryOf(child.pid!).rss;
    for (let i = 0; i < UPLOADS; i++) {
      const response = await fetch(`${httpUrl}/mirrored`, { method: 'POST', body });
      expect(response.status).toBe(200);
      expect(await response.text()).toBe(String(BODY));
    }
    const { rss } = memoryOf(child.pid!);
    console.log(
      `front door with a slow shadow: idle RSS ${(idle / MIB).toFixed(0)} MiB, after ${UPLOADS} uploads ${(rss / MIB).toFixed(0)} MiB`,
    );
    expect(rss - idle).toBeLessThan(BOUND);
  });
});
