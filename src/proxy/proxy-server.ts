import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { PROTOCOL } from '../replica/protocol.js';
import type { Dispatcher } from './dispatcher.js';
import { sendError, sendJson } from './http-errors.js';
import { ProxyEngine } from './proxy-engine.js';

export const SHARD_KEY_HEADER = 'x-serve-shard-key';

/** The HTTP front door: route, method check, traffic policy, replica router, forward. */
export class ProxyServer {
  private readonly server: Server;
  private readonly engine: ProxyEngine;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly logger: Logger,
  ) {
    this.engine = new ProxyEngine(dispatcher.agent);
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 65_000;
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    }).catch((error: NodeJS.ErrnoException) => {
      throw new FlotillaError('INVALID_ARGUMENT', `the HTTP front door cannot listen on ${host}:${port}: ${error.code ?? error.message}`);
    });
    const address = this.server.address() as AddressInfo;
    this.logger.info('front door listening', { component: 'proxy', host: address.address, port: address.port });
    return { host: address.address, port: address.port };
  }

  async close(): Promise<void> {
    this.engine.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://front-door').pathname;
    if (path === '/-/healthz') return sendJson(res, 200, { status: 'ok' });
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

    const aborted = new AbortController();
    res.once('close', () => aborted.abort());
    let lease;
    try {
      const shardKey = req.headers[SHARD_KEY_HEADER];
      const backend = this.dispatcher.pickBackend(route.endpoint, typeof shardKey === 'string' ? shardKey : undefined);
      lease = await this.dispatcher.acquire(backend, aborted.signal);
    } catch (error) {
      if (aborted.signal.aborted) return;
      if (isFlotillaError(error)) return sendError(res, error);
      throw error;
    }
    delete req.headers[PROTOCOL.methodHeader];
    const replica = lease.replica;
    this.engine.forward(req, res, replica.target, (error) => {
      lease.release();
      if (error === undefined || res.destroyed) return;
      this.logger.warn('replica unreachable', { component: 'proxy', endpoint: route.endpoint, replica: replica.id, error: error.message });
      sendError(
        res,
        new FlotillaError('REPLICA_UNREACHABLE', `replica ${replica.id} of endpoint '${route.endpoint}' did not answer: ${error.message}`),
      );
    });
  }
}
