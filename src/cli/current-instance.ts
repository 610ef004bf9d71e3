import type { ConnectOptions } from '../api.js';
import { urlOf } from '../common/checks.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import { loadConfig, setByEnvironment } from '../config/config.js';
import { recordsDir, runningInstances, type InstanceRecord } from '../admin/instance-records.js';

/** How a command was told to reach a control plane (its flags). */
export interface Connection {
  address?: string;
  token?: string;
  instance?: string;
  stateDir?: string;
}

/** The options connect() takes, and how they were found (for messages). */
export interface Resolved extends ConnectOptions {
  instance: string;
  stateDir: string;
  /** The running instance the address came from; undefined when it came from flags or settings. */
  record?: InstanceRecord;
  /** The instance a flag or FLOTILLA_INSTANCE named, if any. */
  named?: string;
}

/**
 * Where a command finds its control plane: --address if given; else the named instance (--instance or
 * FLOTILLA_INSTANCE) if it runs on this machine; else, unless FLOTILLA_ADMIN_HOST/PORT name an address, the current
 * instance (the last started of those running); else the configured address (default http://127.0.0.1:8001).
 */
export function resolveConnection(connection: Connection): Resolved {
  const config = loadConfig({
    ...(connection.instance === undefined ? {} : { instance: connection.instance }),
    ...(connection.stateDir === undefined ? {} : { stateDir: connection.stateDir }),
  });
  const token = connection.token ?? (config.admin.token === '' ? undefined : config.admin.token);
  const named = connection.instance ?? (setByEnvironment('instance') ? config.instance : undefined);
  const settings = {
    instance: config.instance,
    stateDir: config.stateDir,
    ...(token === undefined ? {} : { token }),
    ...(named === undefined ? {} : { named }),
  };
  if (connection.address !== undefined) return { address: connection.address, ...settings };
  const running = runningInstances(config.stateDir);
  const record =
    named !== undefined
      ? running.find((candidate) => candidate.instance === named)
      : setByEnvironment('admin.host') || setByEnvironment('admin.port')
        ? undefined
        : running[0];
  if (record === undefined) return { address: urlOf(config.admin), ...settings };
  return { ...settings, address: record.adminUrl, instance: record.instance, record };
}

/** An unreachable admin API, explained with what was (not) found on this machine. */
export function explainUnreachable(error: unknown, resolved: Resolved, flags: Connection): unknown {
  if (!isFlotillaError(error, 'ADMIN_UNREACHABLE') || flags.address !== undefined) return error;
  const where = recordsDir(resolved.stateDir);
  const hint =
    resolved.record !== undefined
      ? `instance '${resolved.record.instance}' (process ${resolved.record.pid}) was recorded there in ${where}; it may be stopping`
      : resolved.named !== undefined
        ? `no running control plane of instance '${resolved.named}' is recorded in ${where}: start it (flotilla start), or pass --address`
        : `no running control plane is recorded in ${where}: start one (flotilla start), pass --address, or --state-dir if it was started with another stateDir`;
  return new FlotillaError('ADMIN_UNREACHABLE', `${error.message}\n${hint}`, error.details);
}

/** The sentence a start prints after its address: how later commands on this machine will reach it. */
export function reachNote(instance: string, stateDir: string): string {
  const cliStateDir = loadConfig().stateDir;
  const stateFlag = cliStateDir === stateDir ? '' : ` --state-dir ${stateDir}`;
  if (stateFlag !== '') return `later commands reach it with --instance ${instance}${stateFlag}`;
  return `later flotilla commands on this machine reach it without flags while it is the last started instance, else with --instance ${instance}`;
}
