import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify, parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { isFlotillaError, serve, type Client } from '../src/index.js';
import { LABELS } from '../src/common/labels.js';
import { PROTOCOL } from '../src/replica/protocol.js';
import type { LoadOptions, LoadResult, LoadTarget } from './load-generator.js';

type Transport = 'tcp' | 'unix';
type Target = 'proxy' | 'direct';

interface Settings {
  concurrency: number;
  warmupS: number;
  durationS: number;
  timeoutS: number;
  rounds: number;
  transports: Transport[];
}

interface Running {
  transport: Transport;
  instance: string;
  stateDir: string;
  client?: Client;
}

interface Row {
  target: Target;
  transport: Transport;
  rounds: LoadResult[];
  /** CPU time of this process's main thread (the front door's) while the rounds ran. */
  mainThreadCpuMs: number | undefined;
}

const BACKEND = 'hello';
const ROUTE = '/hello';
const REPLY = 'hello';
const STARTUP_BUDGET_S = 180;
const REOPEN_MS = 250;
const MIN_ROUND_MS = 500;
const CLOCK_TICKS_PER_S = 100;

const docker = async (...args: string[]): Promise<string> =>
  (await promisify(execFile)('docker', args, { encoding: 'utf8' })).stdout.trim();

function hello() {
  return 'hello';
}

class UsageError extends Error {}

function readSettings(): Settings {
  const names = ['concurrency', 'warmup', 'duration', 'timeout', 'rounds', 'transports'] as const;
  let values: Partial<Record<(typeof names)[number], string>>;
  try {
    values = parseArgs({ options: Object.fromEntries(names.map((name) => [name, { type: 'string' }])) }).values as typeof values;
  } catch (error) {
    throw new UsageError(`${(error as Error).message}; the options are ${names.map((name) => `--${name}`).join(', ')}`);
  }
  const positive = (name: string, flag: string | undefined, env: string, fallback: number): number => {
    const text = flag ?? process.env[env] ?? String(fallback);
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) throw new UsageError(`--${name} (or ${env}) must be a positive integer, not '${text}'`);
    return value;
  };
  const transports = (values.transports ?? process.env.BENCH_TRANSPORTS ?? 'tcp,unix').split(',').map((t) => t.trim());
  const unknown = transports.filter((t) => t !== 'tcp' && t !== 'unix');
  if (unknown.length > 0 || transports.length === 0)
    throw new UsageError(`--transports takes tcp, unix or both, not '${unknown.join(',')}'`);
  const settings: Settings = {
    concurrency: positive('concurrency', values.concurrency, 'BENCH_CONCURRENCY', 32),
    warmupS: positive('warmup', values.warmup, 'BENCH_WARMUP_S', 2),
    durationS: positive('duration', values.duration, 'BENCH_DURATION_S', 10),
    timeoutS: positive('timeout', values.timeout, 'BENCH_TIMEOUT_S', 5),
    rounds: positive('rounds', values.rounds, 'BENCH_ROUNDS', 5),
    transports: [...new Set(transports)] as Transport[],
  };
  if ((settings.durationS * 1000) / settings.rounds < MIN_ROUND_MS) {
    throw new UsageError(`--duration ${settings.durationS} s split into ${settings.rounds} rounds leaves under ${MIN_ROUND_MS} ms a round`);
  }
  return settings;
}

async function machine(): Promise<string> {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const engine = await docker('version', '--format', '{{.Server.Version}}').catch(() => 'unknown');
  return `${cpus().length} × ${model}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, Docker engine ${engine}`;
}

/** Other work on the machine skews every figure; the 1-minute load average makes it visible. */
function loadAverage(): string {
  return loadavg()[0]!.toFixed(2);
}

async function startFlotilla(running: Running): Promise<Client> {
  const client = await serve.start({
    instance: running.instance,
    stateDir: running.stateDir,
    http: { host: '127.0.0.1', port: 0 },
    transport: running.transport,
    logLevel: 'warn',
  });
  running.client = client;
  await client.createBackend(BACKEND, hello, { config: { numReplicas: 1 } });
  await client.createEndpoint(BACKEND, { backend: BACKEND, route: ROUTE });
  return client;
}

/** The one replica's own address, read from its container (found by labels) as Docker reports it. */
async function replicaTarget(running: Running): Promise<LoadTarget> {
  const ids = (
    await docker(
      'ps',
      '-q',
      '--no-trunc',
      '--filter',
      `label=${LABELS.instance}=${running.instance}`,
      '--filter',
      `label=${LABELS.backend}=${BACKEND}`,
    )
  )
    .split('\n')
    .filter((id) => id !== '');
  const [id] = ids;
  if (id === undefined || ids.length !== 1) throw new Error(`expected one running replica of '${BACKEND}', found ${ids.length}`);
  if (running.transport === 'unix') {
    const mounts = JSON.parse(await docker('inspect', '--format', '{{json .Mounts}}', id)) as Array<{
      Source: string;
      Destination: string;
    }>;
    const mount = mounts.find((m) => m.Destination === PROTOCOL.socketDir);
    if (mount === undefined) throw new Error(`replica container ${id.slice(0, 12)} has no ${PROTOCOL.socketDir} mount`);
    return { socketPath: `${mount.Source}/${PROTOCOL.socketName}`, path: ROUTE };
  }
  const binding = (await docker('port', id, `${PROTOCOL.tcpPort}/tcp`)).split('\n')[0] ?? '';
  const colon = binding.lastIndexOf(':');
  if (colon < 0) throw new Error(`replica container ${id.slice(0, 12)} publishes no port ${PROTOCOL.tcpPort}: '${binding}'`);
  return { host: binding.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(binding.slice(colon + 1)), path: ROUTE };
}

function proxyTarget(client: Client): LoadTarget {
  const url = new URL(client.httpUrl);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port), path: ROUTE };
}

function describe(target: LoadTarget): string {
  return 'socketPath' in target ? `unix:${target.socketPath}` : `http://${target.host}:${target.port}${target.path}`;
}

/** One request, so a misrouted target fails loudly before any load is sent. */
function expectReply(target: LoadTarget): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () =>
        res.statusCode === 200 && body === REPLY
          ? resolve()
          : reject(new Error(`${describe(target)} answered ${res.statusCode} '${body.slice(0, 200)}', expected 200 '${REPLY}'`)),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`${describe(target)} did not answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** CPU time of the main thread, which runs the proxy while the load comes from a worker thread; undefined off Linux. */
function mainThreadCpuMs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

function loadInWorker(options: LoadOptions): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./load-worker.js', import.meta.url), { workerData: options });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the load worker exited (code ${code}) without a result`)));
  });
}

/**
 * Loads both targets in alternating rounds (proxy, direct, direct, proxy, ...)
 * so that whatever else the machine is doing weighs on both alike. The first
 * round of each target warms up for the full warm-up, later ones only reopen
 * their connections.
 */
async function compare(targets: Record<Target, LoadTarget>, settings: Settings, transport: Transport): Promise<Row[]> {
  const rounds: Record<Target, LoadResult[]> = { proxy: [], direct: [] };
  const cpuMs: Record<Target, number | undefined> = { proxy: 0, direct: 0 };
  for (let round = 0; round < settings.rounds; round++) {
    const order: Target[] = round % 2 === 0 ? ['proxy', 'direct'] : ['direct', 'proxy'];
    for (const target of order) {
      const cpuBefore = mainThreadCpuMs();
      const result = await loadInWorker({
        target: targets[target],
        concurrency: settings.concurrency,
        warmupMs: round === 0 ? settings.warmupS * 1000 : REOPEN_MS,
        durationMs: (settings.durationS * 1000) / settings.rounds,
        timeoutMs: settings.timeoutS * 1000,
      });
      rounds[target].push(result);
      const cpuAfter = mainThreadCpuMs();
      const sofar = cpuMs[target];
      cpuMs[target] = sofar === undefined || cpuBefore === undefined || cpuAfter === undefined ? undefined : sofar + cpuAfter - cpuBefore;
    }
    const rps = (target: Target): string => summarize([rounds[target][round]!]).rps.toFixed(0);
    process.stdout.write(`  round ${round + 1}/${settings.rounds}: proxy ${rps('proxy')} req/s, direct ${rps('direct')} req/s\n`);
  }
  return [
    { target: 'proxy', transport, rounds: rounds.proxy, mainThreadCpuMs: cpuMs.proxy },
    { target: 'direct', transport, rounds: rounds.direct, mainThreadCpuMs: cpuMs.direct },
  ];
}

async function stop(running: Running): Promise<void> {
  try {
    await running.client?.shutdown();
  } finally {
    running.client = undefined;
    const left = (await docker('ps', '-aq', '--filter', `label=${LABELS.instance}=${running.instance}`))
      .split('\n')
      .filter((id) => id !== '');
    if (left.length > 0) {
      process.stderr.write(`bench: removing ${left.length} container(s) that shutdown left behind\n`);
      await docker('rm', '-f', ...left);
    }
    rmSync(running.stateDir, { recursive: true, force: true });
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

function summarize(rounds: LoadResult[]) {
  const sorted = Float64Array.from(rounds.flatMap((r) => r.latenciesMs)).sort();
  const sum = (values: number[]): number => values.reduce((total, n) => total + n, 0);
  return {
    rps: sum(rounds.map((r) => r.requests)) / (sum(rounds.map((r) => r.elapsedMs)) / 1000),
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    errors: sum(rounds.map((r) => r.non2xx + sum(Object.values(r.failures)))),
  };
}

function cpuPerResponseUs(row: Row): number | undefined {
  const responses = row.rounds.reduce((total, round) => total + round.responses, 0);
  return row.mainThreadCpuMs === undefined || responses === 0 ? undefined : (row.mainThreadCpuMs * 1000) / responses;
}

function report(rows: Row[]): string {
  const table = [['target', 'transport', 'requests/s', 'p50 ms', 'p99 ms', 'errors']];
  for (const { target, transport, rounds } of rows) {
    const s = summarize(rounds);
    table.push([target, transport, s.rps.toFixed(0), s.p50.toFixed(2), s.p99.toFixed(2), String(s.errors)]);
  }
  const widths = table[0]!.map((_, column) => Math.max(...table.map((row) => row[column]!.length)));
  const lines = table.map((row) =>
    row.map((cell, column) => (column < 2 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  '),
  );
  lines.push('');
  for (const transport of new Set(rows.map((row) => row.transport))) {
    const proxy = rows.find((row) => row.transport === transport && row.target === 'proxy');
    const direct = rows.find((row) => row.transport === transport && row.target === 'direct');
    if (proxy === undefined || direct === undefined) continue;
    const [p, d] = [summarize(proxy.rounds), summarize(direct.rounds)];
    const perRound = proxy.rounds.map((round, i) => summarize([round]).rps / summarize([direct.rounds[i]!]).rps);
    lines.push(
      `proxy/direct (${transport}): throughput ${(p.rps / d.rps).toFixed(2)}x (rounds ${Math.min(...perRound).toFixed(2)}-${Math.max(...perRound).toFixed(2)}),` +
        ` p50 ${(p.p50 / d.p50).toFixed(2)}x, p99 ${(p.p99 / d.p99).toFixed(2)}x; the proxy adds ${(p.p50 - d.p50).toFixed(2)} ms at p50`,
    );
    const [proxyCpu, directCpu] = [cpuPerResponseUs(proxy), cpuPerResponseUs(direct)];
    if (proxyCpu !== undefined && directCpu !== undefined) {
      lines.push(
        `  main thread (front door) CPU: ${proxyCpu.toFixed(0)} µs per request; ${directCpu.toFixed(0)} µs while the replica is loaded directly`,
      );
    }
  }
  for (const { target, transport, rounds } of rows) {
    const causes: Record<string, number> = {};
    for (const round of rounds) {
      if (round.non2xx > 0) causes['non-2xx'] = (causes['non-2xx'] ?? 0) + round.non2xx;
      for (const [code, n] of Object.entries(round.failures)) causes[code] = (causes[code] ?? 0) + n;
    }
    const text = Object.entries(causes).map(([code, n]) => `${code} ×${n}`);
    if (text.length > 0) lines.push(`errors of ${target} (${transport}): ${text.join(', ')}`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const settings = readSettings();
  const runs = settings.transports.map((transport): Running => ({
    transport,
    instance: transport === 'tcp' ? 'bench' : 'bench-unix',
    stateDir: mkdtempSync(join(tmpdir(), 'flt-bench-')),
  }));
  let stopping: Promise<void> | undefined;
  const stopAll = (): Promise<void> => (stopping ??= Promise.allSettled(runs.map(stop)).then(() => undefined));
  const abort = (why: string, code: number): void => {
    process.stderr.write(`bench: ${why}; shutting Flotilla down\n`);
    void stopAll().finally(() => process.exit(code));
    setTimeout(() => process.exit(code), 60_000).unref();
  };
  process.once('SIGINT', () => abort('interrupted', 130));
  process.once('SIGTERM', () => abort('terminated', 143));
  const loadS = 2 * (settings.warmupS + settings.durationS + settings.rounds * (settings.timeoutS + 1));
  const budgetS = settings.transports.length * (STARTUP_BUDGET_S + loadS);
  setTimeout(() => abort(`still running after ${budgetS} s`, 1), budgetS * 1000).unref();

  const loadBefore = loadAverage();
  process.stdout.write(`machine: ${await machine()}\n`);
  process.stdout.write(
    `load: closed loop, ${settings.concurrency} keep-alive connections; per target ${settings.warmupS} s warm-up,` +
      ` then ${settings.durationS} s measured in ${settings.rounds} rounds alternating with the other target\n\n`,
  );
  const rows: Row[] = [];
  try {
    for (const running of runs) {
      const client = await startFlotilla(running);
      const targets = { proxy: proxyTarget(client), direct: await replicaTarget(running) };
      await expectReply(targets.proxy);
      await expectReply(targets.direct);
      process.stdout.write(`${running.transport}: proxy ${describe(targets.proxy)}, direct ${describe(targets.direct)}\n`);
      rows.push(...(await compare(targets, settings, running.transport)));
      await stop(running);
    }
  } finally {
    await stopAll();
  }
  process.stdout.write(`\n${report(rows)}\n`);
  process.stdout.write(`load average before ${loadBefore}, after ${loadAverage()} (on ${cpus().length} CPUs)\n`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    const expected = error instanceof UsageError || isFlotillaError(error);
    process.stderr.write(
      `bench failed: ${error instanceof Error ? ((expected ? undefined : error.stack) ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
