import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer, request } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import {
  serve,
  type BackendDefinition,
  type Client,
  type CreateBackendOptions,
  type CreateEndpointOptions,
  type StartOptions,
} from '../../src/index.js';
import { LABELS } from '../../src/common/labels.js';
import { shortId } from '../../src/common/ids.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
/** The built `flotilla` command. */
export const CLI = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');

export interface Started {
  client: Client;
  instance: string;
}

const started: string[] = [];

/**
 * Settings of a Flotilla of its own for one test: instance, state dir, free ports, quiet logs.
 * Test backends reserve the default 1 CPU per replica; the CPU capacity is
 * raised so that they fit on a 2-core machine (resources.test.ts tests the real limits).
 */
export function testSettings<T extends Omit<StartOptions, 'detached'>>(overrides: T = {} as T) {
  return {
    instance: `test-${shortId(3)}`,
    stateDir: mkdtempSync(join(tmpdir(), 'flt-')),
    http: { host: '127.0.0.1', port: 0, workers: 1 },
    admin: { host: '127.0.0.1', port: 0 },
    logLevel: 'warn' as const,
    cpuCapacity: 64,
    ...overrides,
  };
}

/** Starts a Flotilla of its own (testSettings) for one test file; its containers are removed after the file. */
export async function startFlotilla(options: StartOptions = {}): Promise<Started> {
  const settings = testSettings(options);
  started.push(settings.instance);
  const client = await serve.start(settings);
  return { client, instance: settings.instance };
}

/**
 * The setup most tests start with: a backend and an endpoint of the same name in front of it (route `/<name>` unless
 * `endpoint` says otherwise). Resolves with the endpoint's URL on the front door.
 */
export async function deployEndpoint(
  client: Client,
  name: string,
  definition: BackendDefinition,
  options?: CreateBackendOptions,
  endpoint: Omit<CreateEndpointOptions, 'backend'> = {},
): Promise<string> {
  const route = endpoint.route ?? `/${name}`;
  await client.createBackend(name, definition, options);
  await client.createEndpoint(name, { ...endpoint, backend: name, route });
  return `${client.httpUrl}${route}`;
}

/** Connects to a control plane started in another process, retrying until its admin API answers (30 s). */
export async function connectWhenUp(settings: { instance: string; stateDir: string; admin: { port: number } }): Promise<Client> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await serve.connect({
        address: `http://127.0.0.1:${settings.admin.port}`,
        instance: settings.instance,
        stateDir: settings.stateDir,
      });
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** Settings of a control plane run as `flotilla start` in a process of its own: its instance, state dir and free ports. */
export async function processSettings(prefix: string) {
  return {
    instance: `${prefix}-${shortId(3)}`,
    stateDir: mkdtempSync(join(tmpdir(), 'flt-')),
    http: { host: '127.0.0.1', port: await freePort() },
    admin: { host: '127.0.0.1', port: await freePort() },
    cpuCapacity: 64,
    logLevel: 'warn' as const,
  };
}

/** `flotilla start` with these settings, in the foreground of a child process. */
export function startProcess(options: object): ChildProcess {
  return spawn(process.execPath, [CLI, 'start', '--options', JSON.stringify(options)], { stdio: 'ignore' });
}

/** A process's resident and peak memory in bytes, from /proc. */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Runs a fixture script that starts a control plane from `settings` in a process of its own; resolves with its front door's URL. */
export function spawnControlPlane(fixture: string, settings: object): Promise<{ child: ChildProcess; httpUrl: string }> {
  const child = spawn(process.execPath, [join(FIXTURES, fixture), JSON.stringify(settings)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) resolve({ child, httpUrl: (JSON.parse(line) as { httpUrl: string }).httpUrl });
    });
    child.once('exit', (code) => reject(new Error(`the front door process exited with ${code}`)));
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createNetServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Ids of the running and stopped containers of an instance, as `docker ps` reports them. */
export function containersOf(instance: string, backend?: string): string[] {
  const filters = ['--filter', `label=${LABELS.instance}=${instance}`];
  if (backend !== undefined) filters.push('--filter', `label=${LABELS.backend}=${backend}`);
  const out = execFileSync('docker', ['ps', '-a', '-q', '--no-trunc', ...filters], { encoding: 'utf8' });
  return out.split('\n').filter((line) => line !== '');
}

export function inspect(
  containerId: string,
): Record<string, unknown> & { Config: Record<string, unknown>; HostConfig: Record<string, unknown> } {
  return JSON.parse(execFileSync('docker', ['inspect', containerId], { encoding: 'utf8' }))[0];
}

afterAll(() => {
  for (const instance of started) {
    const ids = containersOf(instance);
    if (ids.length > 0) execFileSync('docker', ['rm', '-f', ...ids]);
  }
});

/** A container create request body as the Docker API receives it (only the fields tests read). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type RecordedCreate = Record<string, any>;

/**
 * A unix socket that forwards the Docker API to the real engine and records
 * every container create request, so a test can see what Flotilla asked for.
 */
export async function recordingEngine(): Promise<{ socketPath: string; creates: RecordedCreate[]; close(): Promise<void> }> {
  const socketPath = join(mkdtempSync(join(tmpdir(), 'flt-engine-')), 'docker.sock');
  const creates: RecordedCreate[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.method === 'POST' && /\/containers\/create/.test(req.url ?? '')) creates.push(JSON.parse(body.toString('utf8')));
      const upstream = request(
        { socketPath: '/var/run/docker.sock', method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return { socketPath, creates, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
