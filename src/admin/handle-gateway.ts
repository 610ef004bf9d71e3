import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { HandleOptions } from '../api.js';
import { isPlainObject } from '../common/checks.js';
import { errorMessage, FlotillaError, isFlotillaError } from '../common/errors.js';
import { readBounded, sendError, sendJson } from '../common/http-json.js';
import type { Logger } from '../common/logger.js';
import { fromWire, parseWire, toWire } from './wire.js';
import { PROTOCOL, type ReplicaEntry } from '../replica/protocol.js';
import { handleArguments } from '../handle/handle-arguments.js';

/** The bound of a handle call from a replica whose target has no requestTimeoutS, so that a cycle of calls cannot hold a slot forever. */
export const HANDLE_CALL_TIMEOUT_S = 60;
const SCAN_MS = 200;
const MAX_CALL_BYTES = 16 * 1024 * 1024;

/** What the gateway needs of a handle: the control plane's ServeHandle. */
export interface GatewayHandle {
  remote(input?: unknown): Promise<unknown>;
  callArguments(args: unknown[], kwargs: Record<string, unknown>): Promise<unknown>;
}

export interface HandleGatewayDeps {
  /** The instance's run directory: one directory per protocol replica, bind-mounted at /run/flotilla. */
  runDir: string;
  /** A handle whose calls end after the target's requestTimeoutS, or HANDLE_CALL_TIMEOUT_S when it has none. */
  getHandle(endpoint: string, options: HandleOptions): GatewayHandle;
  logger: Logger;
}

interface Seat {
  server: Server;
  token: Buffer;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function tokenOf(hostDir: string): string | undefined {
  try {
    const entry = JSON.parse(readFileSync(join(hostDir, PROTOCOL.entryName), 'utf8')) as Partial<ReplicaEntry>;
    return typeof entry.handleToken === 'string' && entry.handleToken !== '' ? entry.handleToken : undefined;
  } catch {
    return undefined;
  }
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const body = await readBounded(
    req,
    MAX_CALL_BYTES,
    () => new FlotillaError('PAYLOAD_TOO_LARGE', `a handle call is at most ${MAX_CALL_BYTES} bytes`),
  );
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      'a handle call is a JSON object: { endpoint, input? or args? and kwargs?, methodName?, shardKey? }',
    );
  }
}

/**
 * Composition: code in a replica calls another endpoint through a handle. Each
 * protocol replica's host directory gets a unix socket, handle.sock (so the
 * container reaches it at /run/flotilla/handle.sock, and nothing else: no
 * network is opened between replicas). A call must carry the replica's own
 * handleToken (its entry file) in PROTOCOL.handleTokenHeader; anything else
 * is refused with 403. A call goes through the control plane's ServeHandle,
 * so it counts against the target's limits like any other, and it ends after
 * the target's requestTimeoutS, or HANDLE_CALL_TIMEOUT_S when it has none, so a
 * cycle of calls ends with REQUEST_TIMEOUT rather than holding slots forever.
 * The gateway finds replica directories by scanning the run directory, so
 * adopted replicas are served too.
 */
export class HandleGateway {
  private readonly seats = new Map<string, Seat>();
  /** Directories whose entry has no handleToken (replicas started before composition): not read again. */
  private readonly tokenless = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: HandleGatewayDeps) {}

  start(): void {
    this.scan();
    this.timer = setInterval(() => this.scan(), SCAN_MS);
    this.timer.unref();
  }

  /** Opens a socket for each new replica directory that has a token, closes those whose directory is gone. */
  scan(): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.deps.runDir);
    } catch {
      names = [];
    }
    for (const name of names) {
      const hostDir = join(this.deps.runDir, name);
      if (this.seats.has(hostDir) || this.tokenless.has(hostDir)) continue;
      const token = tokenOf(hostDir);
      if (token !== undefined) this.open(hostDir, token);
      else if (existsSync(join(hostDir, PROTOCOL.entryName))) this.tokenless.add(hostDir);
    }
    for (const [hostDir, seat] of this.seats) {
      if (!existsSync(join(hostDir, PROTOCOL.entryName))) {
        seat.server.close();
        this.seats.delete(hostDir);
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
    for (const seat of this.seats.values()) seat.server.close();
    this.seats.clear();
  }

  private open(hostDir: string, token: string): void {
    const socketPath = join(hostDir, PROTOCOL.handleSocketName);
    const seat: Seat = { server: createServer((req, res) => void this.serve(seat, req, res)), token: digest(token) };
    this.seats.set(hostDir, seat);
    rmSync(socketPath, { force: true });
    seat.server.on('error', (error) =>
      this.deps.logger.warn('handle socket failed', { component: 'handles', hostDir, error: errorMessage(error) }),
    );
    seat.server.listen(socketPath, () => chmodSync(socketPath, 0o666));
  }

  private async serve(seat: Seat, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const presented = req.headers[PROTOCOL.handleTokenHeader];
    if (typeof presented !== 'string' || !timingSafeEqual(digest(presented), seat.token)) {
      req.resume();
      return sendError(
        res,
        new FlotillaError('FORBIDDEN', `handle calls need this replica's handleToken in ${PROTOCOL.handleTokenHeader}`),
      );
    }
    if (req.method !== 'POST' || req.url !== PROTOCOL.handleCallPath) {
      req.resume();
      return sendError(res, new FlotillaError('ROUTE_NOT_FOUND', `the handle socket serves POST ${PROTOCOL.handleCallPath} only`));
    }
    try {
      const output = await this.call(await readBody(req));
      sendJson(res, 200, { output: toWire(output) });
    } catch (error) {
      const failure = isFlotillaError(error) ? error : new FlotillaError('INTERNAL_ERROR', errorMessage(error));
      sendError(res, failure);
    }
  }

  private async call(body: unknown): Promise<unknown> {
    if (!isPlainObject(body) || typeof body.endpoint !== 'string') {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        'a handle call names its endpoint: { endpoint: string, input? or args? and kwargs?, methodName?, shardKey? }',
      );
    }
    const options: HandleOptions = {};
    if (body.methodName !== undefined) options.methodName = body.methodName as string;
    if (body.shardKey !== undefined) options.shardKey = String(body.shardKey);
    const handle = this.deps.getHandle(body.endpoint, options);
    const input = body.input === undefined ? undefined : fromWire(parseWire(body.input));
    const argumentsCall = handleArguments(body.args, body.kwargs, body.input);
    return argumentsCall === undefined ? handle.remote(input) : handle.callArguments(...argumentsCall);
  }
}
