import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, rmSync } from 'node:fs';
import { Batcher } from './batcher.js';
import { isStream, loadBackend, sendHandlerError, sendResult, toRequest, type LoadedBackend } from './handler.js';
import { sse } from './sse.js';
import { handlesFor, type ReplicaHandle } from './handles.js';
import { PROTOCOL, type HealthBody, type LiveConfig, type ReplicaEntry } from './protocol.js';

/**
 * The replica runtime: runs inside each container. It answers health checks at
 * once ('starting'), loads the user's code and applies the entry's live config
 * (reconfigure, batching), then serves ('ready'). If any of that fails it
 * prints one JSON line naming the error and exits 1. Live config can be
 * changed with PUT /-/flotilla/config without a restart, by a caller that
 * presents the entry's control secret (403 otherwise, before and after ready).
 * On SIGTERM it stops accepting connections, finishes in-flight requests and
 * exits 0.
 */
let state: HealthBody['state'] = 'starting';
let controlSecret: Buffer | undefined;
let backend: LoadedBackend | undefined;
let batcher: Batcher<Request> | undefined;
let batchSettings = { maxBatchSize: 1, batchWaitTimeoutS: 0 };

const BATCH_STREAM =
  'a batch handler cannot stream: batching (maxBatchSize > 1) and streaming results (async iterables) do not combine; set maxBatchSize 1 or return whole values';

let handles: ((endpoint: string) => ReplicaHandle) | undefined;

/** What shipped code (and import-path modules) find as the global `serve`: the helpers that run inside a replica. */
(globalThis as { serve?: unknown }).serve ??= {
  sse,
  getHandle: (endpoint: string): ReplicaHandle => {
    if (handles === undefined) throw new Error('serve.getHandle is available once the replica has read its entry file');
    return handles(endpoint);
  },
};

class ConfigError extends Error {
  constructor(
    readonly code: 'RECONFIGURE_FAILED' | 'INVALID_CONFIG',
    message: string,
  ) {
    super(message);
  }
}

/** One JSON line on stderr, the container's log: `flotilla logs` shows it readably. */
function log(level: 'info' | 'error', event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ level, component: 'replica', event, ...fields })}\n`);
}

const REQUEST_ID_HEADER = 'x-request-id';
/** Errors already logged: a batch's failure reaches every request of the batch, and is logged with the first. */
const logged = new WeakSet<object>();

/** Logs a failure of the user's code once, with its type, stack and the request (method, path without its query, id). */
function logFailure(event: 'handler_error' | 'stream_error', error: unknown, req: IncomingMessage): void {
  if (typeof error === 'object' && error !== null) {
    if (logged.has(error)) return;
    logged.add(error);
  }
  const id = req.headers[REQUEST_ID_HEADER];
  log('error', event, {
    type: error instanceof Error ? error.name : typeof error,
    message: messageOf(error),
    ...(error instanceof Error && error.stack !== undefined ? { stack: error.stack } : {}),
    request: { method: req.method, path: (req.url ?? '/').split('?')[0], ...(typeof id === 'string' ? { id } : {}) },
  });
}

/** Whether the caller hung up before the answer was sent: what fails then is not the handler's fault. */
function callerLeft(res: ServerResponse): boolean {
  return res.destroyed && !res.writableFinished;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function applyConfig(loaded: LoadedBackend, config: LiveConfig): Promise<void> {
  const next = {
    maxBatchSize: config.maxBatchSize ?? batchSettings.maxBatchSize,
    batchWaitTimeoutS: config.batchWaitTimeoutS ?? batchSettings.batchWaitTimeoutS,
  };
  if (next.maxBatchSize > 1 && !loaded.acceptsBatch) {
    throw new ConfigError(
      'INVALID_CONFIG',
      `maxBatchSize ${next.maxBatchSize} needs a handler that accepts batches (serve.acceptBatch, or acceptsBatch = true); ${loaded.name} does not`,
    );
  }
  if (next.maxBatchSize > 1 && loaded.streams)
    throw new ConfigError('INVALID_CONFIG', `${BATCH_STREAM} (${loaded.name} is an async generator)`);
  if ('userConfig' in config) {
    if (loaded.reconfigure === undefined) {
      throw new ConfigError('INVALID_CONFIG', `userConfig needs a class with a reconfigure(userConfig) method; ${loaded.name} has none`);
    }
    try {
      await loaded.reconfigure(config.userConfig);
    } catch (error) {
      throw new ConfigError('RECONFIGURE_FAILED', `${loaded.name}.reconfigure threw: ${messageOf(error)}`);
    }
  }
  batchSettings = next;
  if (next.maxBatchSize > 1) {
    batcher ??= new Batcher(next, async (requests) => {
      const results = await loaded.callBatch(requests);
      if (isStream(results) || (Array.isArray(results) && results.some(isStream))) throw new Error(BATCH_STREAM);
      return results;
    });
    batcher.configure(next);
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function serveConfig(req: IncomingMessage, res: ServerResponse, loaded: LoadedBackend): Promise<void> {
  try {
    await applyConfig(loaded, (await readJson(req)) as LiveConfig);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  } catch (error) {
    sendHandlerError(res, error, error instanceof ConfigError ? error.code : 'INVALID_CONFIG');
  }
}

/** The positional arguments of an arguments call; JavaScript has no keyword arguments, so any is refused. */
function argumentsOf(body: unknown): unknown[] {
  const { args = [], kwargs = {} } = (body ?? {}) as { args?: unknown; kwargs?: Record<string, unknown> };
  if (!Array.isArray(args)) throw new TypeError(`${PROTOCOL.callHeader}: args needs a body {"args": [...], "kwargs": {...}}`);
  const names = Object.keys(kwargs);
  if (names.length > 0) {
    throw new TypeError(
      `a Node backend takes positional arguments only, not keyword arguments (${names.join(', ')}): pass them in an object`,
    );
  }
  return args;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Compares digests, so that neither the secret's length nor its content leaks through timing. */
function isControlCaller(req: IncomingMessage): boolean {
  const presented = req.headers[PROTOCOL.controlSecretHeader];
  return controlSecret !== undefined && typeof presented === 'string' && timingSafeEqual(digest(presented), controlSecret);
}

function refuse(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void {
  req.resume();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { code, message } }));
}

async function serveRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.url === PROTOCOL.healthPath) {
    res.writeHead(state === 'ready' ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ state } satisfies HealthBody));
    return;
  }
  const control = req.url === PROTOCOL.configPath && req.method === 'PUT';
  if (control && !isControlCaller(req)) {
    return refuse(req, res, 403, 'FORBIDDEN', `control calls need the replica's secret in ${PROTOCOL.controlSecretHeader}`);
  }
  if (backend === undefined) return refuse(req, res, 503, 'REPLICA_NOT_READY', 'replica is still starting');
  if (control) return serveConfig(req, res, backend);
  try {
    const methodHeader = req.headers[PROTOCOL.methodHeader];
    const methodName = typeof methodHeader === 'string' ? methodHeader : undefined;
    if (req.headers[PROTOCOL.callHeader] === 'args') {
      const result = await backend.callArguments(argumentsOf(await readJson(req)), methodName);
      return await sendResult(res, result, (error) => {
        if (!callerLeft(res)) logFailure('stream_error', error, req);
      });
    }
    const request = await toRequest(req, res);
    const batch = batchSettings.maxBatchSize > 1 && (methodName ?? 'call') === 'call' ? batcher : undefined;
    const result = await (batch ? batch.submit(request) : backend.call(request, methodName));
    await sendResult(res, result, (error) => {
      if (!callerLeft(res)) logFailure('stream_error', error, req);
    });
  } catch (error) {
    if (callerLeft(res)) return;
    logFailure('handler_error', error, req);
    sendHandlerError(res, error);
  }
}

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => void serveRequest(req, res));

function listen(): void {
  const socketPath = process.env[PROTOCOL.env.socket];
  if (socketPath) {
    rmSync(socketPath, { force: true });
    server.listen(socketPath, () => chmodSync(socketPath, 0o666));
  } else {
    server.listen(Number(process.env[PROTOCOL.env.port] ?? PROTOCOL.tcpPort), '0.0.0.0');
  }
}

process.on('SIGTERM', () => {
  state = 'draining';
  log('info', 'draining');
  server.close(() => process.exit(0));
});

async function main(): Promise<void> {
  listen();
  try {
    const entryFile = process.env[PROTOCOL.env.entryFile] ?? `${PROTOCOL.socketDir}/${PROTOCOL.entryName}`;
    const entry = JSON.parse(readFileSync(entryFile, 'utf8')) as ReplicaEntry;
    if (typeof entry.controlSecret !== 'string' || entry.controlSecret === '') throw new Error(`${entryFile} has no controlSecret`);
    controlSecret = digest(entry.controlSecret);
    handles = handlesFor(entryFile, entry.handleToken);
    const loaded = await loadBackend(entry);
    await applyConfig(loaded, entry);
    backend = loaded;
    state = 'ready';
    log('info', 'ready', { module: entry.module, export: entry.exportName });
  } catch (error) {
    log('error', PROTOCOL.initFailedEvent, {
      message: messageOf(error),
      ...(error instanceof Error && error.stack !== undefined ? { stack: error.stack } : {}),
    });
    process.exit(1);
  }
}

void main();
