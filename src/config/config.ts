import convict from 'convict';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import { FlotillaError } from '../common/errors.js';

function matching(pattern: RegExp, what: string): (value: unknown) => void {
  return (value) => {
    if (typeof value !== 'string' || !pattern.test(value)) throw new Error(`must be ${what}`);
  };
}

convict.addFormat({
  name: 'period-seconds',
  coerce: (value: unknown) => Number(value),
  validate: (value: unknown) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 3600)
      throw new Error('must be an integer from 1 to 3600');
  },
});

convict.addFormat({
  name: 'positive-int',
  coerce: (value: unknown) => Number(value),
  validate: (value: unknown) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new Error('must be an integer of at least 1');
  },
});

const MAX_FRONT_DOOR_WORKERS = 64;

/** http.workers 0: half the cores, the other half left to the replicas on the same machine; 1 to 8. */
export function defaultFrontDoorWorkers(cores = availableParallelism()): number {
  return Math.min(8, Math.max(1, Math.floor(cores / 2)));
}

const schema = {
  http: {
    host: { doc: 'Address the HTTP front door binds to.', format: String, default: '127.0.0.1', env: 'FLOTILLA_HTTP_HOST' },
    port: { doc: 'Port of the HTTP front door (0 picks a free one).', format: 'port', default: 8000, env: 'FLOTILLA_HTTP_PORT' },
    publicUrl: {
      doc: "The front door's address as clients reach it (a published port, a proxy): reported as httpUrl and by flotilla status; empty for the address it listens on.",
      format: matching(/^(https?:\/\/\S+)?$/, 'an http(s) URL, or empty'),
      default: '',
      env: 'FLOTILLA_HTTP_PUBLIC_URL',
    },
    workers: {
      doc: 'Front-door worker processes sharing the port; 1 serves in the control plane process, 0 picks half the cores (1 to 8).',
      format: 'nat',
      default: 0,
      env: 'FLOTILLA_HTTP_WORKERS',
    },
    frontDoor: {
      doc: 'Where the front door runs: process (a process of its own that outlives the control plane, docs/operations.md) or in-process (in the control plane process, with its workers).',
      format: ['process', 'in-process'],
      default: 'in-process',
      env: 'FLOTILLA_HTTP_FRONT_DOOR',
    },
    maxBodyBytes: {
      doc: 'Largest request body the front door accepts; larger ones get 413.',
      format: 'nat',
      default: 10 * 1024 * 1024,
      env: 'FLOTILLA_MAX_BODY_BYTES',
    },
    maxBufferedBytes: {
      doc: 'Request body bytes the front door holds at once, over all requests; a request beyond it gets 503 OVERLOADED.',
      format: 'nat',
      default: 128 * 1024 * 1024,
      env: 'FLOTILLA_MAX_BUFFERED_BYTES',
    },
    maxConnections: {
      doc: 'Open client connections the front door accepts; further ones are closed at once.',
      format: 'nat',
      default: 4096,
      env: 'FLOTILLA_MAX_CONNECTIONS',
    },
    headersTimeoutS: {
      doc: 'Seconds a client may take to send its request headers; slower ones get 408.',
      format: 'period-seconds',
      default: 30,
      env: 'FLOTILLA_HEADERS_TIMEOUT_S',
    },
    bodyTimeoutS: {
      doc: 'Seconds a client may take to send its whole body once its request is admitted; slower ones get 408.',
      format: 'period-seconds',
      default: 60,
      env: 'FLOTILLA_BODY_TIMEOUT_S',
    },
    streamIdleTimeoutS: {
      doc: 'Seconds a streamed answer may go without a chunk once its head arrived (front door and handles); then it is cut.',
      format: 'period-seconds',
      default: 60,
      env: 'FLOTILLA_STREAM_IDLE_TIMEOUT_S',
    },
    clientStallTimeoutS: {
      doc: "Seconds a client that is behind on an answer (the front door's write buffer full) may take nothing; then its connection is cut and its replica slot released.",
      format: 'period-seconds',
      default: 30,
      env: 'FLOTILLA_CLIENT_STALL_TIMEOUT_S',
    },
    metrics: {
      doc: 'Whether the front door serves GET /-/metrics (unauthenticated); false keeps metrics on the admin API only (GET /api/metrics).',
      format: Boolean,
      default: true,
      env: 'FLOTILLA_HTTP_METRICS',
    },
    trustedProxies: {
      doc: 'Comma-separated IP addresses of proxies in front of Flotilla whose X-Forwarded-* headers are kept; empty: always replaced.',
      format: (value: unknown) => {
        if (typeof value !== 'string' || !value.split(',').every((entry) => entry.trim() === '' || isIP(entry.trim()) !== 0))
          throw new Error('must be a comma-separated list of IP addresses');
      },
      default: '',
      env: 'FLOTILLA_TRUSTED_PROXIES',
    },
  },
  handle: {
    maxResponseBytes: {
      doc: "Largest answer a handle's remote() (and the admin API's call) reads into memory; a larger one is cut and rejects with RESPONSE_TOO_LARGE (stream it instead).",
      format: 'nat',
      default: 64 * 1024 * 1024,
      env: 'FLOTILLA_HANDLE_MAX_RESPONSE_BYTES',
    },
  },
  admin: {
    host: {
      doc: 'Address the admin API binds to; anything but loopback requires a token.',
      format: String,
      default: '127.0.0.1',
      env: 'FLOTILLA_ADMIN_HOST',
    },
    port: { doc: 'Port of the admin API (0 picks a free one).', format: 'port', default: 8001, env: 'FLOTILLA_ADMIN_PORT' },
    token: {
      doc: 'Bearer token every admin API call must present; empty to use a generated one (see admin.auth).',
      format: String,
      default: '',
      env: 'FLOTILLA_ADMIN_TOKEN',
      sensitive: true,
    },
    auth: {
      doc: "'token': without admin.token, a token is generated at start and stored in <stateDir>/admin/<instance>.token; 'none': no token (loopback only).",
      format: ['token', 'none'],
      default: 'token',
      env: 'FLOTILLA_ADMIN_AUTH',
    },
    allowedHosts: {
      doc: 'Comma-separated host names the admin API answers to besides IP addresses and localhost, e.g. the name of a TLS terminator in front of it.',
      format: matching(/^([A-Za-z0-9.-]+(,[A-Za-z0-9.-]+)*)?$/, 'host names separated by commas, or empty'),
      default: '',
      env: 'FLOTILLA_ADMIN_ALLOWED_HOSTS',
    },
  },
  instance: {
    doc: 'Name of this Flotilla; containers carry it as a label, so several can share one engine.',
    format: matching(/^[a-z0-9][a-z0-9-]{0,31}$/, 'lowercase letters, digits and dashes (at most 32)'),
    default: 'default',
    env: 'FLOTILLA_INSTANCE',
  },
  stateDir: {
    doc: 'Directory for the desired-state checkpoint (state/), replica sockets (run/) and detached logs.',
    format: matching(/^\//, 'an absolute path'),
    default: join(homedir(), '.flotilla'),
    env: 'FLOTILLA_STATE_DIR',
  },
  dockerSocket: {
    doc: 'Unix socket of the Docker engine.',
    format: String,
    default: '/var/run/docker.sock',
    env: 'FLOTILLA_DOCKER_SOCKET',
  },
  runtime: {
    doc: 'The engine replicas run on: docker (the one engine at dockerSocket) or swarm (that engine is a Swarm manager; replicas are Swarm services on every node, reached over the tcp transport on swarmNetwork).',
    format: ['docker', 'swarm'],
    default: 'docker',
    env: 'FLOTILLA_RUNTIME',
  },
  swarmRegistry: {
    doc: 'With runtime swarm: the registry (host[:port]) that Flotilla pushes its images to and every node pulls them from by digest.',
    format: matching(/^([A-Za-z0-9.-]+(:\d+)?)?$/, 'host[:port], or empty'),
    default: '',
    env: 'FLOTILLA_SWARM_REGISTRY',
  },
  swarmNetwork: {
    doc: 'With runtime swarm: the overlay network that replicas and the control plane share (created if missing, not attachable).',
    format: matching(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a Docker network name'),
    default: 'flotilla-replicas',
    env: 'FLOTILLA_SWARM_NETWORK',
  },
  swarmEncrypted: {
    doc: "With runtime swarm: the overlay is encrypted (IPsec between nodes; it needs the nodes' kernels to have ESP). Flotilla creates it so, and refuses an existing one that is not.",
    format: Boolean,
    default: true,
    env: 'FLOTILLA_SWARM_ENCRYPTED',
  },
  baseImage: {
    doc: 'Node.js base image of replicas; empty picks node:20-bookworm-slim when the engine has or can pull it, else flotilla-local/node:20-bookworm-slim (built offline by scripts/base-image.sh).',
    format: String,
    default: '',
    env: 'FLOTILLA_BASE_IMAGE',
  },
  pythonBaseImage: {
    doc: 'Debian-based image that Python replica images start from (python3 is installed with apt unless it has one); empty picks debian:bookworm-slim when the engine has or can pull it, else flotilla-local/bookworm-minbase:latest (built offline by scripts/base-image.sh).',
    format: String,
    default: '',
    env: 'FLOTILLA_PYTHON_BASE_IMAGE',
  },
  buildCaFile: {
    doc: 'CA bundle (PEM) handed to dependency installs inside image builds, for registries behind a TLS-intercepting proxy; empty for none.',
    format: (value: unknown) => {
      if (typeof value !== 'string' || (value !== '' && !existsSync(value)))
        throw new Error('must be the path of an existing CA file, or empty');
    },
    default: '',
    env: 'FLOTILLA_BUILD_CA_FILE',
  },
  npmRegistry: {
    doc: "npm registry URL used by dependency installs inside image builds; empty for npm's default.",
    format: matching(/^(https?:\/\/\S+)?$/, 'an http(s) URL, or empty'),
    default: '',
    env: 'FLOTILLA_NPM_REGISTRY',
  },
  maxContextMb: {
    doc: 'Largest build context (MB, after .dockerignore) an image build sends to the engine; 0 for no limit.',
    format: 'nat',
    default: 2048,
    env: 'FLOTILLA_MAX_CONTEXT_MB',
  },
  transport: {
    doc: 'How the proxy reaches replicas: unix (a socket in a per-replica host directory) or tcp (a port published on replicaHost).',
    format: ['unix', 'tcp'],
    default: 'unix',
    env: 'FLOTILLA_TRANSPORT',
  },
  replicaHost: {
    doc: 'Host address that tcp replica ports are published on and reached at.',
    format: String,
    default: '127.0.0.1',
    env: 'FLOTILLA_REPLICA_HOST',
  },
  replicaUser: {
    doc: 'uid:gid replicas run as (never root).',
    format: matching(/^[1-9]\d*:\d+$/, 'a non-root uid:gid'),
    default: '1000:1000',
    env: 'FLOTILLA_REPLICA_USER',
  },
  replicaPidsLimit: {
    doc: 'Processes and threads each replica container may have at most (0: no limit).',
    format: 'nat',
    default: 1024,
    env: 'FLOTILLA_REPLICA_PIDS_LIMIT',
  },
  replicaLogMaxMb: {
    doc: "MiB of stdout and stderr the engine keeps per replica log file (json-file's max-size) before it rotates.",
    format: 'positive-int',
    default: 10,
    env: 'FLOTILLA_REPLICA_LOG_MAX_MB',
  },
  replicaLogFiles: {
    doc: "Log files the engine keeps per replica (json-file's max-file): the newest and the rotated ones.",
    format: 'positive-int',
    default: 3,
    env: 'FLOTILLA_REPLICA_LOG_FILES',
  },
  replicaTmpMb: {
    doc: 'MiB of the tmpfs at /tmp of replicas with a read-only root filesystem (it counts in their memory).',
    format: 'positive-int',
    default: 256,
    env: 'FLOTILLA_REPLICA_TMP_MB',
  },
  replicaNetwork: {
    doc: 'Docker bridge network replicas join, created with inter-container traffic off (shared by every instance on the engine).',
    format: matching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a Docker network name'),
    default: 'flotilla-replicas',
    env: 'FLOTILLA_REPLICA_NETWORK',
  },
  readyTimeoutS: {
    doc: 'Seconds a new replica may take to become ready before its start fails.',
    format: 'nat',
    default: 120,
    env: 'FLOTILLA_READY_TIMEOUT_S',
  },
  coldStartTimeoutS: {
    doc: 'Seconds a request to an autoscaled backend with no ready replica (scaled to zero) is held while one starts; then 503 COLD_START_TIMEOUT with Retry-After.',
    format: 'period-seconds',
    default: 60,
    env: 'FLOTILLA_COLD_START_TIMEOUT_S',
  },
  rolloutMaxSurge: {
    doc: 'Replicas of a new version a rolling update may start beyond numReplicas; 0, or no room on the machine, replaces replicas in place one at a time.',
    format: 'nat',
    default: 1,
    env: 'FLOTILLA_ROLLOUT_MAX_SURGE',
  },
  rolloutOnFailure: {
    doc: 'What a rolling update does when a replica of the new version fails to start or fails health checks: rollback to the last good version, or pause with the old replicas serving.',
    format: ['rollback', 'pause'],
    default: 'rollback',
    env: 'FLOTILLA_ROLLOUT_ON_FAILURE',
  },
  engineTimeoutS: {
    doc: 'Seconds any one call to the Docker engine may take (a stop also gets its grace period); one that takes longer fails with ENGINE_UNAVAILABLE.',
    format: 'period-seconds',
    default: 30,
    env: 'FLOTILLA_ENGINE_TIMEOUT_S',
  },
  maxConcurrentReplicaOps: {
    doc: 'Container starts and stops that may run at once, across all backends (readiness waits and drains do not count).',
    format: 'period-seconds',
    default: 8,
    env: 'FLOTILLA_MAX_CONCURRENT_REPLICA_OPS',
  },
  cpuCapacity: {
    doc: "CPUs that replicas may reserve in all; 0 detects the machine's CPUs.",
    format: 'nat',
    default: 0,
    env: 'FLOTILLA_CPUS',
  },
  memoryCapacityMb: {
    doc: "Memory (MB) that replicas may reserve in all; 0 detects the machine's memory.",
    format: 'nat',
    default: 0,
    env: 'FLOTILLA_MEMORY_MB',
  },
  gpus: {
    doc: "GPU inventory: 'auto' asks nvidia-smi, 'none' has none, or a list of ids with optional names: '0,1' or '0=A100,1=A100'.",
    format: matching(
      /^(auto|none|[A-Za-z0-9-]+(=[^,]+)?(,[A-Za-z0-9-]+(=[^,]+)?)*)$/,
      "'auto', 'none' or a list like '0,1' or '0=A100,1=T4'",
    ),
    default: 'auto',
    env: 'FLOTILLA_GPUS',
  },
  healthCheckPeriodS: {
    doc: 'Seconds between liveness checks of every replica; a replica that exits or fails 3 checks in a row is replaced.',
    format: 'period-seconds',
    default: 2,
    env: 'FLOTILLA_HEALTH_CHECK_PERIOD_S',
  },
  eventHistory: {
    doc: 'Events the control plane keeps (in memory and in <stateDir>/state/<instance>.events.jsonl); older ones are dropped.',
    format: (value: unknown) => {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 10 || value > 100_000)
        throw new Error('must be an integer from 10 to 100000');
    },
    default: 1000,
    env: 'FLOTILLA_EVENT_HISTORY',
  },
  logLevel: { doc: 'winston log level.', format: ['error', 'warn', 'info', 'debug'], default: 'info', env: 'FLOTILLA_LOG_LEVEL' },
  logFormat: {
    doc: 'Log lines: text (readable) or json; auto is text when stderr is a terminal, else json.',
    format: ['auto', 'json', 'text'],
    default: 'auto',
    env: 'FLOTILLA_LOG_FORMAT',
  },
};

export interface FlotillaConfig {
  http: {
    host: string;
    port: number;
    publicUrl: string;
    workers: number;
    frontDoor: 'process' | 'in-process';
    maxBodyBytes: number;
    maxBufferedBytes: number;
    maxConnections: number;
    headersTimeoutS: number;
    bodyTimeoutS: number;
    streamIdleTimeoutS: number;
    clientStallTimeoutS: number;
    metrics: boolean;
    trustedProxies: string;
  };
  handle: { maxResponseBytes: number };
  admin: { host: string; port: number; token: string; auth: 'token' | 'none'; allowedHosts: string };
  instance: string;
  stateDir: string;
  dockerSocket: string;
  runtime: 'docker' | 'swarm';
  swarmRegistry: string;
  swarmNetwork: string;
  swarmEncrypted: boolean;
  baseImage: string;
  pythonBaseImage: string;
  buildCaFile: string;
  npmRegistry: string;
  maxContextMb: number;
  transport: 'unix' | 'tcp';
  replicaHost: string;
  replicaUser: string;
  replicaPidsLimit: number;
  replicaLogMaxMb: number;
  replicaLogFiles: number;
  replicaTmpMb: number;
  replicaNetwork: string;
  readyTimeoutS: number;
  coldStartTimeoutS: number;
  rolloutMaxSurge: number;
  rolloutOnFailure: 'rollback' | 'pause';
  engineTimeoutS: number;
  maxConcurrentReplicaOps: number;
  healthCheckPeriodS: number;
  cpuCapacity: number;
  memoryCapacityMb: number;
  gpus: string;
  eventHistory: number;
  logLevel: 'error' | 'warn' | 'info' | 'debug';
  logFormat: 'auto' | 'json' | 'text';
}

export type ConfigOverrides = Partial<Omit<FlotillaConfig, 'http' | 'handle' | 'admin'>> & {
  http?: Partial<FlotillaConfig['http']>;
  handle?: Partial<FlotillaConfig['handle']>;
  admin?: Partial<FlotillaConfig['admin']>;
};

function leaves(value: Record<string, unknown>, prefix = ''): Array<[string, unknown]> {
  return Object.entries(value).flatMap(([key, child]) =>
    typeof child === 'object' && child !== null && !Array.isArray(child)
      ? leaves(child as Record<string, unknown>, `${prefix}${key}.`)
      : [[`${prefix}${key}`, child] as [string, unknown]],
  );
}

/** Whether a FLOTILLA_* variable of this process sets the setting (rather than its default leaving it). */
export function setByEnvironment(key: 'instance' | 'stateDir' | 'admin.host' | 'admin.port'): boolean {
  const variable = {
    instance: schema.instance,
    stateDir: schema.stateDir,
    'admin.host': schema.admin.host,
    'admin.port': schema.admin.port,
  }[key].env;
  return (process.env[variable] ?? '') !== '';
}

/** Defaults, then FLOTILLA_* environment variables, then explicit overrides; validated strictly. */
export function loadConfig(overrides: ConfigOverrides = {}): FlotillaConfig {
  const config = convict(schema);
  try {
    for (const [key, value] of leaves(overrides)) config.set(key, value);
    config.validate({ allowed: 'strict' });
  } catch (error) {
    throw new FlotillaError('INVALID_ARGUMENT', `invalid Flotilla configuration: ${(error as Error).message}`);
  }
  const properties = config.getProperties() as FlotillaConfig;
  if (properties.runtime === 'swarm' && properties.swarmRegistry === '') {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      'invalid Flotilla configuration: runtime swarm needs swarmRegistry (FLOTILLA_SWARM_REGISTRY), the registry every node pulls images from',
    );
  }
  if (properties.http.workers > MAX_FRONT_DOOR_WORKERS) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `invalid Flotilla configuration: http.workers (FLOTILLA_HTTP_WORKERS) must be at most ${MAX_FRONT_DOOR_WORKERS}, not ${properties.http.workers}`,
    );
  }
  if (properties.http.workers === 0) properties.http.workers = defaultFrontDoorWorkers();
  const { workers, maxBufferedBytes, maxBodyBytes } = properties.http;
  if (workers > 1 && Math.floor(maxBufferedBytes / workers) < maxBodyBytes) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `invalid Flotilla configuration: each of the ${workers} front-door workers holds at most maxBufferedBytes / workers = ${Math.floor(maxBufferedBytes / workers)} body bytes, less than http.maxBodyBytes (${maxBodyBytes}), so larger bodies could never be admitted: raise http.maxBufferedBytes (FLOTILLA_MAX_BUFFERED_BYTES) to at least ${workers * maxBodyBytes}, lower http.maxBodyBytes (FLOTILLA_MAX_BODY_BYTES), or run fewer http.workers (FLOTILLA_HTTP_WORKERS)`,
    );
  }
  // Replicas on other nodes are reached over the overlay network only.
  if (properties.runtime === 'swarm') properties.transport = 'tcp';
  return properties;
}

/** What a front-door worker's environment keeps of this process's: nothing secret (no admin token, no registry credentials). */
const WORKER_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'NODE_OPTIONS'];

/** The environment front-door workers start with: WORKER_ENV only; they get their settings over IPC. */
export function frontDoorWorkerEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(WORKER_ENV.flatMap((name) => (process.env[name] === undefined ? [] : [[name, process.env[name]]])));
}
