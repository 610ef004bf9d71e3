import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { LocalClient } from '../client.js';
import type { StreamedAnswer } from '../handle/serve-handle.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { sendError, sendJson } from '../common/http-json.js';
import type { Logger } from '../common/logger.js';
import { parseShippable } from '../spec/definition.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import { replicaLogs } from './replica-logs.js';
import { fromWire, parseWire, toWire } from './wire.js';
import { handleArguments } from '../handle/handle-arguments.js';
import { invalid, listenOn } from '../common/checks.js';
import { systemClock, type Clock } from '../common/clock.js';
import { DashboardAccess } from './dashboard-access.js';
import { dashboardAsset } from './dashboard-assets.js';
import type { ServingSeries } from './serving-series.js';
import { errorTrailer, PROTOCOL } from '../replica/protocol.js';

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

const WILDCARD = /^(0\.0\.0\.0|::)$/;
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);
const BAD_REQUEST = JSON.stringify({ error: { code: 'INVALID_ARGUMENT', message: 'malformed HTTP request' } });

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.test(host);
}

export interface AdminSettings {
  /** Every request must carry it as `Authorization: Bearer <token>`; undefined for none (loopback only). */
  token: string | undefined;
  /** Host names accepted in `Host` besides IP addresses and localhost. */
  allowedHosts: string[];
}

/** Which control plane this is, as GET /api/health tells a client that wants to be sure. */
export interface Identity {
  instance: string;
  nonce: string;
}

/** The host name of a Host header or an origin, lowercased, without brackets or a trailing dot; undefined if malformed. */
function hostnameOf(host: string): string | undefined {
  try {
    return new URL(`http://${host}`).hostname
      .replace(/^\[(.*)\]$/, '$1')
      .replace(/\.$/, '')
      .toLowerCase();
  } catch {
    return undefined;
  }
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

type Route = [method: string, pattern: RegExp, handler: (call: Call) => Promise<unknown>];

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

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES)
    throw new FlotillaError('PAYLOAD_TOO_LARGE', `admin API bodies are limited to ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new FlotillaError('PAYLOAD_TOO_LARGE', `admin API bodies are limited to ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
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
  private routes: Route[] = [];
  private readonly tokenBytes: Buffer | undefined;
  private boundHost = '127.0.0.1';
  private boundPort = 0;
  private readonly access: DashboardAccess;

  constructor(
    private readonly settings: AdminSettings,
    private readonly runtime: ContainerRuntime,
    private readonly logger: Logger,
    clock: Clock = systemClock,
  ) {
    this.access = new DashboardAccess(clock);
    this.tokenBytes = settings.token === undefined || settings.token === '' ? undefined : Buffer.from(settings.token);
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
    this.boundHost = address.host;
    this.boundPort = address.port;
    this.logger.info('admin API listening', { component: 'admin', ...address });
    return address;
  }

  serve(client: LocalClient, shutdown: () => Promise<void>, identity: Identity, series?: ServingSeries): void {
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
    this.routes = [
      ['GET', /^\/api\/health$/, async () => ({ status: 'ok', httpUrl: client.httpUrl, ...identity })],
      ['GET', /^\/api\/backends$/, () => client.listBackends()],
      [
        'POST',
        /^\/api\/backends$/,
        async ({ body }) => {
          fields(body, ['name', 'definition', 'options'], ['name', 'definition']);
          await client.createShippedBackend(text(body.name, 'name'), parseShippable(body.definition), body.options);
        },
      ],
      ['GET', /^\/api\/backends\/([^/]+)$/, (call) => client.getBackendConfig(name(call))],
      [
        'PUT',
        /^\/api\/backends\/([^/]+)$/,
        async (call) => {
          const body = fields(call.body, ['definition', 'options'], ['definition']);
          await client.updateShippedBackend(name(call), parseShippable(body.definition), body.options);
        },
      ],
      ['PATCH', /^\/api\/backends\/([^/]+)\/config$/, (call) => client.updateBackendConfig(name(call), call.body)],
      ['DELETE', /^\/api\/backends\/([^/]+)$/, (call) => client.deleteBackend(name(call), { force: call.query.get('force') === 'true' })],
      ['GET', /^\/api\/backends\/([^/]+)\/replicas$/, (call) => client.listReplicas(name(call))],
      ['GET', /^\/api\/backends\/([^/]+)\/logs$/, (call) => this.streamLogs(client, name(call), call)],
      ['GET', /^\/api\/capacity$/, () => client.getCapacity()],
      ['GET', /^\/api\/builds$/, () => client.listBuilds()],
      ['GET', /^\/api\/endpoints$/, () => client.listEndpoints()],
      [
        'POST',
        /^\/api\/endpoints$/,
        async ({ body }) => {
          const { name: endpoint, ...options } = fields(
            body,
            ['name', 'backend', 'route', 'methods', 'allowCallMethod'],
            ['name', 'backend'],
          );
          await client.createEndpoint(text(endpoint, 'name'), options as never);
        },
      ],
      ['DELETE', /^\/api\/endpoints\/([^/]+)$/, (call) => client.deleteEndpoint(name(call))],
      [
        'PUT',
        /^\/api\/endpoints\/([^/]+)\/traffic$/,
        (call) => client.setTraffic(name(call), fields(call.body, ['weights'], ['weights']).weights as Record<string, number>),
      ],
      [
        'PUT',
        /^\/api\/endpoints\/([^/]+)\/shadows\/([^/]+)$/,
        (call) => client.shadowTraffic(name(call), name(call, 1), fields(call.body, ['proportion'], ['proportion']).proportion as number),
      ],
      ['GET', /^\/api\/endpoints\/([^/]+)\/shadow-stats$/, (call) => client.getShadowStats(name(call))],
      [
        'GET',
        /^\/api\/series$/,
        async ({ query }) => {
          if (series === undefined) throw new FlotillaError('ROUTE_NOT_FOUND', 'this admin API keeps no time series');
          return series.snapshot(whole(query, 'minutes'));
        },
      ],
      ['POST', /^\/api\/dashboard\/codes$/, async () => this.access.issueCode()],
      ['GET', /^\/api\/overview$/, () => overview(client, identity)],
      ['GET', /^\/api\/events$/, ({ query }) => client.listEvents({ since: whole(query, 'since'), limit: whole(query, 'limit') })],
      [
        'POST',
        /^\/api\/endpoints\/([^/]+)\/call$/,
        async (call) => {
          const { handle, input, argumentsCall } = handleCall(call);
          return toWire(await (argumentsCall === undefined ? handle.remote(input) : handle.callArguments(...argumentsCall)));
        },
      ],
      [
        'POST',
        /^\/api\/endpoints\/([^/]+)\/stream$/,
        async (call) => {
          const { handle, input, argumentsCall } = handleCall(call);
          if (argumentsCall !== undefined) throw invalid('a streamed handle call takes input, not args or kwargs');
          await this.streamCall(await handle.openStream(input), call.res);
        },
      ],
      [
        'POST',
        /^\/api\/shutdown$/,
        async ({ res }) => {
          res.once('finish', () => {
            shutdown().catch((error: unknown) => this.logger.error('shutdown failed', { component: 'admin', error: errorMessage(error) }));
          });
        },
      ],
    ];
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private cookieName(): string {
    return `flotilla_dashboard_${this.boundPort}`;
  }

  /** A GET with a dashboard session cookie: what the page's own requests carry. */
  private hasSession(req: IncomingMessage): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const prefix = `${this.cookieName()}=`;
    const value = (req.headers.cookie ?? '')
      .split(';')
      .map((part) => part.trim())
      .find((part) => part.startsWith(prefix))
      ?.slice(prefix.length);
    return value !== undefined && this.access.isSession(value);
  }

  private authorized(req: IncomingMessage): boolean {
    if (this.tokenBytes === undefined || this.hasSession(req)) return true;
    const presented = Buffer.from(/^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1] ?? '');
    return presented.length === this.tokenBytes.length && timingSafeEqual(presented, this.tokenBytes);
  }

  /** A host name this API answers to: its own address, localhost or an IP address when it binds to one or all, or an allowed name. */
  private isOwnHost(hostname: string | undefined): boolean {
    if (hostname === undefined || hostname === '') return false;
    if (this.settings.allowedHosts.includes(hostname)) return true;
    if (hostname === this.boundHost.toLowerCase()) return true;
    if (LOOPBACK.test(this.boundHost)) return LOOPBACK.test(hostname);
    return WILDCARD.test(this.boundHost) && (hostname === 'localhost' || isIP(hostname) !== 0);
  }

  /**
   * What keeps web pages out: a Host that is not this API's (DNS rebinding), an Origin other than the
   * API's own (a cross-site request), and bodies that are not JSON (a form or text/plain POST, which
   * browsers send cross-site without asking first).
   */
  private refuseForeign(req: IncomingMessage): void {
    const host = req.headers.host ?? '';
    if (!this.isOwnHost(hostnameOf(host)))
      throw new FlotillaError(
        'FORBIDDEN',
        `the admin API does not answer to Host '${host}': use its IP address or localhost, or list the name in FLOTILLA_ADMIN_ALLOWED_HOSTS (admin.allowedHosts)`,
      );
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let originHost = '';
    try {
      originHost = new URL(origin).host.toLowerCase();
    } catch {
      // 'null' and other opaque origins are foreign
    }
    if (originHost !== host.toLowerCase())
      throw new FlotillaError(
        'FORBIDDEN',
        `the admin API refuses requests from web pages (Origin ${origin}); call it from a program or the CLI`,
      );
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
      this.refuseForeign(req);
      if (url.pathname === '/dashboard' || url.pathname.startsWith('/dashboard/')) return this.serveDashboard(req, res, url);
      if (url.pathname === '/favicon.ico' && req.method === 'GET') {
        res.writeHead(204, { 'cache-control': 'max-age=86400' });
        res.end();
        return;
      }
      if (!this.authorized(req))
        throw new FlotillaError(
          'UNAUTHORIZED',
          'this admin API needs the token: Authorization: Bearer <token> (FLOTILLA_ADMIN_TOKEN, or the file <stateDir>/admin/<instance>.token)',
        );
      const matches = this.routes.filter(([, pattern]) => pattern.test(url.pathname));
      if (matches.length === 0) throw new FlotillaError('ROUTE_NOT_FOUND', `the admin API has no ${url.pathname}`);
      const route = matches.find(([method]) => method === req.method);
      if (route === undefined) {
        res.setHeader('allow', matches.map(([method]) => method).join(', '));
        throw new FlotillaError('METHOD_NOT_ALLOWED', `${url.pathname} accepts ${matches.map(([method]) => method).join(', ')}`);
      }
      const [, pattern, handler] = route;
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
      const params = pattern.exec(url.pathname)?.slice(1) ?? [];
      const result = await handler({ params, query: url.searchParams, body, res });
      if (!res.headersSent) sendJson(res, 200, result ?? {});
    } catch (error) {
      if (!isFlotillaError(error)) this.logger.error('admin call failed unexpectedly', { component: 'admin', error: errorMessage(error) });
      if (res.headersSent) res.destroy();
      else sendError(res, isFlotillaError(error) ? error : new FlotillaError('INTERNAL_ERROR', errorMessage(error)));
    }
  }

  /**
   * The dashboard page and its assets, for a browser with a session cookie. `?code=` redeems a one-time
   * code from POST /api/dashboard/codes: the answer sets the cookie (HTTP-only, SameSite=Strict) and
   * redirects to the page without the code.
   */
  private serveDashboard(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      throw new FlotillaError('METHOD_NOT_ALLOWED', `${url.pathname} accepts GET, HEAD`);
    }
    const code = url.searchParams.get('code');
    if (code !== null) {
      const redeemed = this.access.redeem(code);
      if (redeemed === undefined)
        throw new FlotillaError('UNAUTHORIZED', 'this dashboard code is unknown, used or expired: run `flotilla dashboard` for a new one');
      res.writeHead(303, {
        location: '/dashboard/',
        'set-cookie': `${this.cookieName()}=${redeemed.session}; Path=/; Max-Age=${redeemed.maxAgeS}; HttpOnly; SameSite=Strict`,
        'cache-control': 'no-store',
        'referrer-policy': 'no-referrer',
      });
      res.end();
      return;
    }
    if (!this.authorized(req))
      throw new FlotillaError('UNAUTHORIZED', 'the dashboard needs a session: open the URL that `flotilla dashboard` prints');
    if (url.pathname === '/dashboard') {
      res.writeHead(308, { location: '/dashboard/' });
      res.end();
      return;
    }
    const asset = dashboardAsset(url.pathname.slice('/dashboard/'.length));
    if (asset === undefined) throw new FlotillaError('ROUTE_NOT_FOUND', `the dashboard has no ${url.pathname}`);
    res.writeHead(200, {
      'content-type': asset.contentType,
      'content-length': asset.body.length,
      'cache-control': 'no-store',
      'content-security-policy':
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
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
    const replicas = await client.listReplicas(backend);
    const follow = call.query.get('follow') === 'true';
    const tail = Number(call.query.get('tail') ?? 100);
    if (!Number.isInteger(tail) || tail < 0) throw invalid('tail must be a whole number of lines');
    const out = await replicaLogs(this.runtime, replicas, {
      follow,
      tail,
      onStreamError: (replica, error) =>
        this.logger.warn('a replica log stream failed', { component: 'admin', backend, replica, error: errorMessage(error) }),
    });
    call.res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    out.pipe(call.res);
    call.res.once('close', () => out.destroy());
  }
}
