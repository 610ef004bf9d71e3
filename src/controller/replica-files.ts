import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PROTOCOL, type ReplicaEntry } from '../replica/protocol.js';

/**
 * A replica's host directory, bind-mounted at /run/flotilla: its entry file (what to load, initArgs, first live config
 * and a fresh random control secret) and, with the unix transport, its socket. The directory and the file belong to
 * the replica user with modes 0700 and 0600 when the control plane runs as root (root, and so the front door in the
 * same process, still reaches the socket), or when it runs as the replica user itself. Otherwise the replica user
 * could not create its socket in a 0700 directory of ours: the directory is 0733 (others may enter and create, not
 * list) and the entry 0644, while the parent directory, ours, is 0700 in every case, so other local users cannot reach
 * either (the container sees only its bind mount). The secret stays in the entry file, so a restarted control plane reads it back with
 * readControlSecret when it adopts the replica.
 */
export function prepareReplicaFiles(hostDir: string, entry: Omit<ReplicaEntry, 'controlSecret'>, replicaUser: string): string {
  const [uid, gid] = replicaUser.split(':').map(Number) as [number, number];
  const controlSecret = randomBytes(32).toString('base64url');
  const ownUid = process.getuid?.();
  const shared = ownUid !== 0 && ownUid !== uid;
  const file = join(hostDir, PROTOCOL.entryName);
  mkdirSync(hostDir, { recursive: true, mode: 0o700 });
  chmodSync(dirname(hostDir), 0o700);
  const handleToken = randomBytes(32).toString('base64url');
  writeFileSync(file, JSON.stringify({ ...entry, controlSecret, handleToken } satisfies ReplicaEntry), { mode: 0o600, flag: 'wx' });
  if (ownUid === 0) {
    chownSync(file, uid, gid);
    chownSync(hostDir, uid, gid);
  }
  chmodSync(file, shared ? 0o644 : 0o600);
  chmodSync(hostDir, shared ? 0o733 : 0o700);
  return controlSecret;
}

/** The control secret in a replica's entry file, or undefined when the file is gone or has none. */
export function readControlSecret(hostDir: string): string | undefined {
  try {
    const entry = JSON.parse(readFileSync(join(hostDir, PROTOCOL.entryName), 'utf8')) as Partial<ReplicaEntry>;
    return typeof entry.controlSecret === 'string' ? entry.controlSecret : undefined;
  } catch {
    return undefined;
  }
}
