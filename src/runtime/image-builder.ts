import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import tar, { type Headers, type Pack, type PackOptions } from 'tar-fs';
import { FlotillaError } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import type { Logger } from '../common/logger.js';
import type { ContainerRuntime } from './container-runtime.js';

export const APP_DIR = '/app';
export const SHIPPED_MODULE = `${APP_DIR}/.flotilla/definition.mjs`;
const RUNTIME_DIR = '/opt/flotilla/replica';

export interface BackendImageSource {
  backend: string;
  /** A host directory whose files become the image's /app. */
  contextDir?: string;
  /** Module text shipped from the caller's process, written to SHIPPED_MODULE. */
  shippedModule?: string;
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the flotilla package root');
    dir = parent;
  }
  return dir;
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

type ContextPart = { dir: string; prefix: string };

/** Packs each part in turn into one tar stream; tar-fs's `finish` hands the stream on. */
function packParts(parts: ContextPart[], pack?: Pack): Pack {
  const [first, ...rest] = parts;
  if (first === undefined) throw new Error('empty build context');
  const options: PackOptions & { sort: boolean } = {
    sort: true,
    map: normalizeHeader(first.prefix),
    finalize: rest.length === 0,
    ...(pack ? { pack } : {}),
    ...(rest.length > 0 ? { finish: (next: Pack) => void packParts(rest, next) } : {}),
  };
  return tar.pack(first.dir, options);
}

/** A reproducible tar of the given directories (each under its prefix) and its content hash. */
async function packContext(parts: ContextPart[]): Promise<{ tar: Buffer; hash: string }> {
  const pack = packParts(parts);
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  return { tar: bytes, hash: createHash('sha256').update(bytes).digest('hex').slice(0, 16) };
}

/**
 * Builds replica images. Tags are content hashes of the build context, so an
 * unchanged backend never rebuilds. Images are layered: the base image, then
 * the replica runtime, then one image per distinct backend content.
 */
export class ImageBuilder {
  private runtimeTag: Promise<string> | undefined;

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly baseImage: string,
    private readonly logger: Logger,
  ) {}

  backendImage(source: BackendImageSource): Promise<string> {
    return this.withStaging(async (staging) => {
      const runtimeTag = await this.runtimeImage();
      writeFileSync(join(staging, 'Dockerfile'), `FROM ${runtimeTag}\nCOPY app/ ${APP_DIR}/\n`);
      mkdirSync(join(staging, 'app', '.flotilla'), { recursive: true });
      if (source.shippedModule !== undefined) {
        writeFileSync(join(staging, 'app', '.flotilla', 'definition.mjs'), source.shippedModule);
      }
      const parts: ContextPart[] = [{ dir: staging, prefix: '' }];
      if (source.contextDir !== undefined) parts.push({ dir: source.contextDir, prefix: 'app' });
      return this.build('flotilla/backend', parts, source.backend);
    });
  }

  private runtimeImage(): Promise<string> {
    this.runtimeTag ??= this.withStaging(async (staging) => {
      const compiled = join(packageRoot(), 'dist', 'src', 'replica');
      if (!existsSync(join(compiled, 'main.js'))) {
        throw new FlotillaError('BUILD_FAILED', `the replica runtime is not compiled (${compiled}); run npm run build`);
      }
      mkdirSync(join(staging, 'replica'));
      for (const file of readdirSync(compiled).filter((name) => name.endsWith('.js'))) {
        copyFileSync(join(compiled, file), join(staging, 'replica', file));
      }
      writeFileSync(join(staging, 'replica', 'package.json'), '{ "type": "module" }\n');
      writeFileSync(
        join(staging, 'Dockerfile'),
        [
          `FROM ${this.baseImage}`,
          `COPY replica/ ${RUNTIME_DIR}/`,
          'ENV OMP_NUM_THREADS=1',
          `WORKDIR ${APP_DIR}`,
          `CMD ["node", "--experimental-detect-module", "${RUNTIME_DIR}/main.js"]`,
          '',
        ].join('\n'),
      );
      return this.build('flotilla/replica-node', [{ dir: staging, prefix: '' }], 'runtime');
    });
    this.runtimeTag.catch(() => (this.runtimeTag = undefined));
    return this.runtimeTag;
  }

  private async build(repository: string, parts: ContextPart[], backend: string): Promise<string> {
    const { tar: context, hash } = await packContext(parts);
    const tag = `${repository}:${hash}`;
    const log = this.logger.child({ component: 'image-builder', backend, image: tag });
    if (await this.runtime.imageExists(tag)) {
      log.debug('image up to date');
      return tag;
    }
    log.info('building image');
    await this.runtime.buildImage({
      tag,
      context: Readable.from([context]),
      labels: { [LABELS.managed]: 'true' },
      onLog: (line) => log.debug(line),
    });
    log.info('image built');
    return tag;
  }

  private async withStaging<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-build-'));
    try {
      return await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
