/**
 * The replica protocol (docs/protocol.md): what any image must speak to be a
 * Flotilla replica. Shared by the in-container runtime and the orchestrator,
 * so this file imports nothing.
 */
export const PROTOCOL = {
  healthPath: '/-/flotilla/health',
  configPath: '/-/flotilla/config',
  methodHeader: 'x-flotilla-method',
  /** Sent by the front door for a variable route: its path parameters as a JSON object of strings, non-ASCII as \uXXXX. */
  pathParamsHeader: 'x-flotilla-path-params',
  /** 'args' on a handle call that passes its own arguments: the body is {"args": [...], "kwargs": {...}} (JSON). */
  callHeader: 'x-flotilla-call',
  /** 'handler' on a 500 whose body is a HandlerErrorBody; as a trailer of a streamed body, the failure midway (errorTrailer). */
  errorHeader: 'x-flotilla-error',
  /** Sent by the control plane on every control call (PUT configPath): the entry's controlSecret. */
  controlSecretHeader: 'x-flotilla-control-secret',
  /** Handle calls from the replica (composition): a unix socket the control plane serves in socketDir, POST handleCallPath. */
  handleSocketName: 'handle.sock',
  handleCallPath: '/call',
  /** Every handle call carries the entry's handleToken in it; the handle socket refuses anything else with 403. */
  handleTokenHeader: 'x-flotilla-handle-token',
  socketDir: '/run/flotilla',
  socketName: 'replica.sock',
  entryName: 'entry.json',
  tcpPort: 8000,
  /** The `event` of the JSON line a replica prints on stderr when it cannot load or construct the backend, with a `message`. */
  initFailedEvent: 'init_failed',
  env: {
    entryFile: 'FLOTILLA_ENTRY_FILE',
    socket: 'FLOTILLA_SOCKET',
    port: 'FLOTILLA_PORT',
  },
} as const;

/** The settings a live replica can be given without a restart (PUT configPath, any subset). */
export interface LiveConfig {
  /** Present: passed to the class's reconfigure(userConfig). */
  userConfig?: unknown;
  maxBatchSize?: number;
  batchWaitTimeoutS?: number;
}

/** What a replica loads: a module inside the image, one of its exports, constructor arguments, and its first live config. */
export interface ReplicaEntry extends LiveConfig {
  module: string;
  exportName: string;
  initArgs: unknown[];
  /** Control calls must carry it in controlSecretHeader; anything else is refused with 403. */
  controlSecret: string;
  /** Handle calls to handleSocketName must carry it in handleTokenHeader (composition). */
  handleToken?: string;
}

export interface HealthBody {
  state: 'starting' | 'ready' | 'draining';
}

export interface HandlerErrorBody {
  error: { code: 'HANDLER_ERROR' | 'RECONFIGURE_FAILED' | 'INVALID_CONFIG'; type: string; message: string };
}

/** A streamed body that failed midway ends with errorHeader as a trailer: the error's text, percent-encoded. */
export function errorTrailer(message: string): string {
  return encodeURIComponent(message);
}

export function readErrorTrailer(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
