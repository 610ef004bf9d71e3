import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { isFlotillaError, serve, type Client } from '../src/index.js';
import { LABELS } from '../src/common/labels.js';
import { PROTOCOL } from '../src/replica/protocol.js';
import type { LoadOptions, LoadResult, LoadTarget } from './load-generator.js';
import { runWrk } from './wrk.js';

type ReplicaMode = 'host' | 'docker' | 'static';

interface Settings {
  replica: ReplicaMode;
  connections: number[];
  warmupS: number;
  roundS: number;
  rounds: number;
  timeoutS: number;
  python: boolean;
  /** The Python runtime measured as python-replica (default: this checkout's), e.g. an older one for before/after figures. */
  pythonRuntime: string;
  /** Whether the Python handlers (the replica's and python-asgi's endpoint) are `async def` rather than plain `def`. */
  pythonAsync: boolean;
  profileDir: string | undefined;
  /** Another checkout's built front door (its dist/bench/servers/front-door.js), measured alongside as flotilla-baseline. */
  baseline: string | undefined;
  /** Only these targets, when given. */
  only: string[] | undefined;
  /** The worker processes of the flotilla-workers target (http.workers), measured beside the one-process front door. */
  workers: number;
}

/** One thing the load is sent to: over TCP with wrk, or over a unix socket with the bench's own generator. */
interface Target {
  name: string;
  load: { url: string } | { socket: LoadTarget };
  /** The process serving it, whose CPU time (its children's included) is divided by the requests it answered. */
  pid: number | undefined;
}

interface Sample {
  requests: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  cpuMs: number | undefined;
  /** The share of the machine's CPU time that was busy (everything on it, the load generator included). */
  machineBusy: number;
}

const BACKEND = 'hello';
const ROUTE = '/hello';
const REPLY = 'hello';
const CLOCK_TICKS_PER_S = 100;
const STARTUP_MS = 180_000;
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const SERVERS = fileURLToPath(new URL('./servers/', import.meta.url));
const PYTHON_RUNTIME = join(ROOT, 'images/python-replica/flotilla_replica.py');
/** What the Python runtime needs on the host, from Debian's packages (as in the replica image). */
const PYTHON_PACKAGES = 'python3-uvicorn python3-starlette python3-httptools python3-uvloop';

function hello() {
  return 'hello';
}

class UsageError extends Error {}

const run = async (command: string, ...args: string[]): Promise<string> =>
  (await promisify(execFile)(command, args, { encoding: 'utf8' })).stdout.trim();

function readSettings(): Settings {
  const { values } = (() => {
    try {
      return parseArgs({
        options: {
          replica: { type: 'string' },
          connections: { type: 'string' },
          warmup: { type: 'string' },
          round: { type: 'string' },
          rounds: { type: 'string' },
          timeout: { type: 'string' },
          python: { type: 'boolean' },
          'python-runtime': { type: 'string' },
          'python-async': { type: 'boolean' },
          profile: { type: 'string' },
          targets: { type: 'string' },
          baseline: { type: 'string' },
          workers: { type: 'string' },
        },
      });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  })();
  const positive = (name: string, text: string): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) throw new UsageError(`--${name} must be a positive integer, not '${text}'`);
    return value;
  };
  const replica = values.replica ?? process.env.BENCH_REPLICA ?? 'host';
  if (replica !== 'host' && replica !== 'docker' && replica !== 'static')
    throw new UsageError(`--replica takes host, docker or static, not '${replica}'`);
  return {
    replica,
    connections: (values.connections ?? process.env.BENCH_CONNECTIONS ?? '1,16,64').split(',').map((c) => positive('connections', c)),
    warmupS: positive('warmup', values.warmup ?? process.env.BENCH_WARMUP_S ?? '2'),
    roundS: positive('round', values.round ?? process.env.BENCH_ROUND_S ?? '3'),
    rounds: positive('rounds', values.rounds ?? process.env.BENCH_ROUNDS ?? '3'),
    timeoutS: positive('timeout', values.timeout ?? process.env.BENCH_TIMEOUT_S ?? '5'),
    python: values.python ?? process.env.BENCH_PYTHON === '1',
    pythonAsync: values['python-async'] ?? process.env.BENCH_PYTHON_ASYNC === '1',
    pythonRuntime: resolve(values['python-runtime'] ?? process.env.BENCH_PYTHON_RUNTIME ?? PYTHON_RUNTIME),
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    baseline: values.baseline === undefined ? undefined : resolve(values.baseline, 'dist/bench/servers/front-door.js'),
    only: (values.targets ?? process.env.BENCH_TARGETS)?.split(','),
    workers: positive('workers', values.workers ?? process.env.BENCH_WORKERS ?? '2'),
  };
}

/** wrk and nginx come from Debian's packages; the bench installs them when they are missing (as root). */
async function ensureTools(): Promise<void> {
  const missing: string[] = [];
  for (const [tool, pkg] of [
    ['wrk', 'wrk'],
    ['nginx', 'nginx-light'],
  ] as const) {
    if (!(await run('sh', '-c', `command -v ${tool} || true`))) missing.push(pkg);
  }
  if (missing.length === 0) return;
  process.stdout.write(`installing ${missing.join(', ')} from Debian's packages\n`);
  await run(
    'sh',
    '-c',
    `apt-get install -y -qq ${missing.join(' ')} >/dev/null || (apt-get update -qq && apt-get install -y -qq ${missing.join(' ')} >/dev/null)`,
  );
}

/** A python3 that imports uvicorn and Starlette: the PATH's, else Debian's, installing Debian's packages when neither does (as root). */
async function pythonWithAsgi(): Promise<string> {
  const imports = async (python: string): Promise<boolean> =>
    (await run('sh', '-c', `${python} -c 'import uvicorn, starlette' 2>/dev/null && echo yes || true`)) === 'yes';
  for (const python of ['python3', '/usr/bin/python3']) if (await imports(python)) return python;
  process.stdout.write(`installing ${PYTHON_PACKAGES} from Debian's packages\n`);
  await run(
    'sh',
    '-c',
    `apt-get install -y -qq ${PYTHON_PACKAGES} >/dev/null || (apt-get update -qq && apt-get install -y -qq ${PYTHON_PACKAGES} >/dev/null)`,
  );
  return '/usr/bin/python3';
}

/** CPU time (user + system, all threads) a process and its child processes have used so far; undefined when it cannot be read. */
function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .split(' ')
      .filter((child) => child !== '');
    return children.reduce((sum, child) => sum + (processCpuMs(Number(child)) ?? 0), own);
  } catch {
    return undefined;
  }
}

/** The machine's CPU time so far, all CPUs: busy and total, in clock ticks (/proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((n, v) => n + v, 0);
  return { busy: total - fields[3]! - fields[4]!, total };
}

class Processes {
  private readonly children: ChildProcess[] = [];

  /** Starts a bench server and resolves with the JSON line it prints once it listens. */
  async start(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ pid: number; port?: number }> {
    const child = this.spawn(command, args, env);
    const line = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.once('line', resolve);
      child.once('exit', (code) => reject(new Error(`${command} ${args.join(' ')} exited (${code}) before it listened`)));
    });
    return { pid: child.pid!, ...(JSON.parse(line) as { port?: number }) };
  }

  spawn(command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    this.children.push(child);
    return child;
  }

  async stopAll(): Promise<void> {
    await Promise.all(
      this.children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
          }),
      ),
    );
  }
}

function get(target: LoadTarget): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
    req.end();
  });
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + STARTUP_MS;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${STARTUP_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function expectReply(name: string, target: LoadTarget): Promise<void> {
  const { status, body } = await get(target);
  if (status !== 200 || body !== REPLY) throw new Error(`${name} answered ${status} '${body.slice(0, 200)}', expected 200 '${REPLY}'`);
}

/** Starts a replica runtime on the host: an entry file as the launcher writes it, and the runtime's own socket. */
async function hostReplica(
  processes: Processes,
  dir: string,
  language: 'node' | 'python',
  python?: { interpreter: string; runtime: string; async: boolean },
): Promise<{ socketPath: string; pid: number }> {
  const replicaDir = join(dir, `replica-${language}`);
  mkdirSync(replicaDir);
  const module = join(replicaDir, language === 'node' ? 'hello.mjs' : 'hello.py');
  writeFileSync(
    module,
    language === 'node'
      ? `export function hello() { return '${REPLY}'; }\n`
      : `${python!.async ? 'async ' : ''}def hello(request):\n    return '${REPLY}'\n`,
  );
  const entry = join(replicaDir, PROTOCOL.entryName);
  writeFileSync(entry, JSON.stringify({ module, exportName: BACKEND, initArgs: [], controlSecret: randomBytes(16).toString('hex') }));
  const socketPath = join(replicaDir, PROTOCOL.socketName);
  const [command, script] =
    language === 'node' ? [process.execPath, join(ROOT, 'dist/src/replica/main.js')] : [python!.interpreter, python!.runtime];
  const child = processes.spawn(command, [script], { [PROTOCOL.env.entryFile]: entry, [PROTOCOL.env.socket]: socketPath });
  await until(`the ${language} replica runtime`, async () => (await get({ socketPath, path: PROTOCOL.healthPath })).status === 200);
  return { socketPath, pid: child.pid! };
}

/** Starts Flotilla (unix transport) with one replica of 'hello' and finds the replica's socket and process by its labels. */
async function dockerReplica(dir: string): Promise<{ socketPath: string; pid: number; client: Client }> {
  const client = await serve.start({
    instance: 'bench',
    stateDir: join(dir, 'state'),
    http: { host: '127.0.0.1', port: 0 },
    transport: 'unix',
    logLevel: 'warn',
  });
  await client.createBackend(BACKEND, hello, { config: { numReplicas: 1 } });
  const ids = (
    await run(
      'docker',
      'ps',
      '-q',
      '--no-trunc',
      '--filter',
      `label=${LABELS.instance}=bench`,
      '--filter',
      `label=${LABELS.backend}=${BACKEND}`,
    )
  )
    .split('\n')
    .filter((id) => id !== '');
  const [id] = ids;
  if (id === undefined || ids.length !== 1) throw new Error(`expected one running replica of '${BACKEND}', found ${ids.length}`);
  const mounts = JSON.parse(await run('docker', 'inspect', '--format', '{{json .Mounts}}', id)) as Array<{
    Source: string;
    Destination: string;
  }>;
  const mount = mounts.find((m) => m.Destination === PROTOCOL.socketDir);
  if (mount === undefined) throw new Error(`replica container ${id.slice(0, 12)} has no ${PROTOCOL.socketDir} mount`);
  const initPid = Number(await run('docker', 'inspect', '--format', '{{.State.Pid}}', id));
  // The container's first process is docker-init; the runtime is its child, whose CPU is the one to count.
  const children = readFileSync(`/proc/${initPid}/task/${initPid}/children`, 'utf8')
    .trim()
    .split(' ')
    .filter((child) => child !== '');
  const pid = children.length === 1 ? Number(children[0]) : initPid;
  return { socketPath: `${mount.Source}/${PROTOCOL.socketName}`, pid, client };
}

async function stopDocker(client: Client | undefined): Promise<void> {
  try {
    await client?.shutdown();
  } finally {
    const left = (await run('docker', 'ps', '-aq', '--filter', `label=${LABELS.instance}=bench`)).split('\n').filter((id) => id !== '');
    if (left.length > 0) await run('docker', 'rm', '-f', ...left);
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** nginx in front of the same socket: one process (master_process off), upstream keep-alive, no access log. */
/** An nginx of its own (one worker process) under DIR/NAME with the given server block. */
function startNginxServer(processes: Processes, dir: string, name: string, server: string): ChildProcess {
  const prefix = join(dir, name);
  mkdirSync(prefix);
  writeFileSync(
    join(prefix, 'nginx.conf'),
    `daemon off;
master_process off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
${server}
}
`,
  );
  return processes.spawn('nginx', ['-p', prefix, '-c', join(prefix, 'nginx.conf')]);
}

/** nginx in front of the replica, as the proxy to beat. */
async function startNginx(processes: Processes, dir: string, socketPath: string): Promise<{ port: number; pid: number }> {
  const port = await freePort();
  const child = startNginxServer(
    processes,
    dir,
    'nginx',
    `  upstream replica { server unix:${socketPath}; keepalive 128; }
  server {
    listen 127.0.0.1:${port};
    location / { proxy_pass http://replica; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`,
  );
  await until('nginx', async () => (await get({ host: '127.0.0.1', port, path: ROUTE })).status === 200);
  return { port, pid: child.pid! };
}

/** --replica static: nginx answering the reply itself on a unix socket, an upstream so cheap that the proxies in front are the limit. */
async function staticReplica(processes: Processes, dir: string): Promise<{ socketPath: string; pid: number }> {
  const socketPath = join(dir, 'static.sock');
  const child = startNginxServer(
    processes,
    dir,
    'static',
    `  server {
    listen unix:${socketPath};
    keepalive_requests 1000000;
    location / { default_type text/plain; return 200 '${REPLY}'; }
  }`,
  );
  await until('the static upstream', async () => (await get({ socketPath, path: ROUTE })).status === 200);
  return { socketPath, pid: child.pid! };
}

function loadInWorker(options: LoadOptions): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./load-worker.js', import.meta.url), { workerData: options });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the load worker exited (code ${code}) without a result`)));
  });
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : (sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN);
}

async function measure(target: Target, connections: number, settings: Settings, warmupS: number): Promise<Sample> {
  if ('url' in target.load) {
    if (warmupS > 0) await runWrk(target.load.url, connections, warmupS, settings.timeoutS);
    const before = processCpuMs(target.pid);
    const machine = machineTicks();
    const result = await runWrk(target.load.url, connections, settings.roundS, settings.timeoutS);
    const after = processCpuMs(target.pid);
    return {
      ...result,
      cpuMs: before === undefined || after === undefined ? undefined : after - before,
      machineBusy: busySince(machine),
    };
  }
  const options = {
    target: target.load.socket,
    concurrency: connections,
    durationMs: settings.roundS * 1000,
    timeoutMs: settings.timeoutS * 1000,
  };
  if (warmupS > 0) await loadInWorker({ ...options, warmupMs: 0, durationMs: warmupS * 1000 });
  const before = processCpuMs(target.pid);
  const machine = machineTicks();
  const result = await loadInWorker({ ...options, warmupMs: 0 });
  const after = processCpuMs(target.pid);
  const machineBusy = busySince(machine);
  const sorted = Float64Array.from(result.latenciesMs).sort();
  return {
    requests: result.responses,
    seconds: result.elapsedMs / 1000,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors: result.non2xx + Object.values(result.failures).reduce((n, v) => n + v, 0),
    cpuMs: before === undefined || after === undefined ? undefined : after - before,
    machineBusy,
  };
}

function busySince(before: { busy: number; total: number }): number {
  const now = machineTicks();
  return (now.busy - before.busy) / Math.max(1, now.total - before.total);
}

interface Figures {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerRequest: number | undefined;
  errors: number;
  roundRps: number[];
  machineBusy: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

function figures(samples: Sample[]): Figures {
  const requests = samples.reduce((n, s) => n + s.requests, 0);
  const seconds = samples.reduce((n, s) => n + s.seconds, 0);
  const cpu = samples.every((s) => s.cpuMs !== undefined) ? samples.reduce((n, s) => n + s.cpuMs!, 0) : undefined;
  return {
    rps: requests / seconds,
    p50Ms: median(samples.map((s) => s.p50Ms)),
    p99Ms: median(samples.map((s) => s.p99Ms)),
    cpuUsPerRequest: cpu === undefined || requests === 0 ? undefined : (cpu * 1000) / requests,
    errors: samples.reduce((n, s) => n + s.errors, 0),
    roundRps: samples.map((s) => s.requests / s.seconds),
    machineBusy: median(samples.map((s) => s.machineBusy)),
  };
}

/** Loads every target in rounds whose order rotates, so that the machine's other work weighs on all of them alike. */
async function compare(targets: Target[], connections: number, settings: Settings): Promise<Map<string, Figures>> {
  const samples = new Map<string, Sample[]>(targets.map((t) => [t.name, []]));
  for (let round = 0; round < settings.rounds; round++) {
    const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
    for (const target of order)
      samples.get(target.name)!.push(await measure(target, connections, settings, round === 0 ? settings.warmupS : 0));
    const line = targets.map(
      (t) => `${t.name} ${(samples.get(t.name)!.at(-1)!.requests / samples.get(t.name)!.at(-1)!.seconds).toFixed(0)}`,
    );
    process.stdout.write(`  ${connections} connections, round ${round + 1}/${settings.rounds}: ${line.join(', ')} req/s\n`);
  }
  return new Map([...samples].map(([name, s]) => [name, figures(s)]));
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  '))
    .join('\n');
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined ? 'n/a' : `${(a / b).toFixed(2)}x`;
}

function report(results: Map<number, Map<string, Figures>>): string {
  const lines: string[] = [];
  for (const [connections, byTarget] of results) {
    lines.push(`\n${connections} connection${connections === 1 ? '' : 's'}`);
    const rows = [['target', 'req/s', 'rounds', 'p50 ms', 'p99 ms', 'CPU µs/req', 'machine busy', 'errors']];
    for (const [name, f] of byTarget) {
      rows.push([
        name,
        f.rps.toFixed(0),
        `${Math.min(...f.roundRps).toFixed(0)}-${Math.max(...f.roundRps).toFixed(0)}`,
        f.p50Ms.toFixed(3),
        f.p99Ms.toFixed(3),
        f.cpuUsPerRequest?.toFixed(0) ?? 'n/a',
        `${(f.machineBusy * 100).toFixed(0)}%`,
        String(f.errors),
      ]);
    }
    lines.push(table(rows));
    const pair = (a: string, b: string): string | undefined => {
      const [x, y] = [byTarget.get(a), byTarget.get(b)];
      if (x === undefined || y === undefined) return undefined;
      return `${a}/${b}: throughput ${ratio(x.rps, y.rps)}, CPU per request ${ratio(x.cpuUsPerRequest, y.cpuUsPerRequest)}, p50 +${(x.p50Ms - y.p50Ms).toFixed(3)} ms`;
    };
    for (const [a, b] of [
      ['flotilla', 'http-proxy'],
      ['flotilla-baseline', 'http-proxy'],
      ['flotilla', 'flotilla-baseline'],
      ['flotilla', 'nginx'],
      ['flotilla-workers', 'flotilla'],
      ['flotilla-workers', 'http-proxy'],
      ['http-proxy', 'nginx'],
      ['replica', 'node:http'],
      ['python-replica', 'python-asgi'],
      ['python-replica', 'python-http'],
    ] as const) {
      const text = pair(a, b);
      if (text !== undefined) lines.push(`  ${text}`);
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const settings = readSettings();
  await ensureTools();
  const dir = mkdtempSync(join(tmpdir(), 'flt-bench-'));
  const processes = new Processes();
  let client: Client | undefined;
  const cleanUp = async (): Promise<void> => {
    await processes.stopAll();
    await stopDocker(client).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  const abort = (why: string, code: number): void => {
    process.stderr.write(`bench: ${why}; stopping\n`);
    void cleanUp().finally(() => process.exit(code));
  };
  process.once('SIGINT', () => abort('interrupted', 130));
  process.once('SIGTERM', () => abort('terminated', 143));
  try {
    process.stdout.write(
      `machine: ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, ` +
        `${(await promisify(execFile)('nginx', ['-v'], { encoding: 'utf8' })).stderr.trim()}; load average ${loadavg()[0]!.toFixed(2)}\n`,
    );
    const replica =
      settings.replica === 'host'
        ? await hostReplica(processes, dir, 'node')
        : settings.replica === 'static'
          ? await staticReplica(processes, dir)
          : await dockerReplica(dir).then((r) => ((client = r.client), r));
    const bare = await processes.start(process.execPath, [join(SERVERS, 'bare-http.js'), join(dir, 'bare.sock')]);
    const profile = settings.profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', settings.profileDir];
    const frontDoor = await processes.start(process.execPath, [...profile, join(SERVERS, 'front-door.js'), replica.socketPath, ROUTE]);
    const frontDoorWorkers = await processes.start(process.execPath, [
      join(SERVERS, 'front-door.js'),
      replica.socketPath,
      ROUTE,
      String(settings.workers),
    ]);
    const baseline =
      settings.baseline === undefined ? undefined : await processes.start(process.execPath, [settings.baseline, replica.socketPath, ROUTE]);
    const bareProxy = await processes.start(process.execPath, [join(SERVERS, 'bare-proxy.js'), replica.socketPath]);
    const nginx = await startNginx(processes, dir, replica.socketPath);
    const url = (port: number | undefined): string => `http://127.0.0.1:${port}${ROUTE}`;
    const targets: Target[] = [
      { name: 'flotilla', load: { url: url(frontDoor.port) }, pid: frontDoor.pid },
      { name: 'flotilla-workers', load: { url: url(frontDoorWorkers.port) }, pid: frontDoorWorkers.pid },
      ...(baseline === undefined ? [] : [{ name: 'flotilla-baseline', load: { url: url(baseline.port) }, pid: baseline.pid }]),
      { name: 'http-proxy', load: { url: url(bareProxy.port) }, pid: bareProxy.pid },
      { name: 'nginx', load: { url: url(nginx.port) }, pid: nginx.pid },
      { name: 'replica', load: { socket: { socketPath: replica.socketPath, path: ROUTE } }, pid: replica.pid },
      { name: 'node:http', load: { socket: { socketPath: join(dir, 'bare.sock'), path: ROUTE } }, pid: bare.pid },
    ];
    if (settings.python) {
      const interpreter = await pythonWithAsgi();
      const python = await hostReplica(processes, dir, 'python', {
        interpreter,
        runtime: settings.pythonRuntime,
        async: settings.pythonAsync,
      });
      const pythonBare = await processes.start(interpreter, [join(ROOT, 'bench/servers/bare_python.py'), join(dir, 'bare-python.sock')]);
      const asgiBare = await processes.start(interpreter, [
        join(ROOT, 'bench/servers/bare_asgi.py'),
        join(dir, 'bare-asgi.sock'),
        ...(settings.pythonAsync ? ['async'] : []),
      ]);
      targets.push(
        { name: 'python-replica', load: { socket: { socketPath: python.socketPath, path: ROUTE } }, pid: python.pid },
        { name: 'python-asgi', load: { socket: { socketPath: join(dir, 'bare-asgi.sock'), path: ROUTE } }, pid: asgiBare.pid },
        { name: 'python-http', load: { socket: { socketPath: join(dir, 'bare-python.sock'), path: ROUTE } }, pid: pythonBare.pid },
      );
    }
    if (settings.only !== undefined) targets.splice(0, targets.length, ...targets.filter((t) => settings.only!.includes(t.name)));
    for (const target of targets)
      await expectReply(
        target.name,
        'url' in target.load ? { host: '127.0.0.1', port: Number(new URL(target.load.url).port), path: ROUTE } : target.load.socket,
      );
    process.stdout.write(
      `replica: ${{ host: 'the Node runtime on the host', docker: 'a Flotilla container', static: 'nginx answering by itself (static)' }[settings.replica]} at ${replica.socketPath}; ` +
        `flotilla-workers is the front door as ${settings.workers} worker processes; ` +
        `wrk (1 thread) loads the TCP targets (flotilla, flotilla-workers, http-proxy, nginx), the bench's generator the unix sockets; ` +
        `${settings.rounds} rounds of ${settings.roundS} s per target after ${settings.warmupS} s of warm-up\n`,
    );
    const results = new Map<number, Map<string, Figures>>();
    for (const connections of settings.connections) results.set(connections, await compare(targets, connections, settings));
    process.stdout.write(`${report(results)}\nload average after ${loadavg()[0]!.toFixed(2)} (on ${cpus().length} CPUs)\n`);
  } finally {
    await cleanUp();
  }
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
