#!/usr/bin/env node
import { Command, Option } from 'commander';
import type { Client, ConnectOptions, StartOptions } from '../api.js';
import { startDetached, takeStartFile } from '../admin/detached.js';
import { connect, streamBackendLogs } from '../admin/remote-client.js';
import { errorMessage, isFlotillaError } from '../common/errors.js';
import { loadConfig } from '../config/config.js';
import { ControlPlane } from '../control-plane.js';
import { deployAppFile } from './deploy.js';
import { renderStatus } from './status.js';
import { urlOf } from '../common/checks.js';

interface Connection {
  address?: string;
  token?: string;
  instance?: string;
  stateDir?: string;
}

function parseOptions(json: string | undefined): StartOptions {
  if (json === undefined) return {};
  try {
    return JSON.parse(json) as StartOptions;
  } catch (error) {
    throw new Error(`--options is not valid JSON: ${errorMessage(error)}`);
  }
}

/** The admin API to talk to: flags, then FLOTILLA_* settings; without a token, connect() reads the instance's stored one. */
function connectOptions(connection: Connection): ConnectOptions {
  const config = loadConfig({
    ...(connection.instance === undefined ? {} : { instance: connection.instance }),
    ...(connection.stateDir === undefined ? {} : { stateDir: connection.stateDir }),
  });
  const token = connection.token ?? (config.admin.token === '' ? undefined : config.admin.token);
  return {
    address: connection.address ?? urlOf(config.admin),
    instance: config.instance,
    stateDir: config.stateDir,
    ...(token === undefined ? {} : { token }),
  };
}

function connectTo(connection: Connection): Promise<Client> {
  return connect(connectOptions(connection));
}

async function startCommand(flags: { detached?: boolean; options?: string; optionsFile?: string }): Promise<void> {
  const fromFile = flags.optionsFile === undefined ? undefined : takeStartFile(flags.optionsFile);
  const options = fromFile?.options ?? parseOptions(flags.options);
  if (flags.detached === true) {
    const client = await startDetached(options);
    process.stdout.write(`Flotilla is running in the background; HTTP on ${client.httpUrl}\n`);
    return;
  }
  const plane = await ControlPlane.start(options, fromFile === undefined ? {} : { nonce: fromFile.nonce });
  process.stdout.write(
    `Flotilla is serving HTTP on ${plane.client.httpUrl}; admin API on ${plane.adminUrl} (instance ${plane.config.instance})\n`,
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

async function logsCommand(backend: string, flags: Connection & { follow?: boolean; tail: string }): Promise<void> {
  const stream = await streamBackendLogs(connectOptions(flags), backend, { follow: flags.follow === true, tail: flags.tail });
  for await (const chunk of stream) process.stdout.write(chunk as Buffer);
}

const program = new Command('flotilla').description('Serve backends and endpoints on Docker, one container per replica.');
const connection = (command: Command) =>
  command
    .option('--address <url>', 'admin API of the Flotilla to talk to (default from FLOTILLA_ADMIN_HOST/PORT)')
    .option('--token <token>', 'admin API token (default FLOTILLA_ADMIN_TOKEN, else the one the instance stored in its state dir)')
    .option('--instance <name>', 'instance whose stored token to use on this machine (default FLOTILLA_INSTANCE)')
    .option('--state-dir <dir>', 'state directory to find that token in (default FLOTILLA_STATE_DIR)');

program
  .command('start')
  .description('start Flotilla: HTTP front door, admin API and controller (foreground unless --detached)')
  .option('--detached', 'run in the background and return once it answers')
  .option('--options <json>', 'settings as JSON, e.g. \'{"http":{"port":8080}}\' (FLOTILLA_* variables also apply)')
  .addOption(new Option('--options-file <path>', 'settings from a start file that a detached start wrote (read, then removed)').hideHelp())
  .action(startCommand);

connection(
  program
    .command('deploy <file>')
    .description('apply an app file (backends, endpoints, traffic): creates, reconfigures and removes only what differs')
    .option('--dry-run', 'print the plan without changing anything'),
).action(async (file: string, flags: Connection & { dryRun?: boolean }) => {
  await deployAppFile(await connectTo(flags), file, { log: (line) => process.stdout.write(`${line}\n`), dryRun: flags.dryRun === true });
});

connection(program.command('status').description('endpoints, backends and replicas with their state')).action(async (flags: Connection) => {
  process.stdout.write(await renderStatus(await connectTo(flags)));
});

connection(
  program
    .command('logs <backend>')
    .description("print the logs of a backend's replicas")
    .option('-f, --follow', 'keep printing new lines')
    .option('--tail <lines>', 'lines of history per replica', '100'),
).action(logsCommand);

connection(program.command('shutdown').description('drain and remove every endpoint, backend and replica, and stop Flotilla')).action(
  async (flags: Connection) => {
    await (await connectTo(flags)).shutdown();
    process.stdout.write('Flotilla is shutting down\n');
  },
);

program.parseAsync().catch((error: unknown) => {
  process.stderr.write(`flotilla: ${isFlotillaError(error) ? `${error.code}: ` : ''}${errorMessage(error)}\n`);
  process.exit(1);
});
