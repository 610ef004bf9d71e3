import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

export function recordsDir(stateDir: string): string {
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
