import { execFileSync } from 'node:child_process';
import { createServer, request } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { serve, type Client, type StartOptions } from '../../src/index.js';
import { LABELS } from '../../src/common/labels.js';
import { shortId } from '../../src/common/ids.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

export interface Started {
  client: Client;
  instance: string;
}

const started: string[] = [];

/**
 * Starts a Flotilla of its own (instance, state dir, free port) for one test file.
 * Test backends reserve the default 1 CPU per replica; the CPU capacity is
 * raised so that they fit on a 2-core machine (resources.test.ts tests the real limits).
 */
export async function startFlotilla(options: StartOptions = {}): Promise<Started> {
  const instance = `test-${shortId(3)}`;
  started.push(instance);
  const client = await serve.start({
    instance,
    stateDir: mkdtempSync(join(tmpdir(), 'flt-')),
    http: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    logLevel: 'warn',
    cpuCapacity: 64,
    ...options,
  });
  return { client, instance };
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
