import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { RequestOptions } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { serve, type Client } from '../src/index.js';
import { LABELS } from '../src/common/labels.js';
import { PROTOCOL } from '../src/replica/protocol.js';
import type { Sample, StreamJob } from './stream-worker.js';

/**
 * Time to first byte and chunks per second of a 1,000-chunk stream, through
 * the front door and straight at the replica behind it, in alternating rounds
 * of one run (docs/benchmarks.md#streaming). Settings: BENCH_STREAMS (streams
 * per target and round, default 20), BENCH_ROUNDS (default 6).
 */
const INSTANCE = 'bench-stream';
const ROUTE = '/tokens';
const CHUNKS = 1000;
const STREAMS = Number(process.env.BENCH_STREAMS ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);

async function* tokens(): AsyncGenerator<string> {
  for (let n = 0; n < 1000; n++) yield `token ${n} `;
}

const docker = async (...args: string[]): Promise<string> =>
  (await promisify(execFile)('docker', args, { encoding: 'utf8' })).stdout.trim();

/** Measures `count` streams one after another in a worker thread, so the client never shares an event loop with the front door. */
function measure(job: StreamJob): Promise<Sample[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./stream-worker.js', import.meta.url), { workerData: job });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the stream worker exited (code ${code}) without a result`)));
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function replicaTarget(): Promise<RequestOptions> {
  const [id] = (await docker('ps', '-q', '--no-trunc', '--filter', `label=${LABELS.instance}=${INSTANCE}`)).split('\n');
  if (id === undefined || id === '') throw new Error('the replica container was not found');
  const mounts = JSON.parse(await docker('inspect', '--format', '{{json .Mounts}}', id)) as Array<{ Source: string; Destination: string }>;
  const mount = mounts.find((m) => m.Destination === PROTOCOL.socketDir);
  const ports = await docker('port', id, `${PROTOCOL.tcpPort}/tcp`).catch(() => '');
  const binding = ports.split('\n')[0] ?? '';
  if (binding !== '') {
    const colon = binding.lastIndexOf(':');
    return { host: binding.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(binding.slice(colon + 1)), path: ROUTE };
  }
  if (mount === undefined) throw new Error('the replica has neither a published port nor a socket mount');
  return { socketPath: `${mount.Source}/${PROTOCOL.socketName}`, path: ROUTE };
}

async function main(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-bench-'));
  let client: Client | undefined;
  try {
    client = await serve.start({ instance: INSTANCE, stateDir, http: { host: '127.0.0.1', port: 0 }, logLevel: 'warn' });
    await client.createBackend('tokens', tokens);
    await client.createEndpoint('tokens', { backend: 'tokens', route: ROUTE });
    const url = new URL(client.httpUrl);
    const targets = { proxy: { host: url.hostname, port: Number(url.port), path: ROUTE }, direct: await replicaTarget() };
    const expected = Buffer.byteLength(Array.from({ length: CHUNKS }, (_, n) => `token ${n} `).join(''));
    const samples: Record<keyof typeof targets, Sample[]> = { proxy: [], direct: [] };
    for (const name of ['proxy', 'direct'] as const) await measure({ target: targets[name], expected, chunks: CHUNKS, count: 5 });
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['proxy', 'direct'] as const) : (['direct', 'proxy'] as const);
      for (const name of order) samples[name].push(...(await measure({ target: targets[name], expected, chunks: CHUNKS, count: STREAMS })));
    }
    const rows = (['proxy', 'direct'] as const).map((name) => ({
      name,
      ttfb: median(samples[name].map((s) => s.ttfbMs)),
      rate: median(samples[name].map((s) => s.chunksPerS)),
    }));
    console.log(`${cpus().length} CPUs; ${ROUNDS} rounds x ${STREAMS} streams of ${CHUNKS} chunks per target, one at a time`);
    for (const row of rows) console.log(`${row.name.padEnd(6)}  ttfb p50 ${row.ttfb.toFixed(2)} ms  chunks/s p50 ${row.rate.toFixed(0)}`);
    const [proxy, direct] = rows as [(typeof rows)[0], (typeof rows)[0]];
    console.log(
      `proxy/direct: time to first byte ${(proxy.ttfb / direct.ttfb).toFixed(2)}x (+${(proxy.ttfb - direct.ttfb).toFixed(2)} ms), ` +
        `chunks per second ${(proxy.rate / direct.rate).toFixed(2)}x`,
    );
  } finally {
    await client?.shutdown().catch(() => undefined);
    const left = (await docker('ps', '-aq', '--filter', `label=${LABELS.instance}=${INSTANCE}`)).split('\n').filter((id) => id !== '');
    if (left.length > 0) await docker('rm', '-f', ...left);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

await main();
