/**
 * Build contexts. A context is packed once, as a stream, into a temporary tar
 * file while it is hashed and measured, so memory stays flat whatever its size
 * and the tag names exactly the bytes the engine gets. The tar is reproducible
 * (sorted entries, uid/gid 0, mtime 0, modes 0644/0755), so the same files give
 * the same hash and an unchanged context never rebuilds. Contexts larger than
 * the limit, the filesystem root and the home directory are refused.
 */
import dockerignore from '@balena/dockerignore';
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { createReadStream, createWriteStream, existsSync, lstatSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar, { type Headers, type Pack, type PackOptions } from 'tar-fs';
import { FlotillaError } from '../common/errors.js';

/**
 * A directory packed under `prefix`; `ignore` gets paths relative to `dir`, with '/' separators. With `digest`, the
 * pack also hashes the part's own entries (names, types, modes, contents), whatever its prefix and the other parts.
 */
export type ContextPart = { dir: string; prefix: string; ignore?: (path: string) => boolean; digest?: boolean };

export interface PackedContext {
  /** 16 hex digits of the sha256 of the tar and the salt. */
  hash: string;
  bytes: number;
  /** 16 hex digits hashing the entries of the part packed with `digest`, if one was. */
  digest: string | undefined;
  /** A fresh stream of the tar. */
  open(): Readable;
  /** Deletes the temporary tar. */
  dispose(): void;
}

export interface ContextPackOptions {
  /** What else goes into the build (Dockerfile name, build args), hashed with the files. */
  salt: string;
  /** Largest tar accepted, in bytes; 0 for no limit. */
  maxBytes: number;
  /** Whose context it is, in the message when it is too large, e.g. "backend 'echo'". */
  what: string;
}

/** Why `dir` cannot be a build context (the filesystem root or the home directory), or undefined when it can. */
export function contextDirProblem(dir: string): string | undefined {
  const real = realpathSync(dir);
  if (real === '/') return `'${dir}' is the filesystem root; a context is a directory of the backend's own files`;
  const home = existsSync(homedir()) ? realpathSync(homedir()) : homedir();
  if (real === home) return `'${dir}' is the home directory; a context is a directory of the backend's own files`;
  return undefined;
}

/** Throws INVALID_ARGUMENT (issue at replicaOptions.runtimeEnv.context) when `dir` cannot be a build context. */
export function checkContextDir(dir: string): void {
  const problem = contextDirProblem(dir);
  if (problem === undefined) return;
  throw new FlotillaError('INVALID_ARGUMENT', `replicaOptions.runtimeEnv.context: ${problem}`, {
    issues: [{ path: ['replicaOptions', 'runtimeEnv', 'context'], message: problem }],
  });
}

function normalizeHeader(prefix: string, digest: Hash | undefined) {
  return (header: Headers): Headers => {
    const executable = ((header.mode ?? 0) & 0o111) !== 0;
    header.mode = header.type === 'directory' || executable ? 0o755 : 0o644;
    digest?.update(`${header.name}\0${header.type}\0${header.mode}\0${header.size}\0`);
    if (prefix !== '') header.name = header.name === '.' ? prefix : `${prefix}/${header.name}`;
    header.uid = 0;
    header.gid = 0;
    header.mtime = new Date(0);
    return header;
  };
}

/** Passes a file's contents on, hashing them (tar-fs types the stream as the file's, but takes any readable). */
function hashing(digest: Hash): NonNullable<PackOptions['mapStream']> {
  return (stream) =>
    stream.pipe(
      new Transform({
        transform(chunk: Buffer, _encoding, done) {
          digest.update(chunk);
          done(null, chunk);
        },
      }),
    ) as unknown as ReturnType<NonNullable<PackOptions['mapStream']>>;
}

/** What tar-fs is told of an entry that vanished between its directory's listing and its lstat: a socket, which it skips. */
const VANISHED = { isDirectory: () => false, isSocket: () => true } as fs.Stats;

/**
 * The filesystem as tar-fs walks it, except that an entry deleted during the walk is skipped. tar-fs itself takes the
 * ENOENT of such an entry for the end of the directory tree and finishes the tar without the entries after it.
 */
function walkingFs(root: string): typeof fs {
  const lstat = (path: string, done: (error: NodeJS.ErrnoException | null, stats?: fs.Stats) => void): void =>
    fs.lstat(path, (error, stats) => (error?.code === 'ENOENT' && path !== root ? done(null, VANISHED) : done(error, stats)));
  return { ...fs, lstat } as typeof fs;
}

/** Packs each part in turn into one tar stream; tar-fs's `finish` hands the stream on. Entries go one at a time, in order. */
function packParts(parts: ContextPart[], digest: Hash, failures: unknown[], pack?: Pack): Pack {
  const [first, ...rest] = parts;
  if (first === undefined) throw new Error('empty build context');
  const ignore = first.ignore;
  const own = first.digest === true ? digest : undefined;
  // tar-fs calls `ignore` inside an fs callback, where a throw would be uncaught: the entry is left out, the pack fails.
  const guarded = (name: string): boolean => {
    try {
      return ignore?.(relative(first.dir, name).split(sep).join('/')) ?? false;
    } catch (error) {
      failures.push(error);
      return true;
    }
  };
  const options: PackOptions & { sort: boolean; fs: typeof fs } = {
    sort: true,
    fs: walkingFs(first.dir),
    map: normalizeHeader(first.prefix, own),
    ...(own ? { mapStream: hashing(own) } : {}),
    finalize: rest.length === 0,
    ignore: guarded,
    ...(pack ? { pack } : {}),
    ...(rest.length > 0 ? { finish: (next: Pack) => void packParts(rest, digest, failures, next) } : {}),
  };
  return tar.pack(first.dir, options);
}

function tooLarge(options: ContextPackOptions): FlotillaError {
  const mb = options.maxBytes / (1024 * 1024);
  return new FlotillaError(
    'INVALID_ARGUMENT',
    `the build context of ${options.what} is larger than FLOTILLA_MAX_CONTEXT_MB (option maxContextMb, ${mb} MB) after .dockerignore: ` +
      'list what the image does not need in its .dockerignore, or raise the setting',
    { issues: [{ path: ['replicaOptions', 'runtimeEnv', 'context'], message: `is larger than FLOTILLA_MAX_CONTEXT_MB (${mb} MB)` }] },
  );
}

/** Packs `parts` into a temporary tar, hashing and measuring it on the way. */
export async function packContext(parts: ContextPart[], options: ContextPackOptions): Promise<PackedContext> {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-context-'));
  const file = join(dir, 'context.tar');
  const hash = createHash('sha256');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      if (options.maxBytes > 0 && bytes > options.maxBytes) return done(tooLarge(options));
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const digest = createHash('sha256');
  const failures: unknown[] = [];
  try {
    await pipeline(packParts(parts, digest, failures), meter, createWriteStream(file));
    if (failures.length > 0) throw failures[0];
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    hash: hash.update(options.salt).digest('hex').slice(0, 16),
    bytes,
    digest: parts.some((part) => part.digest === true) ? digest.digest('hex').slice(0, 16) : undefined,
    open: () => createReadStream(file),
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * The context's .dockerignore as a filter (Docker's own matching rules). Paths
 * in `keep` are always sent; with `!` exceptions, excluded directories are still
 * walked so that an exception inside them can bring a file back.
 */
export function contextFilter(contextDir: string, keep: string[], alsoIgnore: (path: string) => boolean): (path: string) => boolean {
  const file = join(contextDir, '.dockerignore');
  const patterns = existsSync(file) ? readFileSync(file, 'utf8').split(/\r?\n/) : [];
  // The package is CommonJS typed as an ES default export; its function is also its own `.default`.
  const matcher = dockerignore.default().add(patterns);
  const hasExceptions = patterns.some((line) => line.trim().startsWith('!'));
  return (path) => {
    if (path === '' || keep.includes(path)) return false;
    if (alsoIgnore(path)) return true;
    if (!matcher.ignores(path)) return false;
    // A directory stays walked for the exceptions inside it; an entry gone meanwhile is no directory.
    return !(hasExceptions && lstatSync(join(contextDir, path), { throwIfNoEntry: false })?.isDirectory() === true);
  };
}

/** The digest of a directory's files as a pack with `digest` computes it, without writing the tar anywhere. */
export async function digestOf(part: Omit<ContextPart, 'prefix' | 'digest'>): Promise<string> {
  const digest = createHash('sha256');
  const failures: unknown[] = [];
  const discard = new Writable({ write: (_chunk, _encoding, done) => done() });
  await pipeline(packParts([{ ...part, prefix: '', digest: true }], digest, failures), discard);
  if (failures.length > 0) throw failures[0];
  return digest.digest('hex').slice(0, 16);
}
