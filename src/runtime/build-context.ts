/**
 * Build contexts. A context is packed once, as a stream, into a temporary tar
 * file while it is hashed and measured, so memory stays flat whatever its size
 * and the tag names exactly the bytes the engine gets. The tar is reproducible
 * (sorted entries, uid/gid 0, mtime 0, modes 0644/0755), so the same files give
 * the same hash and an unchanged context never rebuilds. Contexts larger than
 * the limit, the filesystem root and the home directory are refused.
 */
import dockerignore from '@balena/dockerignore';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar, { type Headers, type Pack, type PackOptions } from 'tar-fs';
import { FlotillaError } from '../common/errors.js';

/** A directory packed under `prefix`; `ignore` gets paths relative to `dir`, with '/' separators. */
export type ContextPart = { dir: string; prefix: string; ignore?: (path: string) => boolean };

export interface PackedContext {
  /** 16 hex digits of the sha256 of the tar and the salt. */
  hash: string;
  bytes: number;
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

function normalizeHeader(prefix: string) {
  return (header: Headers): Headers => {
    const executable = ((header.mode ?? 0) & 0o111) !== 0;
    if (prefix !== '') header.name = header.name === '.' ? prefix : `${prefix}/${header.name}`;
    header.uid = 0;
    header.gid = 0;
    header.mtime = new Date(0);
    header.mode = header.type === 'directory' || executable ? 0o755 : 0o644;
    return header;
  };
}

/** Packs each part in turn into one tar stream; tar-fs's `finish` hands the stream on. */
function packParts(parts: ContextPart[], pack?: Pack): Pack {
  const [first, ...rest] = parts;
  if (first === undefined) throw new Error('empty build context');
  const ignore = first.ignore;
  const options: PackOptions & { sort: boolean } = {
    sort: true,
    map: normalizeHeader(first.prefix),
    finalize: rest.length === 0,
    ...(ignore ? { ignore: (name: string) => ignore(relative(first.dir, name).split(sep).join('/')) } : {}),
    ...(pack ? { pack } : {}),
    ...(rest.length > 0 ? { finish: (next: Pack) => void packParts(rest, next) } : {}),
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
  try {
    await pipeline(packParts(parts), meter, createWriteStream(file));
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    hash: hash.update(options.salt).digest('hex').slice(0, 16),
    bytes,
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

/**
 * The hash of a context's files as an image build packs them (.dockerignore honoured): what a backend was built from,
 * compared by `flotilla deploy` to see whether the files under a context changed.
 */
export async function contextDigest(dir: string): Promise<string> {
  checkContextDir(dir);
  const packed = await packContext([{ dir, prefix: '', ignore: contextFilter(dir, ['.dockerignore'], () => false) }], {
    salt: '',
    maxBytes: 0,
    what: `context ${dir}`,
  });
  packed.dispose();
  return packed.hash;
}
