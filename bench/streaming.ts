import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, type RequestOptions } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { serve, type Client } from '../src/index.js';
import { LABELS } from '../src/common/labels.js';
import { PROTOCOL } from '../src/replica/protocol.js';

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

interface Sample {
  ttfbMs: number;
  chunksPerS: number;
}

/** One stream: when its first byte came, and its chunks over the whole time. */
function measure(target: RequestOptions, expected: number): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let first: number | undefined;
    let bytes = 0;
    request({ ...target, method: 'GET', agent: false }, (res) => {
      res.on('data', (chunk: Buffer) => {
        first ??= performance.now();
        bytes += chunk.length;
      });
      res.on('end', () => {
        if (bytes !== expected) return reject(new Error(`expected ${expected} bytes, got ${bytes}`));
        const ended = performance.now();
        resolve({ ttfbMs: (first ?? ended) - started, chunksPerS: CHUNKS / ((ended - started) / 1000) });
      });
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
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
    for (const name of ['proxy', 'direct'] as const) for (let n = 0; n < 5; n++) await measure(targets[name], expected);
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['proxy', 'direct'] as const) : (['direct', 'proxy'] as const);
      for (const name of order) for (let n = 0; n < STREAMS; n++) samples[name].push(await measure(targets[name], expected));
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
