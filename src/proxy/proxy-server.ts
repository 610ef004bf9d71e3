import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { listenOn } from '../common/checks.js';
import { settlesWithin } from '../common/clock.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { PROTOCOL } from '../replica/protocol.js';
import type { Dispatcher } from './dispatcher.js';
import { sendError, sendJson } from '../common/http-json.js';
import { InFlight } from './in-flight.js';
import { ProxyEngine } from './proxy-engine.js';
import { MAX_ATTEMPTS, mayRetry } from './retry.js';
import type { Outcome } from './shadow.js';
import type { RouteEntry } from './route-table.js';

export const SHARD_KEY_HEADER = 'x-serve-shard-key';
const ALL = '*';

/** Reads the whole body, or answers undefined as soon as it is known to exceed `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * The HTTP front door: route, method check, body limit, traffic policy,
 * replica router, forward. A request whose replica fails at the connection
 * level is sent to another replica when that is safe (see retry.ts) and
 * answered 502 otherwise; it never hangs.
 */
export class ProxyServer {
  private readonly server: Server;
  private readonly engine: ProxyEngine;
  private readonly requests = new InFlight();

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly maxBodyBytes: number,
    private readonly logger: Logger,
    private readonly renderMetrics?: () => Promise<{ contentType: string; body: string }>,
  ) {
    this.engine = new ProxyEngine(dispatcher.agent);
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 65_000;
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const address = await listenOn(this.server, host, port, 'the HTTP front door');
    this.logger.info('front door listening', { component: 'proxy', ...address });
    return address;
  }

  /** Stops accepting, lets requests in flight finish for up to graceMs, then closes every connection. */
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await settlesWithin(this.requests.idle(ALL), graceMs);
    this.server.closeAllConnections();
    await closed;
    this.engine.close();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.once('close', this.requests.enter(ALL));
    const path = new URL(req.url ?? '/', 'http://front-door').pathname;
    if (path === '/-/healthz') return sendJson(res, 200, { status: 'ok' });
    if (path === '/-/metrics' && this.renderMetrics !== undefined) {
      const { contentType, body } = await this.renderMetrics();
      res.writeHead(200, { 'content-type': contentType });
      res.end(body);
      return;
    }
    if (path === '/-/routes') {
      const routes = Object.fromEntries(this.dispatcher.listRoutes().map((r) => [r.route, { endpoint: r.endpoint, methods: r.methods }]));
      return sendJson(res, 200, routes);
    }
    const route = this.dispatcher.matchRoute(path);
    if (route === undefined) {
      return sendError(res, new FlotillaError('ROUTE_NOT_FOUND', `no endpoint serves ${path}; GET /-/routes lists the routes`));
    }
    const method = req.method ?? 'GET';
    if (!route.methods.includes(method)) {
      const error = new FlotillaError('METHOD_NOT_ALLOWED', `${route.route} accepts ${route.methods.join(', ')}, not ${method}`);
      return sendError(res, error, { allow: route.methods.join(', ') });
    }
    res.once('close', this.dispatcher.endpointRequests.enter(route.endpoint));
    const body = await readBody(req, this.maxBodyBytes).catch(() => undefined);
    if (body === undefined) {
      if (req.destroyed) return;
      const error = new FlotillaError('PAYLOAD_TOO_LARGE', `request bodies are limited to ${this.maxBodyBytes} bytes (maxBodyBytes)`);
      return sendError(res, error, { connection: 'close' });
    }
    delete req.headers[PROTOCOL.methodHeader];
    await this.dispatch(req, res, route, body);
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, route: RouteEntry, body: Buffer): Promise<void> {
    let backend: string;
    try {
      const shardKey = req.headers[SHARD_KEY_HEADER];
      backend = this.dispatcher.pickBackend(route.endpoint, typeof shardKey === 'string' ? shardKey : undefined);
    } catch (error) {
      if (isFlotillaError(error)) return sendError(res, error);
      throw error;
    }
    const cancel = new AbortController();
    const started = performance.now();
    res.once('close', () => {
      if (!res.writableFinished) cancel.abort();
      this.dispatcher.metrics.request(route.endpoint, backend, res.statusCode, (performance.now() - started) / 1000);
    });
    const timeoutMs = this.dispatcher.requestTimeoutMs(backend);
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            sendError(
              res,
              new FlotillaError('REQUEST_TIMEOUT', `backend '${backend}' did not answer within ${timeoutMs / 1000} s (requestTimeoutS)`),
            );
            cancel.abort();
          }, timeoutMs);
    res.once('close', () => clearTimeout(timer));

    const observe = this.mirror(req, route.endpoint, backend, body);
    try {
      await this.forwardWithRetries(req, res, route, backend, body, cancel, observe?.record);
    } finally {
      observe?.done();
    }
  }

  /** Starts the endpoint's shadow copies, if it has shadows, and returns how to report the primary's outcome to them. */
  private mirror(req: IncomingMessage, endpoint: string, backend: string, body: Buffer) {
    const shadows = this.dispatcher.endpoint(endpoint).shadows;
    if (Object.keys(shadows).length === 0) return undefined;
    const started = performance.now();
    let report: (outcome: Outcome | undefined) => void = () => undefined;
    const primary = new Promise<Outcome | undefined>((resolve) => (report = resolve));
    const headers = { ...req.headers, 'content-length': String(body.length) };
    delete headers['transfer-encoding'];
    delete headers.connection;
    this.dispatcher.shadows.mirror(
      { endpoint, primaryBackend: backend, method: req.method ?? 'GET', path: req.url ?? '/', headers, body, primary },
      shadows,
    );
    return {
      record: (status: number, bodyHash: string) => report({ status, bodyHash, latencyMs: performance.now() - started }),
      done: () => report(undefined),
    };
  }

  private async forwardWithRetries(
    req: IncomingMessage,
    res: ServerResponse,
    route: RouteEntry,
    backend: string,
    body: Buffer,
    cancel: AbortController,
    observe: ((status: number, bodyHash: string) => void) | undefined,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    const tried = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      let lease;
      try {
        lease = await this.dispatcher.acquire(backend, cancel.signal, tried);
      } catch (error) {
        if (cancel.signal.aborted) return;
        if (!isFlotillaError(error)) throw error;
        return sendError(res, error, error.code === 'QUEUE_FULL' ? { 'retry-after': '1' } : {});
      }
      const replica = lease.replica;
      const error = await this.engine.forward(req, res, replica.target, body, cancel.signal, observe);
      lease.release();
      if (error === undefined || cancel.signal.aborted) return;
      this.dispatcher.reportFailure(backend, replica.id);
      tried.add(replica.id);
      const retry = !res.headersSent && attempt < MAX_ATTEMPTS && mayRetry(error, method);
      this.logger.warn('replica failed a request', {
        component: 'proxy',
        backend,
        replica: replica.id,
        error: error.message,
        retry,
      });
      if (!retry) {
        return sendError(
          res,
          new FlotillaError(
            'REPLICA_UNREACHABLE',
            `replica ${replica.id} of backend '${backend}' failed while serving ${method} ${route.route}: ${error.message}`,
          ),
        );
      }
    }
  }
}
