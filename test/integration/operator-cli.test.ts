import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { runningInstances } from '../../src/cli/current-instance.js';
import { containersOf } from './harness.js';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');
const run = promisify(execFile);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A user's shell on this machine: a home of its own, no FLOTILLA_* variable naming an instance, address or state dir. */
function shellEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  for (const name of ['FLOTILLA_INSTANCE', 'FLOTILLA_STATE_DIR', 'FLOTILLA_ADMIN_HOST', 'FLOTILLA_ADMIN_PORT', 'FLOTILLA_ADMIN_TOKEN'])
    delete env[name];
  return env;
}

/** Runs the flotilla command in that shell; resolves with its exit code and output whether it succeeds or not. */
async function flotilla(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

const homes: string[] = [];
const instances: string[] = [];

afterEach(() => {
  for (const home of homes.splice(0))
    for (const record of runningInstances(join(home, '.flotilla'))) {
      try {
        process.kill(record.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  for (const instance of instances.splice(0)) {
    const ids = containersOf(instance);
    if (ids.length > 0) execFileSync('docker', ['rm', '-f', ...ids]);
    execFileSync('docker', ['volume', 'rm', '-f', `flotilla-instance-${instance}`], { stdio: 'ignore' });
  }
});

async function startDetached(env: NodeJS.ProcessEnv, instance: string) {
  instances.push(instance);
  const admin = await freePort();
  const http = await freePort();
  const options = { instance, admin: { port: admin }, http: { port: http }, cpuCapacity: 64, logLevel: 'warn' };
  const started = await flotilla(env, 'start', '--detached', '--options', JSON.stringify(options));
  return { ...started, admin, http };
}

describe('finding the instance', () => {
  it('a plain command reaches the last started instance, or the only one running; --instance picks another', async () => {
    const home = mkdtempSync(join(tmpdir(), 'flt-home-'));
    homes.push(home);
    const env = shellEnv(home);
    const none = await flotilla(env, 'status');
    expect(none).toMatchObject({ code: 1, stderr: expect.stringMatching(/ADMIN_UNREACHABLE.*\n.*no running control plane is recorded/) });

    const first = `nc2-${shortId(3)}`;
    const one = await startDetached(env, first);
    expect(one.code).toBe(0);
    expect(one.stdout).toContain(`(instance ${first}); HTTP on http://127.0.0.1:${one.http}, admin API on http://127.0.0.1:${one.admin}`);
    expect(one.stdout).toMatch(/later flotilla commands on this machine reach it without flags/);
    expect(await flotilla(env, 'status')).toMatchObject({ code: 0, stdout: expect.stringContaining(`HTTP: http://127.0.0.1:${one.http}`) });

    const second = `nc3-${shortId(3)}`;
    const two = await startDetached(env, second);
    expect(two.code).toBe(0);
    expect(await flotilla(env, 'status')).toMatchObject({ stdout: expect.stringContaining(`HTTP: http://127.0.0.1:${two.http}`) });
    expect(await flotilla(env, 'status', '--instance', first)).toMatchObject({
      stdout: expect.stringContaining(`HTTP: http://127.0.0.1:${one.http}`),
    });

    expect(await flotilla(env, 'shutdown')).toMatchObject({ code: 0 });
    await expect
      .poll(async () => (await flotilla(env, 'status')).stdout, { timeout: 30_000, interval: 500 })
      .toContain(`HTTP: http://127.0.0.1:${one.http}`);
    expect(await flotilla(env, 'shutdown')).toMatchObject({ code: 0 });
  });
});
