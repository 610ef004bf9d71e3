import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { chmodSync, rmSync } from 'node:fs';
import { loadHandler, sendHandlerError, sendResult, toRequest, type Handler } from './handler.js';
import { PROTOCOL, type HealthBody, type ReplicaEntry } from './protocol.js';

/**
 * The replica runtime: runs inside each container. It answers health checks at
 * once ('starting'), loads the user's code, then serves ('ready'). If loading
 * fails it prints one JSON line naming the error and exits 1. On SIGTERM it
 * stops accepting, finishes in-flight requests and exits 0.
 */
let state: HealthBody['state'] = 'starting';
let handler: Handler | undefined;

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ component: 'replica', event, ...fields })}\n`);
}

async function serveRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.url === PROTOCOL.healthPath) {
    res.writeHead(state === 'ready' ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ state } satisfies HealthBody));
    return;
  }
  if (handler === undefined) {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'REPLICA_NOT_READY', message: 'replica is still starting' } }));
    return;
  }
  try {
    const methodHeader = req.headers[PROTOCOL.methodHeader];
    const methodName = typeof methodHeader === 'string' ? methodHeader : undefined;
    await sendResult(res, await handler(await toRequest(req, res), methodName));
  } catch (error) {
    log('handler_error', { message: error instanceof Error ? error.message : String(error) });
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
    handler = await loadHandler(entry);
    state = 'ready';
    log('ready', { module: entry.module, export: entry.exportName });
  } catch (error) {
    log('init_failed', { message: error instanceof Error ? error.message : String(error) });
    process.exit(1);
  }
}

void main();
