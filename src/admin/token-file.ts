import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Files that only the user running Flotilla can read, in <stateDir>/admin/
 * (mode 0700): the admin token a control plane generated at start
 * (<instance>.token) and the options handed to a detached start. Each is
 * written whole with mode 0600 and renamed into place, so a reader never sees
 * a partial file or one that others could read.
 */
export function adminDir(stateDir: string): string {
  const dir = join(stateDir, 'admin');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  return dir;
}

export function tokenPath(stateDir: string, instance: string): string {
  return join(stateDir, 'admin', `${instance}.token`);
}

export function writePrivateFile(path: string, text: string): void {
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, text, { mode: 0o600, flag: 'w' });
  chmodSync(partial, 0o600);
  renameSync(partial, path);
}

/** Generates a token for the instance and stores it; returns it. */
export function generateToken(stateDir: string, instance: string): string {
  adminDir(stateDir);
  const token = randomBytes(32).toString('base64url');
  writePrivateFile(tokenPath(stateDir, instance), `${token}\n`);
  return token;
}

/** The stored token of the instance, or undefined when there is none this user can read. */
export function readToken(stateDir: string, instance: string): string | undefined {
  try {
    return readFileSync(tokenPath(stateDir, instance), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Removes the stored token if it is still `token` (a later start may have replaced it). */
export function removeToken(stateDir: string, instance: string, token: string): void {
  if (readToken(stateDir, instance) === token) rmSync(tokenPath(stateDir, instance), { force: true });
}
