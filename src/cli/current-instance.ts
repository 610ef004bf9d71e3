import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConnectOptions } from '../api.js';
import { urlOf } from '../common/checks.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import { loadConfig, setByEnvironment } from '../config/config.js';
import { isAlive } from '../common/processes.js';

/**
 * A control plane started on this machine, as `flotilla start` records it in <stateDir>/instances/<instance>.json
 * (removed when it stops): how later commands reach it without flags, as docker contexts and kubectl contexts do.
 */
export interface InstanceRecord {
  instance: string;
  adminUrl: string;
  httpUrl: string;
  stateDir: string;
  pid: number;
  startedAt: string;
}

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

function recordsDir(stateDir: string): string {
  return join(stateDir, 'instances');
}

function recordPath(stateDir: string, instance: string): string {
  return join(recordsDir(stateDir), `${instance}.json`);
}

/** An admin address bound to every interface is reached on loopback. */
function reachable(adminUrl: string): string {
  return adminUrl.replace(/^http:\/\/(0\.0\.0\.0|\[::\])(?=:)/, 'http://127.0.0.1');
}

/** Records this process as the instance's control plane, now listening: it becomes the current instance. */
export function recordInstance(record: Omit<InstanceRecord, 'pid' | 'startedAt'>): void {
  const path = recordPath(record.stateDir, record.instance);
  mkdirSync(recordsDir(record.stateDir), { recursive: true });
  const full: InstanceRecord = { ...record, adminUrl: reachable(record.adminUrl), pid: process.pid, startedAt: new Date().toISOString() };
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, `${JSON.stringify(full)}\n`);
  renameSync(partial, path);
}

function readRecord(path: string): InstanceRecord | undefined {
  try {
    const record = JSON.parse(readFileSync(path, 'utf8')) as InstanceRecord;
    return typeof record.adminUrl === 'string' && Number.isInteger(record.pid) ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Removes the instance's record if this process wrote it (a later start may have replaced it). */
export function forgetInstance(stateDir: string, instance: string): void {
  const path = recordPath(stateDir, instance);
  if (readRecord(path)?.pid === process.pid) rmSync(path, { force: true });
}

/** The recorded instances whose process still runs, the last started first. */
export function runningInstances(stateDir: string): InstanceRecord[] {
  let names: string[];
  try {
    names = readdirSync(recordsDir(stateDir)).filter((name) => name.endsWith('.json'));
  } catch {
    return [];
  }
  return names
    .map((name) => readRecord(join(recordsDir(stateDir), name)))
    .filter((record): record is InstanceRecord => record !== undefined && isAlive(record.pid))
    .sort((a, b) => (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0));
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
