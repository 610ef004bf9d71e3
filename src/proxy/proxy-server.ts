import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { listenOn } from '../common/checks.js';
import { settlesWithin } from '../common/clock.js';
import { errorMessage, FlotillaError, isFlotillaError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import { sendError, sendJson } from '../common/http-json.js';
import { BodyBudget, readBody } from './body.js';
import type { Dispatcher } from './dispatcher.js';
import { Cancel } from './cancel.js';
import { InFlight } from './in-flight.js';
import { sendWithRetries, startShadows, type Call } from './pipeline.js';
import { ProxyEngine, type ForwardWatch } from './proxy-engine.js';
import { isProtocolPath, parseTrustedProxies, prepareForwardHeaders, requestPath } from './request-guard.js';
import type { Outcome } from './shadow.js';

export const SHARD_KEY_HEADER = 'x-serve-shard-key';
const ALL = '*';
const EMPTY = Buffer.alloc(0);
/** How long a connection whose body was refused keeps reading (and dropping) it, so the client sees the answer before the close. */
const LINGER_MS = 2_000;
/** How many times per streamIdleTimeoutS a relayed answer is checked for bytes from its replica: a quiet one is cut at most a quarter late. */
const IDLE_CHECKS = 4;

/** A relayed answer the idle sweep watches: the replica's bytes it last saw, since when none came, and how to cut it. */
interface Relaying {
  readonly upstream: { readonly bytesRead: number };
  readonly res: ServerResponse;
  seen: number;
  quietSince: number;
  cut(): void;
}

/** A front-door request as the pipeline sees it; its signal is made only when something waits on it. */
class FrontDoorCall implements Call {
  constructor(
    readonly endpoint: string,
    readonly backend: string,
    readonly method: string,
    private readonly cancel: Cancel,
  ) {}

  get signal(): AbortSignal {
    return this.cancel.signal;
  }
}

/** The front door's limits: config http.* (documented in src/config/config.ts and docs/configuration.md). */
export type FrontDoorSettings = Omit<FlotillaConfig['http'], 'host' | 'port' | 'publicUrl' | 'workers'>;

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

/** Whether the request has a body to read (within the budget and the body timeout); one without costs nothing. */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return length === undefined ? req.headers['transfer-encoding'] !== undefined : length !== '0';
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
  private readonly engine: ProxyEngine;
  private readonly requests = new InFlight();
  private readonly budget: BodyBudget;
  private readonly trusted: ReadonlySet<string>;
  /** Answers being relayed, checked for bytes from their replica IDLE_CHECKS times per streamIdleTimeoutS by one timer. */
  private readonly relaying = new Set<Relaying>();
  private readonly idleSweep: NodeJS.Timeout;
  private accepting = false;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly settings: FrontDoorSettings,
    private readonly logger: Logger,
    private readonly renderMetrics?: () => Promise<{ contentType: string; body: string }>,
  ) {
    try {
      this.trusted = parseTrustedProxies(settings.trustedProxies);
    } catch (error) {
      throw new FlotillaError('INVALID_ARGUMENT', `http.trustedProxies (FLOTILLA_TRUSTED_PROXIES): ${errorMessage(error)}`);
    }
    this.budget = new BodyBudget(settings.maxBufferedBytes);
    this.engine = new ProxyEngine(dispatcher.agent);
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
    this.server.on('clientError', answerClientError);
    this.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      const error = new FlotillaError('EXPECTATION_FAILED', `the front door only meets Expect: 100-continue, not ${req.headers.expect}`);
      sendError(res, error, { connection: 'close' });
    });
    this.server.on('connect', (_req: IncomingMessage, socket: Duplex) =>
      answerRaw(socket, 405, 'Method Not Allowed', 'METHOD_NOT_ALLOWED', 'the front door is not a forward proxy: CONNECT is not served'),
    );
    this.server.on('error', (error) => this.logger.error('front door server error', { component: 'proxy', error: error.message }));
    this.idleSweep = setInterval(() => this.sweepIdle(), (settings.streamIdleTimeoutS * 1000) / IDLE_CHECKS).unref();
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const address = await listenOn(this.server, host, port, 'the HTTP front door');
    this.logger.info('front door listening', { component: 'proxy', ...address });
    return address;
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
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await settlesWithin(this.requests.idle(ALL), graceMs);
    this.server.closeAllConnections();
    await closed;
    clearInterval(this.idleSweep);
    this.engine.close();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    res.once('close', this.requests.enter(ALL));
    this.route(req, res).catch((error: unknown) => {
      if (isFlotillaError(error)) return sendError(res, error);
      this.logger.error('front door request failed', { component: 'proxy', path: req.url, error: errorMessage(error) });
      sendError(res, new FlotillaError('INTERNAL_ERROR', `the front door failed on this request: ${errorMessage(error)}`));
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = requestPath(req);
    if (path === undefined) {
      const error = new FlotillaError(
        'INVALID_ARGUMENT',
        "the request target must be an absolute path without '.' or '..' segments or backslashes",
      );
      return sendError(res, error, { connection: 'close' });
    }
    if (isProtocolPath(path)) return this.serveOwn(res, path);
    const route = this.dispatcher.matchRoute(path);
    if (route === undefined) {
      return sendError(res, new FlotillaError('ROUTE_NOT_FOUND', `no endpoint serves ${path}; GET /-/routes lists the routes`));
    }
    const method = req.method ?? 'GET';
    if (!route.methods.includes(method)) {
      const error = new FlotillaError('METHOD_NOT_ALLOWED', `${route.route} accepts ${route.methods.join(', ')}, not ${method}`);
      return sendError(res, error, { allow: route.methods.join(', ') });
    }
    const shardKey = req.headers[SHARD_KEY_HEADER];
    const backend = this.dispatcher.pickBackend(route.endpoint, typeof shardKey === 'string' ? shardKey : undefined);
    await this.dispatch(req, res, route.endpoint, backend, method);
  }

  /** The front door's own paths; anything else under /-/ belongs to the replica protocol and is not found here. */
  private async serveOwn(res: ServerResponse, path: string): Promise<void> {
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
    sendError(
      res,
      new FlotillaError('ROUTE_NOT_FOUND', `${path} is not served: paths under /-/ are reserved (GET /-/routes lists the routes)`),
    );
  }

  /**
   * requestTimeoutS bounds the time to the answer's head (queueing included:
   * 504 REQUEST_TIMEOUT), streamIdleTimeoutS each gap between its chunks after
   * that (the connection is cut), not counting time the client itself takes
   * to read (a full write buffer); it is checked IDLE_CHECKS times a period
   * against the bytes read from the replica, not per chunk. An answer that fails after its head is
   * counted in metrics with the failure's status, not the head's. The client
   * leaving before its answer is complete cancels the request.
   */
  private async dispatch(req: IncomingMessage, res: ServerResponse, endpoint: string, backend: string, method: string): Promise<void> {
    const started = performance.now();
    const cancel = new Cancel();
    const call = new FrontDoorCall(endpoint, backend, method, cancel);
    const timeoutMs = this.dispatcher.requestTimeoutMs(backend);
    let failedStatus: number | undefined;
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => this.timedOut(res, backend, timeoutMs, cancel), timeoutMs);
    let body: Buffer | undefined;
    let report: ((outcome: Outcome | undefined) => void) | undefined;
    let relaying: Relaying | undefined;
    const watch: ForwardWatch = {
      headArrived: (upstream) => {
        clearTimeout(timer);
        const cut = (): void => {
          failedStatus = 504;
          this.logger.warn('stream idle too long', { component: 'proxy', backend, idleTimeoutS: this.settings.streamIdleTimeoutS });
          res.destroy();
          cancel.abort();
        };
        if (relaying !== undefined) this.relaying.delete(relaying);
        relaying = { upstream, res, seen: upstream.bytesRead, quietSince: performance.now(), cut };
        this.relaying.add(relaying);
      },
      failed: (status) => (failedStatus ??= status),
    };
    const leaveEndpoint = this.dispatcher.endpointRequests.enter(endpoint);
    res.once('close', () => {
      leaveEndpoint();
      if (!res.writableFinished) cancel.abort();
      clearTimeout(timer);
      if (relaying !== undefined) this.relaying.delete(relaying);
      if (body !== undefined) this.budget.release(body.length);
      report?.(undefined);
      this.dispatcher.metrics.request(endpoint, backend, failedStatus ?? res.statusCode, (performance.now() - started) / 1000);
    });
    try {
      await sendWithRetries(
        this.dispatcher,
        call,
        async (replica) => {
          if (body === undefined) {
            body = hasBody(req)
              ? await readBody(req, call.signal, this.budget, this.settings.maxBodyBytes, this.settings.bodyTimeoutS * 1000)
              : EMPTY;
            prepareForwardHeaders(req, body.length, this.trusted);
            report = startShadows(this.dispatcher, call, req.url ?? '/', req.headers, body);
            if (report !== undefined) {
              const reportTo = report;
              watch.observe = (status, bodyHash) => reportTo({ status, bodyHash, latencyMs: performance.now() - started });
            }
          }
          const error = await this.engine.forward(req, res, replica.target, body, cancel, watch);
          if (error !== undefined) throw error;
        },
        () => !res.headersSent,
      );
    } catch (error) {
      if (cancel.aborted) return;
      if (!isFlotillaError(error)) throw error;
      if (error.code === 'REPLICA_UNREACHABLE')
        this.logger.warn('replica failed a request', { component: 'proxy', backend, error: error.message });
      if (error.code === 'QUEUE_FULL' || error.code === 'OVERLOADED' || error.code === 'COLD_START_TIMEOUT')
        return this.refuse(req, res, error, { 'retry-after': '1' });
      if (error.code === 'PAYLOAD_TOO_LARGE' || error.code === 'CLIENT_TIMEOUT') return this.refuse(req, res, error, {});
      sendError(res, error);
    }
  }

  /** Cuts the relayed answers whose replica sent nothing for streamIdleTimeoutS (a client not reading does not count). */
  private sweepIdle(): void {
    const now = performance.now();
    const idleMs = this.settings.streamIdleTimeoutS * 1000;
    for (const relaying of this.relaying) {
      if (relaying.upstream.bytesRead !== relaying.seen || relaying.res.writableNeedDrain) {
        relaying.seen = relaying.upstream.bytesRead;
        relaying.quietSince = now;
      } else if (now - relaying.quietSince >= idleMs) {
        this.relaying.delete(relaying);
        relaying.cut();
      }
    }
  }

  private timedOut(res: ServerResponse, backend: string, timeoutMs: number, cancel: Cancel): void {
    sendError(
      res,
      new FlotillaError('REQUEST_TIMEOUT', `backend '${backend}' did not answer within ${timeoutMs / 1000} s (requestTimeoutS)`),
    );
    cancel.abort();
  }

  /**
   * Answers a request whose body will not be read (or was refused) with
   * Connection: close. The rest of the body is read and dropped for up to
   * LINGER_MS first, so the close does not reset the connection before the
   * client has the answer. A 503 to a request without a body to drop keeps
   * the connection.
   */
  private refuse(req: IncomingMessage, res: ServerResponse, error: FlotillaError, headers: Record<string, string>): void {
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
}
