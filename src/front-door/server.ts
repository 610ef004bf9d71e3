import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { listenOn } from '../common/checks.js';
import { settlesWithin } from '../common/clock.js';
import { errorMessage, FlotillaError, isFlotillaError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { sendError, sendJson } from '../common/http-json.js';
import { BodyBudget } from './body.js';
import type { Dispatcher } from '../dataplane/dispatcher.js';
import { Exchange, type Door, type FrontDoorSettings } from './exchange.js';
import { ProxyEngine } from './proxy-engine.js';
import { isProtocolPath, parseTrustedProxies, requestPath } from './request-guard.js';
import { noteRouteHeaders } from './route-headers.js';

export const SHARD_KEY_HEADER = 'x-serve-shard-key';

/** A front-door process's control plane: attached, or away (the front door serves its last routing snapshot). */
export type ControlPlaneState = 'attached' | 'away';
/** How long a connection whose body was refused keeps reading (and dropping) it, so the client sees the answer before the close. */
const LINGER_MS = 2_000;
/** How many times per streamIdleTimeoutS (or clientStallTimeoutS) a relayed answer is checked for progress: a stuck one is cut at most a quarter late. */
const IDLE_CHECKS = 4;

export type { FrontDoorSettings } from './exchange.js';

const CLIENT_ERROR_STATUS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout'],
};

/**
 * Answers on a socket that has no ServerResponse (a request Node could not
 * parse, CONNECT) and closes it. A socket whose answer to an earlier request
 * has begun is only closed, as Node itself does: anything written now would
 * corrupt that answer.
 */
function answerRaw(socket: Duplex, status: number, reason: string, code: string, message: string): void {
  socket.on('error', () => undefined);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  if ((socket as { _httpMessage?: { headersSent: boolean } | null })._httpMessage?.headersSent === true) {
    socket.end();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const [status, reason] = CLIENT_ERROR_STATUS[error.code ?? ''] ?? [400, 'Bad Request'];
  const code = status === 431 ? 'HEADERS_TOO_LARGE' : status === 408 ? 'CLIENT_TIMEOUT' : 'INVALID_ARGUMENT';
  answerRaw(
    socket,
    status,
    reason,
    code,
    `the front door could not parse the request (${error.code ?? 'bad request'}); send valid HTTP/1.1`,
  );
}

/**
 * Answers a request whose body will not be read (or was refused) with
 * Connection: close. The rest of the body is read and dropped for up to
 * LINGER_MS first, so the close does not reset the connection before the
 * client has the answer. A 503 to a request without a body to drop keeps
 * the connection.
 */
function refuse(req: IncomingMessage, res: ServerResponse, error: FlotillaError, headers: Record<string, string>): void {
  if (res.headersSent) return sendError(res, error);
  if (req.complete) return sendError(res, error, error.status === 503 ? headers : { ...headers, connection: 'close' });
  const text = JSON.stringify({ error: error.toJSON() });
  res.writeHead(error.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    connection: 'close',
    ...headers,
  });
  res.write(text);
  const end = (): void => {
    clearTimeout(timer);
    res.end();
  };
  const timer = setTimeout(end, LINGER_MS);
  req.once('end', end);
  req.once('error', end);
  req.resume();
}

/** Answers a request the pipeline failed: refusals drop the unread body first (refuse), unexpected failures are logged. */
function answerError(logger: Logger, req: IncomingMessage, res: ServerResponse, error: unknown): void {
  if (!isFlotillaError(error)) return answerFailure(res, logger, req.url, error);
  if (error.code === 'QUEUE_FULL' || error.code === 'OVERLOADED' || error.code === 'COLD_START_TIMEOUT')
    return refuse(req, res, error, { 'retry-after': '1' });
  if (error.code === 'PAYLOAD_TOO_LARGE' || error.code === 'CLIENT_TIMEOUT') return refuse(req, res, error, {});
  sendError(res, error);
}

/** Answers a request that failed in an unexpected way with 500 (FlotillaErrors with their own status), and logs it. */
function answerFailure(res: ServerResponse, logger: Logger, path: string | undefined, error: unknown): void {
  if (isFlotillaError(error)) return sendError(res, error);
  logger.error('front door request failed', { component: 'proxy', path, error: errorMessage(error) });
  const what = (error as NodeJS.ErrnoException | undefined)?.code ?? (error instanceof Error ? error.name : 'error');
  sendError(res, new FlotillaError('INTERNAL_ERROR', `the front door failed on this request (${what}); its log has the details`));
}

/**
 * The HTTP front door: guard, route, method check, admission, body, traffic
 * policy, forward. Every request is answered, even one Node cannot parse
 * (400, 408, 431), and no request can throw out of its handler: unexpected
 * failures answer 500 and are logged. Paths under /-/ other than the front
 * door's own are never forwarded (they are the replica protocol's). A request
 * takes its replica slot (or queue place) before its body is read, and the
 * body counts against maxBufferedBytes while the request runs. A request
 * whose replica fails at the connection level is sent to another replica when
 * that is safe (see pipeline.ts) and answered 502 otherwise; it never hangs.
 */
export class ProxyServer {
  private readonly server: Server;
  private readonly door: Door;
  private readonly idleSweep: NodeJS.Timeout;
  private accepting = false;
  private draining = false;
  private readonly connections = new Set<Socket>();
  private goneWaiters: Array<() => void> = [];
  private open = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly settings: FrontDoorSettings,
    private readonly logger: Logger,
    private readonly renderMetrics?: () => Promise<{ contentType: string; body: string }>,
    /** In a front-door worker: how many workers serve, as the control plane last said; /-/healthz reports it. */
    private readonly workers?: () => { serving: number; configured: number } | undefined,
    /** In a front-door process (http.frontDoor process): whether a control plane is attached; /-/healthz reports it. */
    private readonly controlPlane?: () => ControlPlaneState | undefined,
  ) {
    let trusted: ReadonlySet<string>;
    try {
      trusted = parseTrustedProxies(settings.trustedProxies);
    } catch (error) {
      throw new FlotillaError('INVALID_ARGUMENT', `http.trustedProxies (FLOTILLA_TRUSTED_PROXIES): ${errorMessage(error)}`);
    }
    this.door = {
      dispatcher,
      engine: new ProxyEngine(dispatcher.agent),
      settings,
      budget: new BodyBudget(settings.maxBufferedBytes),
      trusted,
      logger,
      relaying: [],
      answer: (req, res, error) => answerError(logger, req, res, error),
      ended: () => {
        if (--this.open > 0) return;
        for (const wake of this.idleWaiters.splice(0)) wake();
      },
    };
    this.server = createServer(
      {
        headersTimeout: settings.headersTimeoutS * 1000,
        requestTimeout: 0,
        connectionsCheckingInterval: 1000,
        keepAliveTimeout: 65_000,
      },
      (req, res) => this.handle(req, res),
    );
    this.server.maxConnections = settings.maxConnections;
    this.server.on('connection', (socket: Socket) => {
      this.connections.add(socket);
      socket.once('close', () => {
        this.connections.delete(socket);
        if (this.connections.size === 0) for (const wake of this.goneWaiters.splice(0)) wake();
      });
    });
    this.server.on('clientError', answerClientError);
    this.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      const error = new FlotillaError('EXPECTATION_FAILED', `the front door only meets Expect: 100-continue, not ${req.headers.expect}`);
      sendError(res, error, { connection: 'close' });
    });
    this.server.on('connect', (_req: IncomingMessage, socket: Duplex) =>
      answerRaw(socket, 405, 'Method Not Allowed', 'METHOD_NOT_ALLOWED', 'the front door is not a forward proxy: CONNECT is not served'),
    );
    this.server.on('error', (error) => this.logger.error('front door server error', { component: 'proxy', error: error.message }));
    const sweepS = Math.min(settings.streamIdleTimeoutS, settings.clientStallTimeoutS);
    this.idleSweep = setInterval(() => this.sweepIdle(), (sweepS * 1000) / IDLE_CHECKS).unref();
  }

  /** Listens on host:port, or on `handle`, the listening server of the front door this one replaces. */
  async listen(host: string, port: number, handle?: NetServer): Promise<{ host: string; port: number }> {
    const address = await listenOn(this.server, host, port, 'the HTTP front door', handle);
    this.logger.info('front door listening', { component: 'proxy', ...address });
    return address;
  }

  /** The listening server, to hand over to the front door that replaces this one. */
  listener(): NetServer {
    return this.server;
  }

  /**
   * Serves a connection another process accepted (a front-door worker's, see front-door-workers.ts). The first one
   * starts Node's header and request timeout checks, which Node starts on 'listening'.
   */
  accept(socket: Socket): void {
    if (!this.accepting) {
      this.accepting = true;
      this.server.emit('listening');
    }
    this.server.emit('connection', socket);
  }

  /** Stops accepting, lets requests in flight finish for up to graceMs, then closes every connection. */
  async close(graceMs: number, handover = false): Promise<void> {
    if (!handover) {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      const idle = this.open === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      await settlesWithin(idle, graceMs);
      this.server.closeAllConnections();
      await closed;
      clearInterval(this.idleSweep);
      this.door.engine.close();
      return;
    }
    // A handover (another front door serves the port): stop accepting but, unlike http.Server's close, leave idle
    // keep-alive connections open, as closing one could race a request its client is sending on it. Each answers its
    // next request with Connection: close, and the clients reconnect to the new front door.
    this.draining = true;
    const closed = new Promise<void>((resolve) => NetServer.prototype.close.call(this.server, () => resolve()));
    const gone = this.connections.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.goneWaiters.push(resolve));
    await settlesWithin(gone, graceMs);
    this.server.close();
    this.server.closeAllConnections();
    await closed;
    clearInterval(this.idleSweep);
    this.door.engine.close();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.open++;
    if (this.draining) res.shouldKeepAlive = false;
    try {
      if (this.route(req, res)) return;
    } catch (error) {
      answerFailure(res, this.logger, req.url, error);
    }
    res.on('close', this.door.ended);
  }

  /** Answers the request, or hands it to an Exchange (true), which then owns its 'close'. */
  private route(req: IncomingMessage, res: ServerResponse): boolean {
    const path = requestPath(req);
    if (path === undefined) {
      const error = new FlotillaError(
        'INVALID_ARGUMENT',
        "the request target must be an absolute path without '.' or '..' segments or backslashes",
      );
      sendError(res, error, { connection: 'close' });
      return false;
    }
    if (isProtocolPath(path)) {
      this.serveOwn(res, path).catch((error: unknown) => answerFailure(res, this.logger, req.url, error));
      return false;
    }
    const route = this.dispatcher.matchRoute(path);
    if (route === undefined) {
      sendError(res, new FlotillaError('ROUTE_NOT_FOUND', `no endpoint serves ${path}; GET /-/routes lists the routes`));
      return false;
    }
    const method = req.method ?? 'GET';
    if (!route.methods.includes(method)) {
      const error = new FlotillaError('METHOD_NOT_ALLOWED', `${route.route} accepts ${route.methods.join(', ')}, not ${method}`);
      sendError(res, error, { allow: route.methods.join(', ') });
      return false;
    }
    noteRouteHeaders(req, route);
    const shardKey = req.headers[SHARD_KEY_HEADER];
    const backend = this.dispatcher.pickBackend(route.endpoint, typeof shardKey === 'string' ? shardKey : undefined);
    const exchange = new Exchange(this.door, req, res, route.endpoint, backend, method);
    try {
      exchange.start();
    } catch (error) {
      answerFailure(res, this.logger, req.url, error);
    }
    return true;
  }

  /** The front door's own paths; anything else under /-/ belongs to the replica protocol and is not found here. */
  private async serveOwn(res: ServerResponse, path: string): Promise<void> {
    if (path === '/-/healthz') {
      const workers = this.workers?.();
      const controlPlane = this.controlPlane?.();
      return sendJson(res, 200, {
        status: 'ok',
        ...(workers === undefined ? {} : { workers }),
        ...(controlPlane === undefined ? {} : { controlPlane }),
      });
    }
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
    sendError(
      res,
      new FlotillaError('ROUTE_NOT_FOUND', `${path} is not served: paths under /-/ are reserved (GET /-/routes lists the routes)`),
    );
  }

  /** Cuts the relayed answers whose replica sent nothing for streamIdleTimeoutS, or whose client took nothing for clientStallTimeoutS. */
  private sweepIdle(): void {
    const now = performance.now();
    const idleMs = this.settings.streamIdleTimeoutS * 1000;
    const stallMs = this.settings.clientStallTimeoutS * 1000;
    const relaying = this.door.relaying;
    for (let i = relaying.length - 1; i >= 0; i--) relaying[i]?.checkIdle(now, idleMs, stallMs);
  }
}
