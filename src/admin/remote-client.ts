import type {
  BackendConfigPatch,
  BackendDefinition,
  BackendInfo,
  BuildInfo,
  CapacityInfo,
  Client,
  ConnectOptions,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
  EventPage,
  EventQuery,
  HandleOptions,
  ReplicaInfo,
  ServeHandle,
  ShadowStats,
} from '../api.js';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { withAbsoluteContext } from '../client.js';
import { isLoopbackHost } from '../common/checks.js';
import { ERROR_STATUS, FlotillaError, UnknownRemoteError, errorMessage, type ErrorCode } from '../common/errors.js';
import { loadConfig } from '../config/config.js';
import { toShippable } from '../spec/definition.js';
import { decodeStream } from '../handle/stream.js';
import { PROTOCOL, readErrorTrailer } from '../replica/protocol.js';
import { exchange, readBody } from './http-transport.js';
import { ROUTES, pathOf, type Route } from './routes.js';
import { readToken, tokenPath } from './token-file.js';
import { fromWire, toWire, type WireValue } from './wire.js';

/** One call: its route, the values of the route's `:name` segments, a query, a JSON body. */
interface Request {
  params?: string[];
  query?: URLSearchParams;
  body?: unknown;
  timeoutMs?: number;
}

type Call = (<T>(route: Route, request?: Request) => Promise<T>) & {
  /** Sends the call and resolves with the successful response, its body unread. */
  open(route: Route, request?: Request): Promise<IncomingMessage>;
  base: string;
};

const HEALTH_TIMEOUT_MS = 5000;

/** What GET /api/health answers: which control plane this is. */
export interface Health {
  status: string;
  httpUrl: string;
  instance: string;
  nonce: string;
}

function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && code in ERROR_STATUS;
}

/** The server's error as it sent it: a code this client does not know (a newer server) keeps its code and status. */
function remoteError(base: string, status: number, text: string): FlotillaError | UnknownRemoteError {
  let payload: { error?: { code?: unknown; message?: unknown; details?: Record<string, unknown> } } = {};
  try {
    payload = JSON.parse(text) as typeof payload;
  } catch {
    // not a Flotilla answer; handled below
  }
  const { code, message, details } = payload.error ?? {};
  if (typeof code !== 'string' || typeof message !== 'string') {
    return new FlotillaError('ADMIN_UNREACHABLE', `${base} answered ${status} without a Flotilla error; is a Flotilla admin API there?`);
  }
  return isErrorCode(code) ? new FlotillaError(code, message, details) : new UnknownRemoteError(code, status, message, details);
}

function unreachable(base: string, error: unknown): FlotillaError {
  return new FlotillaError('ADMIN_UNREACHABLE', `no Flotilla admin API answers at ${base} (${errorMessage(error)}); is it running?`);
}

/** Sends one admin API call; resolves with the response once its status is a success. */
async function send(base: string, token: string | undefined, { method, path: template }: Route, request: Request = {}) {
  const { params = [], query, body, timeoutMs } = request;
  const path = `${pathOf({ method, path: template }, ...params)}${query === undefined || query.size === 0 ? '' : `?${query}`}`;
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const hasBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
  if (hasBody) headers['content-type'] = 'application/json';
  let url: URL;
  try {
    url = new URL(`${base}${path}`);
  } catch {
    throw new FlotillaError('INVALID_ARGUMENT', `the admin API address ${base} is not a URL; give one like http://127.0.0.1:8001`);
  }
  const res = await exchange({
    method,
    url,
    headers,
    ...(hasBody ? { body: JSON.stringify(body ?? {}) } : {}),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  }).catch((error: unknown) => {
    throw unreachable(base, error);
  });
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) return res;
  throw remoteError(base, status, await readBody(res).catch(() => ''));
}

function caller(base: string, token: string | undefined): Call {
  const call = async <T>(route: Route, request: Request = {}): Promise<T> => {
    const res = await send(base, token, route, request);
    const text = await readBody(res).catch((error: unknown) => {
      throw unreachable(base, error);
    });
    try {
      return (text === '' ? {} : JSON.parse(text)) as T;
    } catch {
      throw new FlotillaError(
        'ADMIN_UNREACHABLE',
        `${base} answered ${route.method} ${route.path} with something that is not JSON; is a Flotilla admin API there?`,
      );
    }
  };
  return Object.assign(call, { open: (route: Route, request?: Request) => send(base, token, route, request), base });
}

/** A streamed answer from POST /api/endpoints/:name/stream: a failure midway arrives as the error trailer (a FlotillaError as JSON). */
async function* remoteChunks(base: string, res: IncomingMessage): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of res) yield chunk as Buffer;
  } catch (error) {
    throw new FlotillaError('ADMIN_UNREACHABLE', `the stream from ${base} broke midway: ${errorMessage(error)}`);
  } finally {
    if (!res.complete) res.destroy();
  }
  const failure = res.trailers[PROTOCOL.errorHeader];
  if (failure !== undefined) throw remoteError(base, 500, readErrorTrailer(failure));
}

class RemoteServeHandle implements ServeHandle {
  constructor(
    private readonly call: Call,
    readonly endpoint: string,
    private readonly handleOptions: HandleOptions,
  ) {}

  options(options: HandleOptions): ServeHandle {
    return new RemoteServeHandle(this.call, this.endpoint, { ...this.handleOptions, ...options });
  }

  async remote(...args: unknown[]): Promise<unknown> {
    const body = args[0];
    const input = args.length > 1 ? { args } : { input: body === undefined ? undefined : toWire(body) };
    const result = await this.call<WireValue>(ROUTES.call, {
      params: [this.endpoint],
      body: { ...input, ...this.handleOptions },
    });
    return fromWire(result);
  }

  async *stream(body?: unknown): AsyncGenerator<unknown> {
    const input = body === undefined ? undefined : toWire(body);
    const res = await this.call.open(ROUTES.stream, {
      params: [this.endpoint],
      body: { input, ...this.handleOptions },
    });
    yield* decodeStream(res.headers['content-type'] ?? 'application/octet-stream', remoteChunks(this.call.base, res));
  }
}

/**
 * A client of a Flotilla running elsewhere, over its admin API: the same
 * interface as the in-process one, shipping functions and classes as source.
 * Context directories are made absolute here and must exist where the
 * control plane runs.
 */
class RemoteClient implements Client {
  constructor(
    readonly httpUrl: string,
    private readonly call: Call,
  ) {}

  async createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    await this.call(ROUTES.createBackend, {
      body: { name, definition: toShippable(definition), options: withAbsoluteContext(options) },
    });
  }
  listBackends(): Promise<Record<string, BackendInfo>> {
    return this.call(ROUTES.listBackends);
  }
  getBackendConfig(name: string): Promise<BackendInfo> {
    return this.call(ROUTES.getBackend, { params: [name] });
  }
  async updateBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    await this.call(ROUTES.updateBackend, {
      params: [name],
      body: { definition: toShippable(definition), options: withAbsoluteContext(options) },
    });
  }
  async updateBackendConfig(name: string, config: BackendConfigPatch): Promise<void> {
    await this.call(ROUTES.updateBackendConfig, { params: [name], body: config });
  }
  async deleteBackend(name: string, options: DeleteBackendOptions = {}): Promise<void> {
    await this.call(ROUTES.deleteBackend, {
      params: [name],
      ...(options.force === true ? { query: new URLSearchParams({ force: 'true' }) } : {}),
    });
  }
  listReplicas(backend: string): Promise<ReplicaInfo[]> {
    return this.call(ROUTES.listReplicas, { params: [backend] });
  }
  getCapacity(): Promise<CapacityInfo> {
    return this.call(ROUTES.capacity);
  }
  listBuilds(): Promise<BuildInfo[]> {
    return this.call(ROUTES.builds);
  }
  async createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    await this.call(ROUTES.createEndpoint, { body: { name, ...options } });
  }
  listEndpoints(): Promise<Record<string, EndpointInfo>> {
    return this.call(ROUTES.listEndpoints);
  }
  async deleteEndpoint(name: string): Promise<void> {
    await this.call(ROUTES.deleteEndpoint, { params: [name] });
  }
  async setTraffic(endpoint: string, weights: Record<string, number>): Promise<void> {
    await this.call(ROUTES.setTraffic, { params: [endpoint], body: { weights } });
  }
  async shadowTraffic(endpoint: string, backend: string, proportion: number): Promise<void> {
    await this.call(ROUTES.shadowTraffic, { params: [endpoint, backend], body: { proportion } });
  }
  getShadowStats(endpoint: string): Promise<Record<string, ShadowStats>> {
    return this.call(ROUTES.shadowStats, { params: [endpoint] });
  }
  /** Unlike the in-process client, an unknown endpoint is reported by remote(), not here. */
  getHandle(endpoint: string): ServeHandle {
    return new RemoteServeHandle(this.call, endpoint, {});
  }
  listEvents(query: EventQuery = {}): Promise<EventPage> {
    const search = new URLSearchParams();
    if (query.since !== undefined) search.set('since', String(query.since));
    if (query.limit !== undefined) search.set('limit', String(query.limit));
    return this.call(ROUTES.events, { query: search });
  }
  async shutdown(): Promise<void> {
    await this.call(ROUTES.shutdown);
  }
}

interface Target {
  base: string;
  token: string | undefined;
  /** Where the token was looked up, for the UNAUTHORIZED message. */
  tokenFile: string | undefined;
}

/**
 * The address and token to use. Without a token, an address on this machine
 * (loopback) gets the token the instance stored in its state directory
 * (`instance` and `stateDir` default to the configuration's).
 */
function target(options: ConnectOptions): Target {
  const base = options.address.replace(/\/+$/, '');
  if (options.token !== undefined) return { base, token: options.token, tokenFile: undefined };
  let host = '';
  try {
    host = new URL(base).hostname;
  } catch {
    throw new FlotillaError('INVALID_ARGUMENT', `the admin API address ${base} is not a URL; give one like http://127.0.0.1:8001`);
  }
  if (!isLoopbackHost(host)) return { base, token: undefined, tokenFile: undefined };
  const config = loadConfig({
    ...(options.instance === undefined ? {} : { instance: options.instance }),
    ...(options.stateDir === undefined ? {} : { stateDir: options.stateDir }),
  });
  return { base, token: readToken(config.stateDir, config.instance), tokenFile: tokenPath(config.stateDir, config.instance) };
}

function explained(error: unknown, { tokenFile }: Target): unknown {
  if (!(error instanceof FlotillaError) || error.code !== 'UNAUTHORIZED' || tokenFile === undefined) return error;
  return new FlotillaError(
    'UNAUTHORIZED',
    `${error.message} (looked for a generated token in ${tokenFile}: pass the instance and stateDir the control plane runs with, or its token)`,
  );
}

/** Connects to a running Flotilla's admin API and says which control plane answered. */
export async function openRemote(options: ConnectOptions): Promise<{ client: Client; health: Health }> {
  const where = target(options);
  const call = caller(where.base, where.token);
  const health = await call<Health>(ROUTES.health, { timeoutMs: HEALTH_TIMEOUT_MS }).catch((error: unknown) => {
    throw explained(error, where);
  });
  return { client: new RemoteClient(health.httpUrl, call), health };
}

/** Connects to a running Flotilla's admin API. */
export async function connect(options: ConnectOptions): Promise<Client> {
  return (await openRemote(options)).client;
}

/** The log stream of a backend's replicas (GET /api/backends/:name/logs), as `flotilla logs` prints it. */
export async function streamBackendLogs(
  options: ConnectOptions,
  backend: string,
  query: { follow: boolean; tail: string },
): Promise<Readable> {
  const where = target(options);
  const search = new URLSearchParams({ follow: String(query.follow), tail: query.tail });
  return send(where.base, where.token, ROUTES.backendLogs, { params: [backend], query: search }).catch((error: unknown) => {
    throw explained(error, where);
  });
}

/** A dashboard URL with a fresh one-time code (POST /api/dashboard/codes), as `flotilla dashboard` prints it. */
export async function dashboardUrl(options: ConnectOptions): Promise<{ url: string; expiresInS: number }> {
  const where = target(options);
  const { code, expiresInS } = await caller(
    where.base,
    where.token,
  )<{ code: string; expiresInS: number }>(ROUTES.dashboardCode).catch((error: unknown) => {
    throw explained(error, where);
  });
  return { url: `${where.base}/dashboard/#code=${encodeURIComponent(code)}`, expiresInS };
}
