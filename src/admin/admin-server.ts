import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { LocalClient } from '../client.js';
import type { StreamedAnswer } from '../handle/serve-handle.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { readBounded, sendError, sendJson } from '../common/http-json.js';
import type { Logger } from '../common/logger.js';
import { parseShippable } from '../spec/definition.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import { LOG_LIMITS, replicaLogs } from './replica-logs.js';
import { fromWire, parseWire, toWire } from './wire.js';
import { handleArguments } from '../handle/handle-arguments.js';
import { invalid, listenOn } from '../common/checks.js';
import { systemClock, type Clock } from '../common/clock.js';
import { DashboardAccess } from './dashboard-access.js';
import { isDashboardPath, serveDashboard } from './dashboard.js';
import { RequestGuard, type AdminSettings } from './request-guard.js';
import { ROUTES, patternOf, type Route, type RouteName } from './routes.js';
import type { ServingSeries } from './serving-series.js';
import { errorTrailer, PROTOCOL } from '../replica/protocol.js';

export type { AdminSettings } from './request-guard.js';
export { isLoopbackHost } from '../common/checks.js';

const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Log streams followed at once. */
const MAX_FOLLOWERS = 16;
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
const BAD_REQUEST = JSON.stringify({ error: { code: 'INVALID_ARGUMENT', message: 'malformed HTTP request' } });

/** The front door as the admin API reports it: how many front-door workers serve (GET /api/health), and its metrics (GET /api/metrics). */
export interface FrontDoorStatus {
  workers(): { serving: number; configured: number };
  renderMetrics(): Promise<{ contentType: string; body: string }>;
}

/** The workers part of /api/health; FRONT_DOOR_UNAVAILABLE (503) while none serves. */
function frontDoorHealth(frontDoor: FrontDoorStatus | undefined): { workers?: { serving: number; configured: number } } {
  if (frontDoor === undefined) return {};
  const workers = frontDoor.workers();
  if (workers.serving === 0)
    throw new FlotillaError(
      'FRONT_DOOR_UNAVAILABLE',
      `no front-door worker serves (0 of ${workers.configured}); they are being restarted, see the control plane's log`,
    );
  return { workers };
}

async function sendMetrics(res: ServerResponse, frontDoor: FrontDoorStatus | undefined): Promise<void> {
  if (frontDoor === undefined) throw new FlotillaError('ROUTE_NOT_FOUND', 'this admin API serves no metrics');
  const { contentType, body } = await frontDoor.renderMetrics();
  res.writeHead(200, { 'content-type': contentType });
  res.end(body);
}

/** Which control plane this is, as GET /api/health tells a client that wants to be sure. */
export interface Identity {
  instance: string;
  nonce: string;
}

function decodeName(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw invalid(`the path segment '${segment}' is not valid percent-encoding`);
  }
}

interface Call {
  params: string[];
  query: URLSearchParams;
  body: Record<string, unknown>;
  res: ServerResponse;
}

type Handler = (call: Call) => Promise<unknown>;

/** The body's keys must be among `allowed`; `required` ones must be present. */
function fields(body: Record<string, unknown>, allowed: string[], required: string[] = []): Record<string, unknown> {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length > 0)
    throw invalid(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; allowed: ${allowed.join(', ')}`);
  const missing = required.filter((key) => body[key] === undefined);
  if (missing.length > 0) throw invalid(`missing field${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
  return body;
}

function text(value: unknown, what: string): string {
  if (typeof value !== 'string') throw invalid(`${what} must be a string`);
  return value;
}

/** What the dashboard shows besides series and events, in one answer; a backend or endpoint deleted meanwhile is left out. */
async function overview(client: LocalClient, identity: Identity) {
  const [endpoints, backends] = await Promise.all([client.listEndpoints(), client.listBackends()]);
  const replicas = await Promise.all(Object.keys(backends).map((name) => client.listReplicas(name).catch(() => undefined)));
  const shadows = await Promise.all(
    Object.entries(endpoints).map(([name, e]) =>
      Object.keys(e.shadows).length === 0 ? {} : client.getShadowStats(name).catch(() => ({})),
    ),
  );
  return {
    instance: identity.instance,
    httpUrl: client.httpUrl,
    endpoints: Object.fromEntries(Object.entries(endpoints).map(([name, e], i) => [name, { ...e, shadowStats: shadows[i] ?? {} }])),
    backends: Object.fromEntries(
      Object.entries(backends).flatMap(([name, config], i) =>
        replicas[i] === undefined ? [] : [[name, { ...config, replicas: replicas[i] }]],
      ),
    ),
  };
}

/** A query parameter that must be a whole number, or undefined when absent. */
function whole(query: URLSearchParams, key: string): number | undefined {
  const value = query.get(key);
  if (value === null) return undefined;
  if (!/^\d+$/.test(value)) throw invalid(`${key} must be a whole number, not '${value}'`);
  return Number(value);
}

const tooLarge = () => new FlotillaError('PAYLOAD_TOO_LARGE', `admin API bodies are limited to ${MAX_BODY_BYTES} bytes`);

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) throw tooLarge();
  const body = await readBounded(req, MAX_BODY_BYTES, tooLarge);
  if (body.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw invalid(`malformed JSON: ${errorMessage(error)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalid('the body must be a JSON object');
  return parsed as Record<string, unknown>;
}

/**
 * The admin REST API: every client call as JSON in, JSON out; errors carry
 * their code and HTTP status. Bad input never changes state: each call is
 * checked here for shape and by the controller for meaning. Every request is
 * answered (a malformed one with 400) and none can stop the process. Before
 * the token, each request must name this API in Host, come from no foreign
 * Origin, and send bodies as JSON: what keeps web pages out (docs/security.md).
 */
export class AdminServer {
  private readonly server: Server;
  private routes: Array<{ route: Route; pattern: RegExp; handler: Handler }> = [];
  private readonly access: DashboardAccess;
  private readonly guard: RequestGuard;
  private followers = 0;

  constructor(
    settings: AdminSettings,
    private readonly runtime: ContainerRuntime,
    private readonly logger: Logger,
    clock: Clock = systemClock,
  ) {
    this.access = new DashboardAccess(clock);
    this.guard = new RequestGuard(settings, this.access);
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        this.logger.error('admin call failed while answering', { component: 'admin', error: errorMessage(error) });
        res.destroy();
      });
    });
    this.server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
      if (!socket.writable || error.code === 'ECONNRESET') {
        socket.destroy();
        return;
      }
      socket.end(
        `HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${BAD_REQUEST.length}\r\n\r\n${BAD_REQUEST}`,
      );
    });
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const address = await listenOn(this.server, host, port, 'the admin API');
    this.guard.bind(address);
    this.logger.info('admin API listening', { component: 'admin', ...address });
    return address;
  }

  serve(client: LocalClient, shutdown: () => Promise<void>, identity: Identity, series?: ServingSeries, frontDoor?: FrontDoorStatus): void {
    const name = (call: Call, index = 0) => decodeName(call.params[index] ?? '');
    /** The handle and decoded input of a handle call (`/call` and `/stream` take the same body). */
    const handleCall = (call: Call) => {
      const { input, methodName, shardKey, args, kwargs } = fields(call.body, ['input', 'methodName', 'shardKey', 'args', 'kwargs']);
      const options = {
        ...(methodName === undefined ? {} : { methodName: text(methodName, 'methodName') }),
        ...(shardKey === undefined ? {} : { shardKey: text(shardKey, 'shardKey') }),
      };
      return {
        handle: client.getHandle(name(call), options),
        input: input === undefined ? undefined : fromWire(parseWire(input)),
        argumentsCall: handleArguments(args, kwargs, input),
      };
    };
    const handlers: Record<RouteName, Handler> = {
      health: async () => ({ status: 'ok', httpUrl: client.httpUrl, ...identity, ...frontDoorHealth(frontDoor) }),
      metrics: (call) => sendMetrics(call.res, frontDoor),
      listBackends: () => client.listBackends(),
      createBackend: async ({ body }) => {
        fields(body, ['name', 'definition', 'options'], ['name', 'definition']);
        await client.createShippedBackend(text(body.name, 'name'), parseShippable(body.definition), body.options);
      },
      getBackend: (call) => client.getBackendConfig(name(call)),
      updateBackend: async (call) => {
        const body = fields(call.body, ['definition', 'options'], ['definition']);
        await client.updateShippedBackend(name(call), parseShippable(body.definition), body.options);
      },
      updateBackendConfig: (call) => client.updateBackendConfig(name(call), call.body),
      deleteBackend: (call) => client.deleteBackend(name(call), { force: call.query.get('force') === 'true' }),
      listReplicas: (call) => client.listReplicas(name(call)),
      backendLogs: (call) => this.streamLogs(client, name(call), call),
      capacity: () => client.getCapacity(),
      builds: () => client.listBuilds(),
      listEndpoints: () => client.listEndpoints(),
      createEndpoint: async ({ body }) => {
        const { name: endpoint, ...options } = fields(
          body,
          ['name', 'backend', 'route', 'methods', 'allowCallMethod'],
          ['name', 'backend'],
        );
        await client.createEndpoint(text(endpoint, 'name'), options as never);
      },
      deleteEndpoint: (call) => client.deleteEndpoint(name(call)),
      setTraffic: (call) => client.setTraffic(name(call), fields(call.body, ['weights'], ['weights']).weights as Record<string, number>),
      shadowTraffic: (call) =>
        client.shadowTraffic(name(call), name(call, 1), fields(call.body, ['proportion'], ['proportion']).proportion as number),
      shadowStats: (call) => client.getShadowStats(name(call)),
      series: async ({ query }) => {
        if (series === undefined) throw new FlotillaError('ROUTE_NOT_FOUND', 'this admin API keeps no time series');
        return series.snapshot(whole(query, 'minutes'));
      },
      dashboardCode: async () => this.access.issueCode(),
      dashboardSession: async ({ body }) => {
        const redeemed = this.access.redeem(text(fields(body, ['code'], ['code']).code, 'code'));
        if (redeemed === undefined)
          throw new FlotillaError(
            'UNAUTHORIZED',
            'this dashboard code is unknown, used or expired: run `flotilla dashboard` for a new one',
          );
        return redeemed;
      },
      overview: () => overview(client, identity),
      events: ({ query }) => client.listEvents({ since: whole(query, 'since'), limit: whole(query, 'limit') }),
      call: async (call) => {
        const { handle, input, argumentsCall } = handleCall(call);
        return toWire(await (argumentsCall === undefined ? handle.remote(input) : handle.callArguments(...argumentsCall)));
      },
      stream: async (call) => {
        const { handle, input, argumentsCall } = handleCall(call);
        if (argumentsCall !== undefined) throw invalid('a streamed handle call takes input, not args or kwargs');
        await this.streamCall(await handle.openStream(input), call.res);
      },
      shutdown: async ({ res }) => {
        res.once('finish', () => {
          shutdown().catch((error: unknown) => this.logger.error('shutdown failed', { component: 'admin', error: errorMessage(error) }));
        });
      },
    };
    this.routes = (Object.keys(ROUTES) as RouteName[]).map((key) => ({
      route: ROUTES[key],
      pattern: patternOf(ROUTES[key]),
      handler: handlers[key],
    }));
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.on('error', () => res.destroy());
    res.on('error', () => undefined);
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://admin');
      } catch {
        throw invalid(`the request target ${JSON.stringify(req.url)} is not a valid path`);
      }
      this.guard.refuseForeign(req);
      if (isDashboardPath(url.pathname)) return serveDashboard(req, res, url);
      if (url.pathname === '/favicon.ico' && req.method === 'GET') {
        res.writeHead(204, { 'cache-control': 'max-age=86400' });
        res.end();
        return;
      }
      if (url.pathname !== ROUTES.dashboardSession.path && !this.guard.authorized(req))
        throw new FlotillaError(
          'UNAUTHORIZED',
          'this admin API needs the token: Authorization: Bearer <token> (FLOTILLA_ADMIN_TOKEN, or the file <stateDir>/admin/<instance>.token)',
        );
      const matches = this.routes.filter(({ pattern }) => pattern.test(url.pathname));
      if (matches.length === 0) throw new FlotillaError('ROUTE_NOT_FOUND', `the admin API has no ${url.pathname}`);
      const match = matches.find(({ route }) => route.method === req.method);
      if (match === undefined) {
        const allowed = matches.map(({ route }) => route.method).join(', ');
        res.setHeader('allow', allowed);
        throw new FlotillaError('METHOD_NOT_ALLOWED', `${url.pathname} accepts ${allowed}`);
      }
      let body: Record<string, unknown> = {};
      if (BODY_METHODS.has(req.method ?? '')) {
        const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
        if (type !== 'application/json')
          throw new FlotillaError(
            'UNSUPPORTED_MEDIA_TYPE',
            `${req.method} ${url.pathname} takes content-type: application/json (even without a body), not '${req.headers['content-type'] ?? ''}'`,
          );
        body = await readJson(req);
      }
      const params = match.pattern.exec(url.pathname)?.slice(1) ?? [];
      const result = await match.handler({ params, query: url.searchParams, body, res });
      if (!res.headersSent) sendJson(res, 200, result ?? {});
    } catch (error) {
      if (!isFlotillaError(error)) this.logger.error('admin call failed unexpectedly', { component: 'admin', error: errorMessage(error) });
      if (res.headersSent) res.destroy();
      else sendError(res, isFlotillaError(error) ? error : new FlotillaError('INTERNAL_ERROR', errorMessage(error)));
    }
  }

  /**
   * Relays a handle's streamed answer as it comes, pausing it while the
   * caller is slow; a caller that leaves ends it. A failure midway ends the
   * body with the error trailer (the FlotillaError as JSON), which the remote
   * client throws.
   */
  private async streamCall(answer: StreamedAnswer, res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': answer.contentType, 'x-accel-buffering': 'no' });
    let gone = false;
    res.once('close', () => {
      gone = !res.writableFinished;
      if (gone) answer.cancel();
    });
    try {
      for await (const chunk of answer.chunks) {
        if (gone) return;
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
      }
    } catch (error) {
      if (gone) return;
      const failure = isFlotillaError(error) ? error : new FlotillaError('INTERNAL_ERROR', errorMessage(error));
      res.addTrailers({ [PROTOCOL.errorHeader]: errorTrailer(JSON.stringify({ error: failure.toJSON() })) });
    }
    res.end();
  }

  /** Streams every replica's log of the backend, each line with its time and the replica id, merged by time. */
  private async streamLogs(client: LocalClient, backend: string, call: Call): Promise<void> {
    const follow = call.query.get('follow') === 'true';
    const tail = Number(call.query.get('tail') ?? 100);
    if (!Number.isInteger(tail) || tail < 0 || tail > LOG_LIMITS.maxTail)
      throw invalid(`tail must be a whole number of lines, at most ${LOG_LIMITS.maxTail}, not '${call.query.get('tail')}'`);
    if (follow && this.followers >= MAX_FOLLOWERS)
      throw new FlotillaError('OVERLOADED', `${MAX_FOLLOWERS} log streams are followed already; stop one or try again later`);
    const replicas = await client.listReplicas(backend);
    if (follow) {
      this.followers++;
      call.res.once('close', () => this.followers--);
    }
    const out = await replicaLogs(this.runtime, replicas, {
      follow,
      tail,
      onStreamError: (replica, error) =>
        this.logger.warn('a replica log stream failed', { component: 'admin', backend, replica, error: errorMessage(error) }),
    });
    call.res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    call.res.flushHeaders();
    out.pipe(call.res);
    call.res.once('close', () => out.destroy());
  }
}
