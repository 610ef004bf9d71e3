import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { containersOf, FIXTURES } from './harness.js';

const MIB = 1024 * 1024;
const MAX_BUFFERED = 32 * MIB;
const BODY = 8 * MIB;
const UPLOADS = 48;

/** The documented bound (docs/configuration.md): the front door's peak RSS stays within 2 × maxBufferedBytes above idle, plus slack. */
const BOUND = 2 * MAX_BUFFERED + 48 * MIB;

function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

describe('many concurrent large bodies against the front door', () => {
  const instance = `test-${shortId(3)}`;
  let child: ChildProcess;
  let httpUrl: string;

  beforeAll(async () => {
    const settings = {
      instance,
      stateDir: mkdtempSync(join(tmpdir(), 'flt-')),
      http: { host: '127.0.0.1', port: 0, maxBodyBytes: BODY, maxBufferedBytes: MAX_BUFFERED },
      admin: { host: '127.0.0.1', port: 0 },
      logLevel: 'error',
      cpuCapacity: 64,
    };
    child = spawn(process.execPath, [join(FIXTURES, 'front-door-memory.mjs'), JSON.stringify(settings)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    httpUrl = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line !== undefined) resolve((JSON.parse(line) as { httpUrl: string }).httpUrl);
      });
      child.once('exit', (code) => reject(new Error(`the front door process exited with ${code}`)));
    });
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
});
