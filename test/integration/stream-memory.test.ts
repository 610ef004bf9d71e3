import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { get } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { containersOf, memoryOf, spawnControlPlane, testSettings } from './harness.js';

const MIB = 1024 * 1024;
const STREAM = 200 * MIB;
/** The documented bound (docs/streaming.md): a slow reader of any stream costs the replica and the front door each under 64 MiB above idle. */
const BOUND = 64 * MIB;

/** The container's memory cgroup files (cgroup v1 with the cgroupfs driver, or v2), as docker stats reads them. */
function cgroupOf(id: string): { current(): number; peak(): number } {
  const v1 = `/sys/fs/cgroup/memory/docker/${id}`;
  const v2 = [`/sys/fs/cgroup/system.slice/docker-${id}.scope`, `/sys/fs/cgroup/docker/${id}`].find((dir) => existsSync(dir));
  const read = (file: string) => Number(readFileSync(file, 'utf8').trim());
  if (existsSync(v1)) return { current: () => read(`${v1}/memory.usage_in_bytes`), peak: () => read(`${v1}/memory.max_usage_in_bytes`) };
  if (v2 !== undefined) return { current: () => read(`${v2}/memory.current`), peak: () => read(`${v2}/memory.peak`) };
  throw new Error(`no memory cgroup found for container ${id}`);
}

/** Reads the whole stream at about 40 MiB/s (4 MiB, then a 100 ms pause), far slower than the replica makes it. */
function readSlowly(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let received = 0;
      let sincePause = 0;
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        sincePause += chunk.length;
        if (sincePause >= 4 * MIB) {
          sincePause = 0;
          res.pause();
          setTimeout(() => res.resume(), 100);
        }
      });
      res.on('end', () => resolve(received));
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('a slow reader of a 200 MiB stream', () => {
  const instance = `test-${shortId(3)}`;
  let child: ChildProcess;
  let httpUrl: string;

  beforeAll(async () => {
    const settings = testSettings({ instance, logLevel: 'error' });
    ({ child, httpUrl } = await spawnControlPlane('stream-memory.mjs', settings));
  }, 180_000);
  afterAll(async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  });

  it(`keeps the replica's and the front door's memory within ${BOUND / MIB} MiB above idle`, async () => {
    const [container] = containersOf(instance, 'big');
    const replica = cgroupOf(container!);
    const replicaIdle = replica.current();
    const doorIdle = memoryOf(child.pid!).rss;
    expect(await readSlowly(`${httpUrl}/big`)).toBe(STREAM);
    const replicaPeak = replica.peak();
    const doorPeak = memoryOf(child.pid!).peak;
    console.log(
      `replica: idle ${(replicaIdle / MIB).toFixed(0)} MiB, peak ${(replicaPeak / MIB).toFixed(0)} MiB; ` +
        `front door: idle RSS ${(doorIdle / MIB).toFixed(0)} MiB, peak ${(doorPeak / MIB).toFixed(0)} MiB`,
    );
    expect(replicaPeak - replicaIdle).toBeLessThan(BOUND);
    expect(doorPeak - doorIdle).toBeLessThan(BOUND);
  }, 120_000);
});
