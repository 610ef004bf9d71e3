import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { chmodSync, rmSync } from 'node:fs';
import { Batcher } from './batcher.js';
import { loadBackend, sendHandlerError, sendResult, toRequest, type LoadedBackend } from './handler.js';
import { PROTOCOL, type HealthBody, type LiveConfig, type ReplicaEntry } from './protocol.js';

/**
 * The replica runtime: runs inside each container. It answers health checks at
 * once ('starting'), loads the user's code and applies the entry's live config
 * (reconfigure, batching), then serves ('ready'). If any of that fails it
 * prints one JSON line naming the error and exits 1. Live config can be
 * changed with PUT /-/flotilla/config without a restart. On SIGTERM it stops
 * accepting connections, finishes in-flight requests and exits 0.
 */
let state: HealthBody['state'] = 'starting';
let backend: LoadedBackend | undefined;
let batcher: Batcher<Request> | undefined;
let batchSettings = { maxBatchSize: 1, batchWaitTimeoutS: 0 };

class ConfigError extends Error {
  constructor(
    readonly code: 'RECONFIGURE_FAILED' | 'INVALID_CONFIG',
    message: string,
  ) {
    super(message);
  }
}

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ component: 'replica', event, ...fields })}\n`);
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
    batcher ??= new Batcher(next, (requests) => loaded.callBatch(requests));
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

async function serveRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.url === PROTOCOL.healthPath) {
    res.writeHead(state === 'ready' ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ state } satisfies HealthBody));
    return;
  }
  if (backend === undefined) {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'REPLICA_NOT_READY', message: 'replica is still starting' } }));
    return;
  }
  if (req.url === PROTOCOL.configPath && req.method === 'PUT') return serveConfig(req, res, backend);
  try {
    const methodHeader = req.headers[PROTOCOL.methodHeader];
    const methodName = typeof methodHeader === 'string' ? methodHeader : undefined;
    const request = await toRequest(req, res);
    const batch = batchSettings.maxBatchSize > 1 && (methodName ?? 'call') === 'call' ? batcher : undefined;
    await sendResult(res, await (batch ? batch.submit(request) : backend.call(request, methodName)));
  } catch (error) {
    log('handler_error', { message: messageOf(error) });
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
  log('draining');
  server.close(() => process.exit(0));
});

async function main(): Promise<void> {
  listen();
  try {
    const entry = JSON.parse(process.env[PROTOCOL.env.entry] ?? '') as ReplicaEntry;
    const loaded = await loadBackend(entry);
    await applyConfig(loaded, entry);
    backend = loaded;
    state = 'ready';
    log('ready', { module: entry.module, export: entry.exportName });
  } catch (error) {
    log('init_failed', { message: messageOf(error) });
    process.exit(1);
  }
}

void main();
