import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BuildInfo } from '../api.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import { LABELS } from '../common/labels.js';
import { hideUrlCredentials } from '../common/redact.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import type { ContainerRuntime } from './container-runtime.js';
import { packageRoot } from '../common/package-root.js';
import { checkContextDir, contextFilter, digestOf, packContext, type ContextPart, type PackedContext } from './build-context.js';
import { BaseImages } from './base-images.js';
import { blameFile } from './build-failure.js';
import { holdTag } from './image-holds.js';

export const APP_DIR = '/app';
/** Where a function or class shipped from the caller's process is written (definition.mjs, or definition.pkl for Python). */
export const SHIPPED_DIR = `${APP_DIR}/.flotilla`;
const PYTHON_MISMATCH = 'FLOTILLA_PYTHON_MISMATCH';
const RUNTIME_DIR = '/opt/flotilla/replica';
const PYTHON_SITE_DIR = '/opt/flotilla/site-packages';
const BUILD_CA = '/tmp/flotilla-build/ca.pem';
const BUILD_NPMRC = '/tmp/flotilla-build/npmrc';
const LOCKFILES = ['package-lock.json', 'npm-shrinkwrap.json'];
const APT_PACKAGE = /^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?$/;
const TLS_FAILURE =
  /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_UNTRUSTED|self[- ]signed certificate|unable to get local issuer certificate|CERTIFICATE_VERIFY_FAILED/i;

export type ReplicaRuntimeKind = 'node' | 'python';

export interface BackendImageSource {
  backend: string;
  /** Which replica runtime serves the backend (default node). */
  runtime?: ReplicaRuntimeKind;
  /** A host directory: the image's /app, or the build context of `dockerfile`. */
  contextDir?: string;
  /** A definition shipped from the caller's process, written to SHIPPED_DIR/name. */
  shippedFile?: { name: string; content: string | Buffer };
  /** With a pickled Python definition: the caller's Python ('3.11'), which the image's python3 must match. */
  pythonVersion?: string;
  /** npm packages to install into /app/node_modules. */
  packages?: Record<string, string>;
  /** Python: pip requirement lines and Debian packages, beside the context's requirements.txt and apt.txt. */
  pip?: string[];
  apt?: string[];
  /** A Dockerfile in contextDir that makes the backend's base; Flotilla adds its runtime on top. */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
}

export type BuildSettings = Pick<
  FlotillaConfig,
  'instance' | 'baseImage' | 'pythonBaseImage' | 'buildCaFile' | 'npmRegistry' | 'maxContextMb'
>;

function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() === true;
}

/** Whether a package.json declares anything to install (a context may have one just for "type": "module"). */
function hasDependencies(manifest: string): boolean {
  if (!isFile(manifest)) return false;
  let parsed: { dependencies?: object; optionalDependencies?: object };
  try {
    parsed = JSON.parse(readFileSync(manifest, 'utf8')) as typeof parsed;
  } catch (error) {
    throw new FlotillaError('INVALID_ARGUMENT', `${manifest} is not valid JSON: ${(error as Error).message}`);
  }
  return Object.keys(parsed.dependencies ?? {}).length + Object.keys(parsed.optionalDependencies ?? {}).length > 0;
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function aptPackages(file: string): string[] {
  const names = readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((line) => line.replace(/#.*/, '').trim())
    .flatMap((line) => (line === '' ? [] : line.split(/\s+/)));
  const bad = names.filter((name) => !APT_PACKAGE.test(name));
  if (bad.length > 0) throw new FlotillaError('INVALID_ARGUMENT', `apt.txt lists invalid Debian package names: ${bad.join(', ')}`);
  return names;
}

/** What a build sends of a backend's context: its .dockerignore applied, and node_modules left out where dependencies are installed. */
function contextIgnore(source: BackendImageSource & { contextDir: string }): (path: string) => boolean {
  const context = source.contextDir;
  if (source.dockerfile !== undefined) return contextFilter(context, [source.dockerfile, '.dockerignore'], () => false);
  const installs =
    (source.runtime ?? 'node') === 'node' && (hasDependencies(join(context, 'package.json')) || source.packages !== undefined);
  return contextFilter(context, [], installs ? (path) => path === 'node_modules' || path.startsWith('node_modules/') : () => false);
}

/**
 * The digest of the files of a backend's context that its image build sends (the one `backendImage` reports), without
 * building: `flotilla deploy` compares it with the running backend's to see whether files under the context changed.
 */
export function contextDigest(source: BackendImageSource & { contextDir: string }): Promise<string> {
  checkContextDir(source.contextDir);
  return digestOf({ dir: source.contextDir, ignore: contextIgnore(source) });
}

/** A backend's image, and the digest of its context's files when it has one. */
export interface BuiltImage {
  image: string;
  contextDigest?: string;
}

const APT_INSTALL = 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends';
const APT_CLEAN = 'rm -rf /var/lib/apt/lists/*';
/** What the Python runtime needs (uvicorn, Starlette; cloudpickle for code shipped by value) and uses when it is there (httptools, uvloop). */
const PYTHON_RUNTIME_PACKAGES = 'python3 python3-uvicorn python3-starlette python3-httptools python3-uvloop python3-cloudpickle';
/** Installs the Python runtime's packages from Debian unless the image's python3 already imports them. */
const PYTHON_RUNTIME_INSTALL = `python3 -c 'import uvicorn, starlette, cloudpickle' 2>/dev/null || { ${APT_INSTALL} ${PYTHON_RUNTIME_PACKAGES} && ${APT_CLEAN}; }`;

function stageShipped(staging: string, source: BackendImageSource): void {
  mkdirSync(join(staging, 'app', '.flotilla'), { recursive: true });
  if (source.shippedFile !== undefined)
    writeFileSync(join(staging, 'app', '.flotilla', source.shippedFile.name), source.shippedFile.content);
}

/**
 * A pickle's code objects load only in the Python minor version that made them: the build stops at once when the
 * image's python3 is another, printing a marker that explainBuildFailure turns into the refusal.
 */
/** The refusal of a pickled backend whose image has another Python than the caller's, naming both and what to change. */
function explainPythonMismatch(error: unknown, source: BackendImageSource): unknown {
  const mismatch = isFlotillaError(error, 'BUILD_FAILED') ? new RegExp(`${PYTHON_MISMATCH} (\\d+\\.\\d+)`).exec(error.message) : null;
  if (mismatch === null || source.pythonVersion === undefined) return error;
  return new FlotillaError(
    'INVALID_ARGUMENT',
    `backend '${source.backend}' was shipped by value (cloudpickle) from Python ${source.pythonVersion}, but its replica image has ` +
      `Python ${mismatch[1]}, which cannot load it. Run the caller with Python ${mismatch[1]}, or give the replica Python ` +
      `${source.pythonVersion}: set pythonBaseImage (FLOTILLA_PYTHON_BASE_IMAGE) to an image with it, or use runtime_env ` +
      `{"context": DIR, "dockerfile": "Dockerfile"} with a Dockerfile FROM one; or serve the code by import path ('model.py:Model').`,
  );
}

function pythonVersionCheck(source: BackendImageSource): string[] {
  if (source.pythonVersion === undefined) return [];
  const check = `import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(0 if v == '${source.pythonVersion}' else '${PYTHON_MISMATCH} ' + v)`;
  return [`RUN python3 -c "${check}"`];
}

/**
 * Builds replica images. Tags are content hashes of everything that goes into
 * the build (files, generated Dockerfile, build args, CA), so an unchanged
 * backend never rebuilds. Images are layered: the base image, then the replica
 * runtime, then one image per distinct backend content; this instance holds
 * each with a tag of its own (image-holds.ts). Dependency installs
 * run in a separate build stage, so the build CA never reaches the final image.
 */
export class ImageBuilder {
  private readonly runtimeTags = new Map<ReplicaRuntimeKind, Promise<string>>();
  private readonly bases: BaseImages;
  private readonly building = new Set<BuildInfo>();

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly settings: BuildSettings,
    private readonly logger: Logger,
  ) {
    this.bases = new BaseImages(runtime, { node: settings.baseImage, python: settings.pythonBaseImage }, logger);
  }

  /** The image builds under way, each with the last step it reached. */
  builds(): BuildInfo[] {
    return [...this.building].map((build) => ({ ...build }));
  }

  backendImage(source: BackendImageSource): Promise<BuiltImage> {
    return this.imageOf(source).catch((error: unknown) => {
      throw explainPythonMismatch(error, source);
    });
  }

  private imageOf(source: BackendImageSource): Promise<BuiltImage> {
    const kind = source.runtime ?? 'node';
    if (source.contextDir !== undefined) checkContextDir(source.contextDir);
    if (source.dockerfile !== undefined) return this.userDockerfileImage(kind, source);
    return this.withStaging(async (staging) => {
      const runtimeTag = await this.runtimeImage(kind);
      const context = source.contextDir;
      stageShipped(staging, source);
      mkdirSync(join(staging, 'build'));
      const dockerfile =
        kind === 'node'
          ? this.nodeDockerfile(runtimeTag, staging, context, source.packages)
          : [...this.pythonDockerfile(runtimeTag, staging, context, source), ...pythonVersionCheck(source)];
      writeFileSync(join(staging, 'Dockerfile'), dockerfile.join('\n') + '\n');
      const parts: ContextPart[] = [{ dir: staging, prefix: '' }];
      if (context !== undefined)
        parts.push({ dir: context, prefix: 'app', ignore: contextIgnore({ ...source, contextDir: context }), digest: true });
      return this.build('flotilla/backend', parts, source.backend);
    }).catch((error: unknown) => {
      throw blameFile(error, { contextDir: source.contextDir });
    });
  }

  /** Node: the context's package.json (npm ci with a lockfile, else npm install) and `packages`, installed in a deps stage. */
  private nodeDockerfile(
    runtimeTag: string,
    staging: string,
    context: string | undefined,
    packages: Record<string, string> | undefined,
  ): string[] {
    const hasManifest = context !== undefined && hasDependencies(join(context, 'package.json'));
    if (!hasManifest && packages === undefined) return [`FROM ${runtimeTag}`, `COPY app/ ${APP_DIR}/`];
    const deps = join(staging, 'build', 'deps');
    mkdirSync(deps);
    const commands: string[] = [];
    // npm's own retry timeouts (10 s, then 60 s) make a registry that cannot be reached fail only after 70 s.
    const flags = '--omit=dev --no-audit --no-fund --loglevel=warn --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000';
    if (hasManifest) {
      for (const file of ['package.json', ...LOCKFILES].filter((name) => isFile(join(context, name)))) {
        copyFileSync(join(context, file), join(deps, file));
      }
      const locked = LOCKFILES.some((file) => isFile(join(context, file)));
      commands.push(locked ? `npm ci ${flags}` : `npm install ${flags}`);
      if (packages !== undefined) {
        const specs = Object.entries(packages).map(([name, version]) => shellQuote(`${name}@${version}`));
        commands.push(`npm install --no-save ${flags} ${specs.join(' ')}`);
      }
    } else {
      writeFileSync(join(deps, 'package.json'), JSON.stringify({ private: true, dependencies: packages }, null, 2) + '\n');
      commands.push(`npm install ${flags}`);
    }
    const env = this.installEnv(staging, [
      ...(this.settings.buildCaFile !== '' ? [`NODE_EXTRA_CA_CERTS=${BUILD_CA}`] : []),
      ...(this.settings.npmRegistry !== '' ? [`npm_config_userconfig=${BUILD_NPMRC}`] : []),
    ]);
    // The registry (credentials and all) in a file of the deps stage, not in a RUN line that the build prints and keeps.
    if (this.settings.npmRegistry !== '')
      writeFileSync(join(staging, 'build', 'npmrc'), `registry=${this.settings.npmRegistry}\n`, { mode: 0o600 });
    // Installed in the image: the host's own node_modules (built for the host) is not sent (contextIgnore).
    return [
      `FROM ${runtimeTag} AS deps`,
      `WORKDIR ${APP_DIR}`,
      `COPY build/ /tmp/flotilla-build/`,
      `RUN cp /tmp/flotilla-build/deps/* ${APP_DIR}/ && ${commands.map((c) => `${env}${c}`).join(' && ')} && mkdir -p node_modules`,
      `FROM ${runtimeTag}`,
      `COPY app/ ${APP_DIR}/`,
      `COPY --from=deps ${APP_DIR}/node_modules ${APP_DIR}/node_modules`,
    ];
  }

  /** Python: apt.txt (Debian packages) into the image, requirements.txt with pip in a stage of its own. */
  private pythonDockerfile(
    runtimeTag: string,
    staging: string,
    context: string | undefined,
    { pip = [], apt: extraApt = [] }: Pick<BackendImageSource, 'pip' | 'apt'>,
  ): string[] {
    const lines = [`FROM ${runtimeTag} AS system`];
    const apt = [...(context !== undefined && isFile(join(context, 'apt.txt')) ? aptPackages(join(context, 'apt.txt')) : []), ...extraApt];
    if (apt.length > 0) lines.push(`RUN ${APT_INSTALL} ${apt.join(' ')} && ${APT_CLEAN}`);
    const file = context !== undefined && isFile(join(context, 'requirements.txt')) ? join(context, 'requirements.txt') : undefined;
    const requirements = [...(file === undefined ? [] : [readFileSync(file, 'utf8').trimEnd()]), ...pip];
    if (requirements.length > 0) {
      writeFileSync(join(staging, 'build', 'requirements.txt'), requirements.join('\n') + '\n');
      const env = this.installEnv(staging, this.settings.buildCaFile !== '' ? [`PIP_CERT=${BUILD_CA}`] : []);
      lines.push(
        'FROM system AS pip',
        `RUN ${APT_INSTALL} python3-pip && ${APT_CLEAN}`,
        'COPY build/ /tmp/flotilla-build/',
        `RUN ${env}python3 -m pip install --no-cache-dir --disable-pip-version-check --target ${PYTHON_SITE_DIR} -r /tmp/flotilla-build/requirements.txt`,
        'FROM system',
        `COPY --from=pip ${PYTHON_SITE_DIR} ${PYTHON_SITE_DIR}`,
      );
    }
    lines.push(`COPY app/ ${APP_DIR}/`);
    return lines;
  }

  /** Environment assignments for an install command; the CA file is copied into the build stage (staging/build). */
  private installEnv(staging: string, assignments: string[]): string {
    if (this.settings.buildCaFile !== '') copyFileSync(this.settings.buildCaFile, join(staging, 'build', 'ca.pem'));
    return assignments.length === 0 ? '' : `${assignments.join(' ')} `;
  }

  /**
   * A user Dockerfile, built from the context with the build arg
   * FLOTILLA_BASE_IMAGE (the configured base of this runtime), makes the
   * backend's base; Flotilla then adds its runtime, the shipped module and the
   * command. /app is left as the Dockerfile made it.
   */
  private async userDockerfileImage(kind: ReplicaRuntimeKind, source: BackendImageSource): Promise<BuiltImage> {
    const context = source.contextDir as string;
    const dockerfile = source.dockerfile as string;
    if (!isFile(join(context, dockerfile))) {
      throw new FlotillaError('INVALID_ARGUMENT', `replicaOptions.runtimeEnv.dockerfile '${dockerfile}' is not a file in ${context}`);
    }
    const buildArgs = { FLOTILLA_BASE_IMAGE: await this.bases.of(kind), ...source.buildArgs };
    const user = await this.build(
      'flotilla/user',
      [{ dir: context, prefix: '', ignore: contextIgnore({ ...source, contextDir: context }), digest: true }],
      source.backend,
      { dockerfile, buildArgs },
    ).catch((error: unknown) => {
      throw blameFile(error, { contextDir: context, dockerfile });
    });
    const built = await this.withStaging(async (staging) => {
      this.stageRuntime(kind, join(staging, 'replica'));
      stageShipped(staging, source);
      const install = kind === 'python' ? ['USER root', ...pythonVersionCheck(source), `RUN ${PYTHON_RUNTIME_INSTALL}`] : [];
      writeFileSync(join(staging, 'Dockerfile'), [`FROM ${user.image}`, ...install, ...this.runtimeLayer(kind)].join('\n') + '\n');
      return this.build('flotilla/backend', [{ dir: staging, prefix: '' }], source.backend);
    });
    return { ...built, ...(user.contextDigest === undefined ? {} : { contextDigest: user.contextDigest }) };
  }

  /** Writes the runtime's files into `dir`. */
  private stageRuntime(kind: ReplicaRuntimeKind, dir: string): void {
    mkdirSync(dir, { recursive: true });
    if (kind === 'python') {
      copyFileSync(join(packageRoot(), 'images', 'python-replica', 'flotilla_replica.py'), join(dir, 'flotilla_replica.py'));
      // The client package, so that user code written as for Ray (`from flotilla import serve`) imports in the replica.
      const clientPackage = join(packageRoot(), 'python', 'flotilla');
      if (existsSync(clientPackage)) {
        cpSync(clientPackage, join(dir, 'flotilla'), { recursive: true, filter: (path) => !path.includes('__pycache__') });
      }
      return;
    }
    const compiled = join(packageRoot(), 'dist', 'src', 'replica');
    if (!existsSync(join(compiled, 'main.js'))) {
      throw new FlotillaError('BUILD_FAILED', `the replica runtime is not compiled (${compiled}); run npm run build`);
    }
    for (const file of readdirSync(compiled).filter((name) => name.endsWith('.js'))) {
      copyFileSync(join(compiled, file), join(dir, file));
    }
    writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  }

  /** Dockerfile lines that install the staged runtime (staging/replica) and app (staging/app) and set the command. */
  private runtimeLayer(kind: ReplicaRuntimeKind): string[] {
    const common = [`COPY replica/ ${RUNTIME_DIR}/`, `COPY app/ ${APP_DIR}/`, 'ENV OMP_NUM_THREADS=1', `WORKDIR ${APP_DIR}`];
    if (kind === 'node') return [...common, `CMD ["node", "--experimental-detect-module", "${RUNTIME_DIR}/main.js"]`];
    return [
      ...common,
      `ENV PYTHONPATH=${RUNTIME_DIR}:${PYTHON_SITE_DIR} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1`,
      `CMD ["python3", "${RUNTIME_DIR}/flotilla_replica.py"]`,
    ];
  }

  private runtimeImage(kind: ReplicaRuntimeKind): Promise<string> {
    let tag = this.runtimeTags.get(kind);
    if (tag === undefined) {
      tag = this.withStaging(async (staging) => {
        this.stageRuntime(kind, join(staging, 'replica'));
        mkdirSync(join(staging, 'app'));
        const install = kind === 'python' ? [`RUN ${PYTHON_RUNTIME_INSTALL}`] : [];
        writeFileSync(
          join(staging, 'Dockerfile'),
          [`FROM ${await this.bases.of(kind)}`, ...install, ...this.runtimeLayer(kind)].join('\n') + '\n',
        );
        return (await this.build(`flotilla/replica-${kind}`, [{ dir: staging, prefix: '' }], 'runtime')).image;
      });
      this.runtimeTags.set(kind, tag);
      tag.catch(() => this.runtimeTags.delete(kind));
    }
    return tag;
  }

  private async build(
    repository: string,
    parts: ContextPart[],
    backend: string,
    options: { dockerfile?: string; buildArgs?: Record<string, string> } = {},
  ): Promise<BuiltImage> {
    const maxBytes = this.settings.maxContextMb * 1024 * 1024;
    const packed = await packContext(parts, { salt: JSON.stringify(options), maxBytes, what: `backend '${backend}'` });
    try {
      const image = await this.buildPacked(repository, packed, backend, options);
      return { image, ...(packed.digest === undefined ? {} : { contextDigest: packed.digest }) };
    } finally {
      packed.dispose();
    }
  }

  private async buildPacked(
    repository: string,
    packed: PackedContext,
    backend: string,
    options: { dockerfile?: string; buildArgs?: Record<string, string> },
  ): Promise<string> {
    const tag = `${repository}:${packed.hash}`;
    const log = this.logger.child({ component: 'image-builder', backend, image: tag });
    if (await this.runtime.imageExists(tag)) {
      log.debug('image up to date');
      await this.runtime.tagImage(tag, holdTag(tag, this.settings.instance));
      return tag;
    }
    log.info('building image');
    const started = Date.now();
    const build: BuildInfo = { backend, image: tag, step: null, startedAt: new Date(started).toISOString() };
    this.building.add(build);
    try {
      await this.runtime.buildImage({
        tag,
        context: packed.open(),
        labels: { [LABELS.managed]: 'true' },
        ...options,
        onLog: (raw) => {
          const line = hideUrlCredentials(raw);
          if (!/^Step \d+\/\d+ :/.test(line)) return log.debug(line);
          build.step = line;
          log.info(line, { seconds: Math.round((Date.now() - started) / 100) / 10 });
        },
      });
    } catch (error) {
      throw this.explainBuildFailure(error);
    } finally {
      this.building.delete(build);
    }
    log.info('image built', { seconds: (Date.now() - started) / 1000 });
    await this.runtime.tagImage(tag, holdTag(tag, this.settings.instance));
    return tag;
  }

  /** A dependency install that failed on the registry's certificate says which setting hands the build a CA. */
  private explainBuildFailure(error: unknown): unknown {
    if (!isFlotillaError(error, 'BUILD_FAILED') || !TLS_FAILURE.test(error.message)) return error;
    const advice =
      this.settings.buildCaFile === ''
        ? 'the package registry presented a certificate the build does not trust (a TLS-intercepting proxy?). ' +
          'Set FLOTILLA_BUILD_CA_FILE (option buildCaFile) to a PEM bundle with that CA, e.g. the file in NODE_EXTRA_CA_CERTS'
        : `the package registry presented a certificate that FLOTILLA_BUILD_CA_FILE (${this.settings.buildCaFile}) does not trust; ` +
          "point it at a PEM bundle that holds your proxy's CA";
    return new FlotillaError('BUILD_FAILED', `${advice}.\n${error.message}`, error.details);
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
