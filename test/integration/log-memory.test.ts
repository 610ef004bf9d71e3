import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { freePort, memoryOf, spawnControlPlane, testSettings } from './harness.js';

const MIB = 1024 * 1024;
/** What a follower that never reads may cost the control plane above idle, however long the replica logs. */
const BOUND = 64 * MIB;

describe('a log follower that never reads, while a replica logs about 10 MB/s', () => {
  const instance = `test-${shortId(3)}`;
  let child: ChildProcess;
  let admin: number;

  beforeAll(async () => {
    admin = await freePort();
    const settings = testSettings({ instance, logLevel: 'error', admin: { host: '127.0.0.1', port: admin, auth: 'none' } });
    ({ child } = await spawnControlPlane('log-flood.mjs', settings));
  }, 180_000);
  afterAll(async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  });

  it(`keeps the control plane within ${BOUND / MIB} MiB above idle for 20 s, then serves it where it paused`, async () => {
    const idle = memoryOf(child.pid!).rss;
    const socket = connect(admin, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(`GET /api/backends/flood/logs?follow=true&tail=0 HTTP/1.1\r\nhost: 127.0.0.1:${admin}\r\n\r\n`);
    socket.pause();
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    const peak = memoryOf(child.pid!).peak;
    console.log(`control plane: idle RSS ${(idle / MIB).toFixed(0)} MiB, peak ${(peak / MIB).toFixed(0)} MiB`);
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.resume();
    await expect.poll(() => received.length, { timeout: 20_000 }).toBeGreaterThan(4 * MIB);
    socket.destroy();
    expect(received).toMatch(/^HTTP\/1.1 200/);
    expect(received).toMatch(/Z \[[0-9a-f]{8}\] x{1000}\r?\n/);
    expect(peak - idle).toBeLessThan(BOUND);
  }, 120_000);
});
