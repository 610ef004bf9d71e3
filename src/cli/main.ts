#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Client, ConnectOptions, StartOptions } from '../api.js';
import { startDetached, takeStartFile } from '../admin/detached.js';
import { connect, dashboardUrl, streamBackendLogs } from '../admin/remote-client.js';
import { UnknownRemoteError, errorMessage, isFlotillaError } from '../common/errors.js';
import { loadConfig } from '../config/config.js';
import { ControlPlane } from '../control-plane.js';
import { callEndpoint, type CallFlags } from './call.js';
import { deployAppFile, type DeployOptions } from './deploy.js';
import { DevLoop } from './dev-loop.js';
import { renderStatus, watchStatus } from './status.js';
import { invalid } from '../common/checks.js';
import { runningInstances } from '../admin/instance-records.js';
import { explainUnreachable, reachNote, resolveConnection, type Connection } from './current-instance.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../common/package-root.js';
import { checkAppFile, describeMachine, offlinePlan, thisMachine, type MachineSize } from './offline-check.js';
import { imagesOfDesiredState, pruneImages } from './prune.js';
import { engineRuntime } from '../runtime/docker/engine-runtime.js';
import { printEvents } from './events.js';
import { ReadableLogs } from './log-lines.js';
import { TerminalProgress } from './progress.js';
import { spawn } from 'node:child_process';

function parseOptions(json: string | undefined): StartOptions {
  if (json === undefined) return {};
  try {
    return JSON.parse(json) as StartOptions;
  } catch (error) {
    throw new Error(`--options is not valid JSON: ${errorMessage(error)}`);
  }
}

/** Runs an admin API call with the instance the flags (or this machine's current instance) lead to; says what was tried when none answers. */
async function reaching<T>(connection: Connection, call: (options: ConnectOptions) => Promise<T>): Promise<T> {
  const resolved = resolveConnection(connection);
  try {
    return await call(resolved);
  } catch (error) {
    throw explainUnreachable(error, resolved, connection);
  }
}

function connectTo(connection: Connection): Promise<Client> {
  return reaching(connection, connect);
}

async function startCommand(flags: { detached?: boolean; options?: string; optionsFile?: string }): Promise<void> {
  const fromFile = flags.optionsFile === undefined ? undefined : takeStartFile(flags.optionsFile);
  const options = fromFile?.options ?? parseOptions(flags.options);
  if (flags.detached === true) {
    const client = await startDetached(options);
    const { instance, stateDir } = loadConfig(options);
    const adminUrl = runningInstances(stateDir).find((record) => record.instance === instance)?.adminUrl;
    process.stdout.write(
      `Flotilla is running in the background (instance ${instance}); HTTP on ${client.httpUrl}` +
        `${adminUrl === undefined ? '' : `, admin API on ${adminUrl}`}; ${reachNote(instance, stateDir)}\n`,
    );
    return;
  }
  const plane = await ControlPlane.start(options, { record: true, ...(fromFile === undefined ? {} : { nonce: fromFile.nonce }) });
  plane.exitOnEscape();
  const { instance, stateDir } = plane.config;
  process.stdout.write(
    `Flotilla is serving HTTP on ${plane.client.httpUrl}; admin API on ${plane.adminUrl} (instance ${instance}); ${reachNote(instance, stateDir)}\n`,
  );
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      plane.close().catch((error: unknown) => {
        process.stderr.write(`flotilla: closing failed: ${errorMessage(error)}\n`);
        process.exit(1);
      });
    });
  await plane.whenExited();
}

async function logsCommand(backend: string, flags: Connection & { follow?: boolean; tail: string; json?: boolean }): Promise<void> {
  const query = { follow: flags.follow === true, tail: flags.tail };
  const stream = await reaching(flags, (options) => streamBackendLogs(options, backend, query));
  const lines = new ReadableLogs((text) => process.stdout.write(text));
  for await (const chunk of stream) {
    if (flags.json === true) process.stdout.write(chunk as Buffer);
    else lines.push(chunk as Buffer);
  }
  lines.end();
}

async function callCommand(endpoint: string, input: string | undefined, flags: Connection & CallFlags): Promise<void> {
  const output = {
    stdout: (chunk: string | Uint8Array) => process.stdout.write(chunk),
    stderr: (line: string) => process.stderr.write(`${line}\n`),
  };
  process.exitCode = await callEndpoint(await connectTo(flags), endpoint, input, flags, output);
}

const { version } = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
const program = new Command('flotilla')
  .description('Serve backends and endpoints on Docker, one container per replica.')
  .version(version, '-V, --version', "print Flotilla's version");
const connection = (command: Command) =>
  command
    .option(
      '--address <url>',
      "admin API of the Flotilla to talk to (default: this machine's current instance, else FLOTILLA_ADMIN_HOST/PORT)",
    )
    .option('--token <token>', 'admin API token (default FLOTILLA_ADMIN_TOKEN, else the one the instance stored in its state dir)')
    .option('--instance <name>', 'instance on this machine to talk to, instead of the last started (default FLOTILLA_INSTANCE)')
    .option('--state-dir <dir>', 'state directory to find that token in (default FLOTILLA_STATE_DIR)');

program
  .command('start')
  .description('start Flotilla: HTTP front door, admin API and controller (foreground unless --detached)')
  .option('--detached', 'run in the background and return once it answers')
  .option('--options <json>', 'settings as JSON, e.g. \'{"http":{"port":8080}}\' (FLOTILLA_* variables also apply)')
  .addOption(new Option('--options-file <path>', 'settings from a start file that a detached start wrote (read, then removed)').hideHelp())
  .action(startCommand);

type MachineFlags = { cpus?: number; memoryMb?: number; gpus?: number };

function amount(integer: boolean) {
  return (value: string): number => {
    const number = Number(value);
    if (value.trim() === '' || !Number.isFinite(number) || number < 0 || (integer && !Number.isInteger(number))) {
      throw new InvalidArgumentError(integer ? 'must be a whole number of 0 or more' : 'must be a number of 0 or more');
    }
    return number;
  };
}

const machine = (command: Command) =>
  command
    .option('--cpus <n>', 'check that every replica fits on a machine with this many CPUs', amount(false))
    .option('--memory-mb <n>', 'check that every replica fits in this much memory (MB)', amount(true))
    .option('--gpus <n>', 'check that every replica fits on this many GPUs', amount(true));

const machineOf = (flags: MachineFlags): MachineSize => ({ cpus: flags.cpus, memoryMb: flags.memoryMb, gpus: flags.gpus });
const print = (line: string) => process.stdout.write(`${line}\n`);

machine(
  program
    .command('validate <file>')
    .description(
      'check an app file without a control plane: syntax, keys, types, contexts, and that its replicas fit this machine (or the one --cpus, --memory-mb and --gpus describe)',
    )
    .option('--no-capacity', 'do not check capacity'),
).action((file: string, flags: MachineFlags & { capacity: boolean }) => {
  const given = machineOf(flags);
  const mine = !Object.values(given).some((value) => value !== undefined);
  const size = flags.capacity ? (mine ? thisMachine() : given) : {};
  const spec = checkAppFile(file, size, describeMachine(size, mine));
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  print(
    `${file}: valid (${count(Object.keys(spec.backends).length, 'backend')}, ${count(Object.keys(spec.endpoints).length, 'endpoint')}); ` +
      (flags.capacity ? `fits ${describeMachine(size, mine)}` : 'capacity not checked (--no-capacity)'),
  );
});

/** Progress (stage, elapsed) redrawn in one line per backend on a terminal; a log file or CI gets one line per change. */
function deployOutput(): DeployOptions {
  if (!process.stdout.isTTY) return { log: print, progressIntervalMs: 0 };
  const terminal = new TerminalProgress(
    (text) => process.stdout.write(text),
    () => process.stdout.columns,
  );
  return { log: terminal.log, progressIntervalMs: 1000, progressLine: () => terminal.line() };
}

/** `flotilla dev FILE`: deploy, then deploy each change until Ctrl-C, which leaves the instance running or removes it. */
async function devCommand(file: string, flags: Connection & { onExit: string }): Promise<void> {
  if (flags.onExit !== 'leave' && flags.onExit !== 'remove') throw invalid(`--on-exit must be leave or remove, not '${flags.onExit}'`);
  const client = await connectTo(flags);
  const loop = new DevLoop(client, file, deployOutput());
  await loop.start();
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
  });
  await loop.close();
  if (flags.onExit === 'remove') {
    await client.shutdown();
    print('removed: the instance drains and removes its endpoints, backends and replicas, and stops');
  } else print('stopped watching; the instance keeps serving what was deployed (flotilla shutdown removes it)');
}

/** A dry run plans against the running control plane, or offline (against an empty instance) when none answers. */
async function dryRun(file: string, flags: Connection & MachineFlags & { offline?: boolean }): Promise<void> {
  const spec = checkAppFile(file, machineOf(flags));
  let client: Client | undefined;
  if (flags.offline !== true) {
    client = await connectTo(flags).catch((error: unknown) => {
      if (!isFlotillaError(error, 'ADMIN_UNREACHABLE')) throw error;
      print(`no control plane answers (${errorMessage(error)}); planning against an empty instance`);
      return undefined;
    });
  }
  if (client === undefined) {
    for (const line of offlinePlan(spec)) print(line);
    return;
  }
  await deployAppFile(client, file, { log: print, dryRun: true });
}

connection(
  machine(
    program
      .command('deploy <file>')
      .description('apply an app file (backends, endpoints, traffic): creates, reconfigures and removes only what differs')
      .option('--dry-run', 'print the plan without changing anything')
      .option('--offline', 'with --dry-run: plan against an empty instance, without asking a control plane')
      .option('--watch', 'then keep watching the file and its contexts and deploy each change (as flotilla dev)'),
  ),
).action(async (file: string, flags: Connection & MachineFlags & { dryRun?: boolean; offline?: boolean; watch?: boolean }) => {
  if (flags.dryRun === true) return dryRun(file, flags);
  if (flags.offline === true) throw new Error('--offline needs --dry-run: a deploy changes a running control plane');
  if (Object.values(machineOf(flags)).some((value) => value !== undefined)) checkAppFile(file, machineOf(flags));
  if (flags.watch === true) return devCommand(file, { ...flags, onExit: 'leave' });
  await deployAppFile(await connectTo(flags), file, deployOutput());
});

connection(
  program
    .command('dev <file>')
    .description(
      'deploy an app file, then watch it and every context directory and deploy each change (config live, code as a rolling update) until Ctrl-C',
    )
    .option('--on-exit <what>', 'at Ctrl-C: leave the instance serving, or remove it (flotilla shutdown)', 'leave'),
).action(devCommand);

connection(
  program
    .command('status')
    .description('endpoints, backends and replicas with their state')
    .option('-w, --watch', 'show rollout progress until no rollout is under way (exit status 1 if one rolled back or paused)'),
).action(async (flags: Connection & { watch?: boolean }) => {
  const client = await connectTo(flags);
  if (flags.watch !== true) {
    process.stdout.write(await renderStatus(client));
    return;
  }
  const write = (text: string) => process.stdout.write(text);
  if (!(await watchStatus(client, { tty: process.stdout.isTTY === true, write }))) process.exitCode = 1;
});

connection(
  program
    .command('logs <backend>')
    .description("print the logs of a backend's replicas")
    .option('-f, --follow', 'keep printing new lines')
    .option('--tail <lines>', 'lines of history per replica', '100')
    .option('--json', "the replicas' lines as they logged them (JSON), instead of readable lines with stacks below"),
).action(logsCommand);

connection(
  program
    .command('events')
    .description("print the control plane's recent events: changes, scaling, replicas started, failed and replaced")
    .option('--since <seq>', 'only events after this seq, oldest first')
    .option('--limit <n>', 'at most this many events', '50')
    .option('-f, --follow', 'keep printing new events')
    .option('--json', 'one JSON object per line'),
).action(async (flags: Connection & { since?: string; limit: string; follow?: boolean; json?: boolean }) => {
  const number = (value: string, what: string) => {
    if (!/^\d+$/.test(value)) throw invalid(`${what} must be a whole number, not '${value}'`);
    return Number(value);
  };
  await printEvents(
    await connectTo(flags),
    {
      ...(flags.since === undefined ? {} : { since: number(flags.since, '--since') }),
      limit: number(flags.limit, '--limit'),
      follow: flags.follow === true,
      json: flags.json === true,
    },
    (line) => process.stdout.write(`${line}\n`),
  );
});

connection(
  program
    .command('dashboard')
    .description('print the URL of the dashboard page, with a one-time code that logs the browser in')
    .option('--open', 'also try to open it in a browser (xdg-open, or open on macOS)'),
).action(async (flags: Connection & { open?: boolean }) => {
  const { url, expiresInS } = await reaching(flags, dashboardUrl);
  process.stdout.write(`${url}\n(the code works once, within ${expiresInS / 60} minutes)\n`);
  if (flags.open === true) {
    const opener = spawn(process.platform === 'darwin' ? 'open' : 'xdg-open', [url], { stdio: 'ignore', detached: true });
    opener.on('error', () => process.stderr.write('flotilla: no browser could be opened; open the URL above\n'));
    opener.unref();
  }
});

connection(
  program
    .command('call <endpoint> [input]')
    .description(
      'call an endpoint over HTTP at its route and print the answer (input: JSON, else text); the status goes to stderr, and a 4xx or 5xx exits 1',
    )
    .option(
      '-X, --request <method>',
      'HTTP method (default GET without input, else POST or the first method with a body the endpoint accepts)',
    )
    .option('-q, --query <string>', "query string, e.g. 'top=3&lang=en'")
    .option('-H, --header <header>', "request header 'Name: value' (repeatable)", (value: string, previous: string[] = []) => [
      ...previous,
      value,
    ])
    .option('--method <name>', 'method of a class backend to call (through a handle, not HTTP)')
    .option('--handle', 'call through a handle over the admin API instead of HTTP (also for an endpoint without a route)')
    .option('--stream', 'through a handle: print the answer as it comes (over HTTP it always does)'),
).action(callCommand);

connection(program.command('shutdown').description('drain and remove every endpoint, backend and replica, and stop Flotilla')).action(
  async (flags: Connection) => {
    await (await connectTo(flags)).shutdown();
    process.stdout.write('Flotilla is shutting down\n');
  },
);

function labelPairs(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const match = /^([^=]+)=(.*)$/.exec(value);
  if (match === null) throw new InvalidArgumentError('must be key=value');
  return { ...previous, [match[1] as string]: match[2] as string };
}

program
  .command('prune')
  .description(
    "release this instance's holds on images it no longer uses and remove the images Flotilla built that no container uses, no saved backend names and no instance holds (every backend's images and their bases stay)",
  )
  .option('--label <key=value>', 'only images that also carry this label (repeatable)', labelPairs)
  .action(async (flags: { label?: Record<string, string> }) => {
    const config = loadConfig();
    const runtime = engineRuntime(config);
    await runtime.ping();
    const { removed, kept, released } = await pruneImages(runtime, config.instance, flags.label, imagesOfDesiredState(config.stateDir));
    for (const tag of released) print(`released ${tag}`);
    for (const image of removed) print(`removed ${image.tags.join(', ') || image.id}`);
    print(`removed ${removed.length} image${removed.length === 1 ? '' : 's'}; kept ${kept.length} in use`);
  });

program.parseAsync().catch((error: unknown) => {
  const code = isFlotillaError(error) || error instanceof UnknownRemoteError ? `${error.code}: ` : '';
  process.stderr.write(`flotilla: ${code}${errorMessage(error)}\n`);
  process.exit(1);
});
