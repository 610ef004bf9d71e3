import { spawn } from 'node:child_process';
import { mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import type { Client, StartOptions } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import { packageRoot } from '../common/package-root.js';
import { loadConfig } from '../config/config.js';
import { connect } from './remote-client.js';
import { urlOf } from '../common/checks.js';

const READY_TIMEOUT_MS = 60_000;

/**
 * Starts the control plane in a background process (`flotilla start`) that
 * outlives the caller, waits for its admin API, and returns a remote client.
 * Its output goes to <stateDir>/<instance>.log.
 */
export async function startDetached(options: Omit<StartOptions, 'detached'>): Promise<Client> {
  const config = loadConfig(options);
  if (config.admin.port === 0) throw new FlotillaError('INVALID_ARGUMENT', 'a detached Flotilla needs a fixed admin.port, not 0');
  mkdirSync(config.stateDir, { recursive: true });
  const logPath = join(config.stateDir, `${config.instance}.log`);
  const log = openSync(logPath, 'a');
  const child = spawn(
    process.execPath,
    [join(packageRoot(), 'dist', 'src', 'cli', 'main.js'), 'start', '--options', JSON.stringify(options)],
    {
      detached: true,
      stdio: ['ignore', log, log],
    },
  );
  child.unref();
  let exitCode: number | null = null;
  child.once('exit', (code) => (exitCode = code));
  const address = urlOf(config.admin);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    try {
      return await connect({ address, ...(config.admin.token === '' ? {} : { token: config.admin.token }) });
    } catch (error) {
      if (exitCode !== null)
        throw new FlotillaError('ENGINE_UNAVAILABLE', `the detached Flotilla exited with code ${exitCode}; see ${logPath}`);
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}
