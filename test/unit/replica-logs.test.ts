import { PassThrough, type Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LOG_LIMITS, replicaLogs } from '../../src/admin/replica-logs.js';
import type { ContainerRuntime } from '../../src/runtime/container-runtime.js';

const STAMP = '2026-12-01T22:13:00.000000000Z';

/** A runtime whose history is `history` and whose followed log writes 64 KiB lines as fast as it can, never waiting. */
function floodingRuntime(history: string): { runtime: ContainerRuntime; followed: PassThrough[] } {
  const followed: PassThrough[] = [];
  const runtime = {
    streamLogs: async (_id: string, options: { follow: boolean }): Promise<Readable> => {
      const stream = new PassThrough();
      if (!options.follow) {
        stream.end(history);
        return stream;
      }
      followed.push(stream);
      const line = `${STAMP.replace('2026', '2027')} ${'y'.repeat(64 * 1024)}\n`;
      const flood = () => {
        if (stream.destroyed) return;
        stream.write(line);
        setImmediate(flood);
      };
      flood();
      return stream;
    },
  } as unknown as ContainerRuntime;
  return { runtime, followed };
}

async function readAll(stream: Readable): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString('utf8');
  return text;
}

describe('replica logs', () => {
  it(`keeps the newest ${LOG_LIMITS.historyBytes} bytes of a replica's history and says how many lines it left out`, async () => {
    const line = `${STAMP} ${'h'.repeat(999)}\n`;
    const lines = Math.ceil((3 * LOG_LIMITS.historyBytes) / line.length);
    const { runtime } = floodingRuntime(line.repeat(lines - 1) + `${STAMP} the last line\n`);
    const text = await readAll(await replicaLogs(runtime, [{ id: 'r1', containerId: 'c1' }], { follow: false, tail: 10_000 }));
    expect(text.length).toBeLessThan(LOG_LIMITS.historyBytes * 1.1);
    expect(text).toMatch(/^(\S+ )?\[r1\] \(\d+ earlier lines left out: over 2097152 bytes\)\n/);
    expect(text.endsWith('[r1] the last line\n')).toBe(true);
  });

  it('cuts a follower that never reads once it falls more than followerBytes behind a runtime that does not wait', async () => {
    const { runtime, followed } = floodingRuntime('');
    const out = (await replicaLogs(runtime, [{ id: 'r1', containerId: 'c1' }], { follow: true, tail: 0 })) as PassThrough;
    await expect.poll(() => out.writableEnded, { timeout: 5000 }).toBe(true);
    expect(followed.every((stream) => stream.destroyed)).toBe(true);
    const backlog = out.readableLength + out.writableLength;
    expect(backlog).toBeLessThan(LOG_LIMITS.followerBytes + 256 * 1024);
    expect(await readAll(out)).toMatch(/\(follow cut: the reader fell more than 1048576 bytes behind\)\n$/);
  });
});
