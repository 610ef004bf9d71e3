import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import type { LocalClient } from '../client.js';
import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { sendError, sendJson } from '../common/http-json.js';
import type { Logger } from '../common/logger.js';
import { parseShippable } from '../controller/definition.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';
import { fromWire, parseWire, toWire } from './wire.js';
import { invalid, listenOn } from '../common/checks.js';

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

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
 * checked here for shape and by the controller for meaning.
 */
export class AdminServer {
  private readonly server: Server;
  private routes: Route[] = [];
  private readonly tokenBytes: Buffer | undefined;

  constructor(
    token: string,
    private readonly runtime: ContainerRuntime,
    private readonly logger: Logger,
  ) {
    this.tokenBytes = token === '' ? undefined : Buffer.from(token);
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    if (!LOOPBACK.test(host) && this.tokenBytes === undefined) {
      throw invalid(`the admin API may bind to ${host} only with a token: set FLOTILLA_ADMIN_TOKEN (admin.token)`);
    }
    const address = await listenOn(this.server, host, port, 'the admin API');
    this.logger.info('admin API listening', { component: 'admin', ...address });
    return address;
  }

  serve(client: LocalClient, shutdown: () => Promise<void>): void {
    const name = (call: Call, index = 0) => decodeURIComponent(call.params[index] ?? '');
    this.routes = [
      ['GET', /^\/api\/health$/, async () => ({ status: 'ok', httpUrl: client.httpUrl })],
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
      ['PATCH', /^\/api\/backends\/([^/]+)\/config$/, (call) => client.updateBackendConfig(name(call), call.body)],
      ['DELETE', /^\/api\/backends\/([^/]+)$/, (call) => client.deleteBackend(name(call), { force: call.query.get('force') === 'true' })],
      ['GET', /^\/api\/backends\/([^/]+)\/replicas$/, (call) => client.listReplicas(name(call))],
      ['GET', /^\/api\/backends\/([^/]+)\/logs$/, (call) => this.streamLogs(client, name(call), call)],
      ['GET', /^\/api\/endpoints$/, () => client.listEndpoints()],
      [
        'POST',
        /^\/api\/endpoints$/,
        async ({ body }) => {
          const { name: endpoint, ...options } = fields(body, ['name', 'backend', 'route', 'methods'], ['name', 'backend']);
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
        'POST',
        /^\/api\/endpoints\/([^/]+)\/call$/,
        async (call) => {
          const { input, methodName, shardKey } = fields(call.body, ['input', 'methodName', 'shardKey']);
          const options = {
            ...(methodName === undefined ? {} : { methodName: text(methodName, 'methodName') }),
            ...(shardKey === undefined ? {} : { shardKey: text(shardKey, 'shardKey') }),
          };
          const handle = client.getHandle(name(call), options);
          return toWire(await handle.remote(input === undefined ? undefined : fromWire(parseWire(input))));
        },
      ],
      [
        'POST',
        /^\/api\/shutdown$/,
        async ({ res }) => {
          res.once('finish', () => void shutdown());
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

  private authorized(req: IncomingMessage): boolean {
    if (this.tokenBytes === undefined) return true;
    const presented = Buffer.from((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    return presented.length === this.tokenBytes.length && timingSafeEqual(presented, this.tokenBytes);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (!this.authorized(req))
        throw new FlotillaError('UNAUTHORIZED', 'this admin API needs the token: Authorization: Bearer <FLOTILLA_ADMIN_TOKEN>');
      const url = new URL(req.url ?? '/', 'http://admin');
      const matches = this.routes.filter(([, pattern]) => pattern.test(url.pathname));
      if (matches.length === 0) throw new FlotillaError('ROUTE_NOT_FOUND', `the admin API has no ${url.pathname}`);
      const route = matches.find(([method]) => method === req.method);
      if (route === undefined) {
        res.setHeader('allow', matches.map(([method]) => method).join(', '));
        throw new FlotillaError('METHOD_NOT_ALLOWED', `${url.pathname} accepts ${matches.map(([method]) => method).join(', ')}`);
      }
      const [, pattern, handler] = route;
      const body = req.method === 'GET' || req.method === 'DELETE' ? {} : await readJson(req);
      const params = pattern.exec(url.pathname)?.slice(1) ?? [];
      const result = await handler({ params, query: url.searchParams, body, res });
      if (!res.headersSent) sendJson(res, 200, result ?? {});
    } catch (error) {
      if (!isFlotillaError(error)) this.logger.error('admin call failed unexpectedly', { component: 'admin', error: errorMessage(error) });
      sendError(res, isFlotillaError(error) ? error : new FlotillaError('INTERNAL_ERROR', errorMessage(error)));
    }
  }

  /** Streams every replica's log of the backend, each line prefixed with the replica id. */
  private async streamLogs(client: LocalClient, backend: string, call: Call): Promise<void> {
    const replicas = await client.listReplicas(backend);
    const follow = call.query.get('follow') === 'true';
    const tail = Number(call.query.get('tail') ?? 100);
    if (!Number.isInteger(tail) || tail < 0) throw invalid('tail must be a whole number of lines');
    const streams = await Promise.all(replicas.map((r) => this.runtime.streamLogs(r.containerId, { follow, tail })));
    const out = new PassThrough();
    call.res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    out.pipe(call.res);
    let open = streams.length;
    if (open === 0) out.end();
    streams.forEach((stream, index) => {
      let partial = '';
      stream.on('data', (chunk: Buffer) => {
        const lines = (partial + chunk.toString('utf8')).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) out.write(`[${replicas[index]?.id}] ${line}\n`);
      });
      stream.on('close', () => {
        if (partial !== '') out.write(`[${replicas[index]?.id}] ${partial}\n`);
        if (--open === 0) out.end();
      });
    });
    call.res.once('close', () => streams.forEach((stream) => stream.destroy()));
  }
}
