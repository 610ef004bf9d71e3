import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type RequestListener, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../../src/common/logger.js';
import { Dispatcher, type BackendRouting, type RoutingSnapshot } from '../../src/dataplane/dispatcher.js';
import { ProxyServer, type FrontDoorSettings } from '../../src/front-door/server.js';
import type { ServingMetrics } from '../../src/dataplane/serving-metrics.js';

/** What a test replica saw of one request. */
export interface Seen {
  replica: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  bodyLength: number;
}

export interface FrontDoor {
  url: string;
  port: number;
  dispatcher: Dispatcher;
  seen: Seen[];
  failures: string[];
  replicaFailures: string[];
  /** The status each finished request was counted with in metrics. */
  statuses: number[];
  errors: string[];
  socketOf(replica: string): string;
  route(snapshot: RoutingSnapshot): void;
  close(): Promise<void>;
}

export const DEFAULT_SETTINGS: FrontDoorSettings = {
  maxBodyBytes: 10 * 1024 * 1024,
  maxBufferedBytes: 128 * 1024 * 1024,
  maxConnections: 1024,
  metrics: true,
  headersTimeoutS: 30,
  bodyTimeoutS: 60,
  streamIdleTimeoutS: 60,
  clientStallTimeoutS: 30,
  trustedProxies: '',
};

/** A process that listens on `path` with the smallest backlog and never accepts (its loop is blocked). */
const NEVER_ACCEPTS = `
const server = require('node:net').createServer();
server.listen({ path: process.argv[1], backlog: 0 }, () => {
  process.stdout.write('listening\\n', () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0));
});`;

/**
 * A replica whose unix socket's backlog is full, so that connecting to it fails at once with EAGAIN: a process that
 * never accepts, and connections that fill its backlog.
 */
async function fullBacklog(path: string): Promise<{ close(): void }> {
  const child: ChildProcess = spawn(process.execPath, ['-e', NEVER_ACCEPTS, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => child.stdout!.once('data', resolve));
  const queued: Socket[] = [];
  for (;;) {
    const socket = connect(path);
    queued.push(socket);
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      socket.once('connect', () => resolve(undefined));
      socket.once('error', resolve);
    });
    if (error?.code === 'EAGAIN') break;
    if (error !== undefined) throw error;
  }
  return {
    close: () => {
      for (const socket of queued) socket.destroy();
      child.kill('SIGKILL');
    },
  };
}

/** Answers with what it saw, as JSON; a replica of the test front door. */
export function echo(replica: string, seen: Seen[]): RequestListener {
  return (req, res) => {
    let bodyLength = 0;
    req.on('data', (chunk: Buffer) => (bodyLength += chunk.length));
    req.on('end', () => {
      const record = {
        replica,
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        bodyLength,
      };
      seen.push(record);
      const text = JSON.stringify(record);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  };
}

export function backendRouting(name: string, replicas: Array<{ id: string; socketPath: string }>, extra: Partial<BackendRouting> = {}) {
  return {
    name,
    maxConcurrentQueries: 8,
    maxQueuedRequests: 100,
    noReplicaWaitMs: 0,
    requestTimeoutS: null,
    replicas: replicas.map(({ id, socketPath }) => ({ id, target: { socketPath } })),
    ...extra,
  };
}

/**
 * A front door (ProxyServer + Dispatcher, no Docker) on a free loopback port
 * with one endpoint 'echo' at `/` and replicas that are local HTTP servers on
 * unix sockets; `handlers` names them (default one echo replica 'r1').
 */
export async function startFrontDoor(
  options: {
    settings?: Partial<FrontDoorSettings>;
    /** 'closed': no socket (ENOENT); 'full': a socket whose backlog is full (EAGAIN). */
    handlers?: Record<string, RequestListener | 'closed' | 'full'>;
    methods?: string[];
    backend?: Partial<BackendRouting>;
  } = {},
): Promise<FrontDoor> {
  const dir = mkdtempSync(join(tmpdir(), 'flt-fd-'));
  const seen: Seen[] = [];
  const failures: string[] = [];
  const replicaFailures: string[] = [];
  const statuses: number[] = [];
  const errors: string[] = [];
  const servers: Server[] = [];
  const full: Array<{ close(): void }> = [];
  const socketOf = (replica: string) => join(dir, `${replica}.sock`);
  const handlers = options.handlers ?? { r1: echo('r1', seen) };
  for (const [replica, handler] of Object.entries(handlers)) {
    if (handler === 'closed') continue;
    if (handler === 'full') {
      full.push(await fullBacklog(socketOf(replica)));
      continue;
    }
    const server = createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(socketOf(replica), resolve));
  }
  const metrics: ServingMetrics = {
    request: (_endpoint, _backend, status) => statuses.push(status),
    shadow: () => undefined,
    replicaFailure: (backend) => replicaFailures.push(backend),
  };
  const settings = { ...DEFAULT_SETTINGS, ...options.settings };
  const dispatcher = new Dispatcher({
    onReplicaFailure: (_, replica) => failures.push(replica),
    metrics,
    streamIdleTimeoutMs: settings.streamIdleTimeoutS * 1000,
  });
  const route = (snapshot: RoutingSnapshot) => dispatcher.update(snapshot);
  route({
    endpoints: [{ name: 'echo', route: '/', methods: options.methods ?? ['GET', 'POST', 'PUT'], traffic: { echo: 1 }, shadows: {} }],
    backends: [
      backendRouting(
        'echo',
        Object.keys(handlers).map((id) => ({ id, socketPath: socketOf(id) })),
        options.backend,
      ),
    ],
  });
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: (message, fields) => errors.push(`${message} ${JSON.stringify(fields)}`),
    child: () => logger,
  };
  const proxy = new ProxyServer(dispatcher, settings, logger);
  const { port } = await proxy.listen('127.0.0.1', 0);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dispatcher,
    seen,
    failures,
    replicaFailures,
    statuses,
    errors,
    socketOf,
    route,
    close: async () => {
      await proxy.close(0);
      dispatcher.close();
      for (const server of servers) {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
      for (const replica of full) replica.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RawAnswer {
  /** Everything the front door sent before the connection closed or the wait ended. */
  text: string;
  /** The final status (after any 1xx), undefined without one. */
  status: number | undefined;
  /** Whether the front door closed the connection within the wait. */
  closed: boolean;
}

/** Sends bytes over a raw TCP connection and collects the answer until the connection closes or `waitMs` passes. */
export function rawRequest(port: number, payload: string | Buffer | Buffer[], waitMs = 3000): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const status = /^(?:HTTP\/1\.1 1\d\d [^\r]*\r\n\r\n)*HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
      resolve({ text, status: status === undefined ? undefined : Number(status), closed });
    };
    const timer = setTimeout(done, waitMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      done();
    });
    const parts = Array.isArray(payload) ? payload : [payload];
    const writeNext = (index: number): void => {
      const part = parts[index];
      if (part === undefined || socket.destroyed) return;
      if (socket.write(part)) writeNext(index + 1);
      else socket.once('drain', () => writeNext(index + 1));
    };
    socket.on('connect', () => writeNext(0));
  });
}
