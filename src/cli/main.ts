#!/usr/bin/env node
import { Command } from 'commander';
import type { Client, StartOptions } from '../api.js';
import { startDetached } from '../admin/detached.js';
import { connect } from '../admin/remote-client.js';
import { errorMessage, isFlotillaError } from '../common/errors.js';
import { loadConfig } from '../config/config.js';
import { ControlPlane } from '../control-plane.js';
import { deployAppFile } from './deploy.js';
import { renderStatus } from './status.js';
import { urlOf } from '../common/checks.js';

interface Connection {
  address?: string;
  token?: string;
}

function parseOptions(json: string | undefined): StartOptions {
  if (json === undefined) return {};
  try {
    return JSON.parse(json) as StartOptions;
  } catch (error) {
    throw new Error(`--options is not valid JSON: ${errorMessage(error)}`);
  }
}

function adminAddress(connection: Connection): { address: string; token?: string } {
  const config = loadConfig();
  const token = connection.token ?? (config.admin.token === '' ? undefined : config.admin.token);
  return { address: connection.address ?? urlOf(config.admin), ...(token === undefined ? {} : { token }) };
}

function connectTo(connection: Connection): Promise<Client> {
  return connect(adminAddress(connection));
}

async function startCommand(flags: { detached?: boolean; options?: string }): Promise<void> {
  const options = parseOptions(flags.options);
  if (flags.detached === true) {
    const client = await startDetached(options);
    process.stdout.write(`Flotilla is running in the background; HTTP on ${client.httpUrl}\n`);
    return;
  }
  const plane = await ControlPlane.start(options);
  process.stdout.write(
    `Flotilla is serving HTTP on ${plane.client.httpUrl}; admin API on ${plane.adminUrl} (instance ${plane.config.instance})\n`,
  );
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void plane.close());
  await plane.whenExited();
}

async function logsCommand(backend: string, flags: Connection & { follow?: boolean; tail: string }): Promise<void> {
  const { address, token } = adminAddress(flags);
  const query = new URLSearchParams({ follow: String(flags.follow === true), tail: flags.tail });
  const response = await fetch(`${address}/api/backends/${encodeURIComponent(backend)}/logs?${query}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  }).catch((error: Error) => {
    throw new Error(`no Flotilla admin API answers at ${address} (${errorMessage(error.cause ?? error)}); is it running?`);
  });
  if (!response.ok || response.body === null) {
    const payload = (await response.json().catch(() => ({}))) as { error?: { code: string; message: string } };
    throw new Error(payload.error ? `${payload.error.code}: ${payload.error.message}` : `admin API answered ${response.status}`);
  }
  const reader = response.body.getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) process.stdout.write(read.value);
}

const program = new Command('flotilla').description('Serve backends and endpoints on Docker, one container per replica.');
const connection = (command: Command) =>
  command
    .option('--address <url>', 'admin API of the Flotilla to talk to (default from FLOTILLA_ADMIN_HOST/PORT)')
    .option('--token <token>', 'admin API token (default FLOTILLA_ADMIN_TOKEN)');

program
  .command('start')
  .description('start Flotilla: HTTP front door, admin API and controller (foreground unless --detached)')
  .option('--detached', 'run in the background and return once it answers')
  .option('--options <json>', 'settings as JSON, e.g. \'{"http":{"port":8080}}\' (FLOTILLA_* variables also apply)')
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
