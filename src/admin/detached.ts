import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fchmodSync, fstatSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Client, StartOptions } from '../api.js';
import { urlOf } from '../common/checks.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { packageRoot } from '../common/package-root.js';
import { loadConfig } from '../config/config.js';
import { openRemote } from './remote-client.js';
import { adminDir, writePrivateFile } from './token-file.js';
import { sleep } from '../common/clock.js';

const READY_TIMEOUT_MS = 60_000;

/** What a detached start hands its background process, in a file only the user can read. */
export interface StartFile {
  options: Omit<StartOptions, 'detached'>;
  nonce: string;
}

/** Reads and removes the start file (`flotilla start --options-file`). */
export function takeStartFile(path: string): StartFile {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as StartFile;
    if (typeof parsed.nonce !== 'string' || typeof parsed.options !== 'object' || parsed.options === null) throw new Error('wrong shape');
    return parsed;
  } catch (error) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `--options-file ${path} is not a start file a detached start wrote: ${errorMessage(error)}`,
    );
  } finally {
    rmSync(path, { force: true });
  }
}

/** ': <the last line the process wrote>', or nothing. */
function lastLine(logPath: string, from: number): string {
  try {
    const line = readFileSync(logPath).subarray(from).toString('utf8').trim().split('\n').at(-1) ?? '';
    return line === '' ? '' : `: ${line}`;
  } catch {
    return '';
  }
}

/**
 * Starts the control plane in a background process (`flotilla start`) that
 * outlives the caller, waits for its admin API, and returns a remote client.
 * The options (which may hold a token) travel in a mode-0600 file, never on
 * the command line; the client is returned only once /api/health reports this
 * instance and the nonce handed to that process, so another control plane
 * on the port is never taken for it. Its output goes to <stateDir>/<instance>.log.
 */
export async function startDetached(options: Omit<StartOptions, 'detached'>): Promise<Client> {
  const config = loadConfig(options);
  if (config.admin.port === 0) throw new FlotillaError('INVALID_ARGUMENT', 'a detached Flotilla needs a fixed admin.port, not 0');
  const nonce = randomUUID();
  const startFile = join(adminDir(config.stateDir), `${config.instance}.${nonce}.start.json`);
  writePrivateFile(startFile, JSON.stringify({ options, nonce } satisfies StartFile));
  const logPath = join(config.stateDir, `${config.instance}.log`);
  // Replica failure tails and errors land here: readable by the user only, like the state beside it.
  const log = openSync(logPath, 'a', 0o600);
  fchmodSync(log, 0o600);
  const logStart = fstatSync(log).size;
  const child = spawn(process.execPath, [join(packageRoot(), 'dist', 'src', 'cli', 'main.js'), 'start', '--options-file', startFile], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  let exitCode: number | null = null;
  child.once('exit', (code) => (exitCode = code));
  const host = /^(0\.0\.0\.0|::)$/.test(config.admin.host) ? '127.0.0.1' : config.admin.host;
  const address = urlOf({ host, port: config.admin.port });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last: unknown;
  try {
    for (;;) {
      if (exitCode !== null)
        throw new FlotillaError(
          'ADMIN_UNREACHABLE',
          `the detached Flotilla exited with code ${exitCode}${lastLine(logPath, logStart)}; see ${logPath}`,
        );
      try {
        const { client, health } = await openRemote({
          address,
          instance: config.instance,
          stateDir: config.stateDir,
          ...(config.admin.token === '' ? {} : { token: config.admin.token }),
        });
        if (health.instance === config.instance && health.nonce === nonce) return client;
        last = new FlotillaError(
          'INSTANCE_RUNNING',
          `another control plane (instance '${health.instance}') answers at ${address}; set admin.port to a free port`,
        );
      } catch (error) {
        if (!isFlotillaError(error, 'ADMIN_UNREACHABLE') && !isFlotillaError(error, 'UNAUTHORIZED')) throw error;
        last = error;
      }
      if (Date.now() > deadline) throw last;
      await sleep(200);
    }
  } finally {
    if (exitCode !== null) rmSync(startFile, { force: true });
  }
}
