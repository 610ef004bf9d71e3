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
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
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

/** Packs each part in turn into one tar stream; tar-fs's `finish` hands the stream on. Entries go one at a time, in order. */
function packParts(parts: ContextPart[], digest: Hash, pack?: Pack): Pack {
  const [first, ...rest] = parts;
  if (first === undefined) throw new Error('empty build context');
  const ignore = first.ignore;
  const own = first.digest === true ? digest : undefined;
  const options: PackOptions & { sort: boolean } = {
    sort: true,
    map: normalizeHeader(first.prefix, own),
    ...(own ? { mapStream: hashing(own) } : {}),
    finalize: rest.length === 0,
    ...(ignore ? { ignore: (name: string) => ignore(relative(first.dir, name).split(sep).join('/')) } : {}),
    ...(pack ? { pack } : {}),
    ...(rest.length > 0 ? { finish: (next: Pack) => void packParts(rest, digest, next) } : {}),
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
  try {
    await pipeline(packParts(parts, digest), meter, createWriteStream(file));
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
    return !(hasExceptions && statSync(join(contextDir, path)).isDirectory());
  };
}

/** The digest of a directory's files as a pack with `digest` computes it, without writing the tar anywhere. */
export async function digestOf(part: Omit<ContextPart, 'prefix' | 'digest'>): Promise<string> {
  const digest = createHash('sha256');
  await pipeline(packParts([{ ...part, prefix: '', digest: true }], digest), new Writable({ write: (_chunk, _encoding, done) => done() }));
  return digest.digest('hex').slice(0, 16);
}
