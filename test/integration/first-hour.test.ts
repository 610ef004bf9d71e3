import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { containersOf } from './harness.js';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function settings(instance = `fh-${shortId(3)}`) {
  return {
    instance,
    stateDir: mkdtempSync(join(tmpdir(), 'flt-')),
    http: { host: '127.0.0.1', port: await freePort() },
    admin: { host: '127.0.0.1', port: await freePort() },
    cpuCapacity: 64,
  };
}

type Settings = Awaited<ReturnType<typeof settings>>;

/** The environment of a shell that never ran the project's scripts. */
function userEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.FLOTILLA_BASE_IMAGE;
  delete env.FLOTILLA_PYTHON_BASE_IMAGE;
  return env;
}

const processes: ChildProcess[] = [];
const instances: string[] = [];

function startProcess(options: Settings): { child: ChildProcess; output: () => string } {
  instances.push(options.instance);
  const child = spawn(process.execPath, [CLI, 'start', '--options', JSON.stringify(options)], {
    env: userEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  processes.push(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output };
}

async function connectWhenUp(options: Settings): Promise<Client> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await serve.connect({ address: `http://127.0.0.1:${options.admin.port}` });
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

function hasImage(image: string): boolean {
  try {
    execFileSync('docker', ['image', 'inspect', image], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

afterEach(() => {
  for (const child of processes.splice(0)) child.kill('SIGKILL');
  for (const instance of instances.splice(0)) {
    const ids = containersOf(instance);
    if (ids.length > 0) execFileSync('docker', ['rm', '-f', ...ids]);
  }
});

describe('the base image', () => {
  it('picks itself when FLOTILLA_BASE_IMAGE is not set, says which, and serves', async () => {
    const expected = hasImage('node:20-bookworm-slim') ? 'node:20-bookworm-slim' : 'flotilla-local/node:20-bookworm-slim';
    const options = await settings();
    const { output } = startProcess(options);
    const client = await connectWhenUp(options);
    await client.createBackend('hello', () => 'hello from the picked base');
    await client.createEndpoint('hello', { backend: 'hello', route: '/hello' });
    const response = await fetch(`${client.httpUrl}/hello`);
    expect(await response.text()).toBe('hello from the picked base');
    expect(output()).toContain(`node base image ${expected}`);
    await client.shutdown();
  });
});
