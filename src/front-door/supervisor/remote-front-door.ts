import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { FlotillaError, errorMessage, type ErrorCode } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { packageRoot } from '../../common/package-root.js';
import { frontDoorWorkerEnv, type FlotillaConfig } from '../../config/config.js';
import type { DataPlane, Dispatcher, RoutingSnapshot } from '../../dataplane/dispatcher.js';
import type { ServingMetrics } from '../../dataplane/serving-metrics.js';
import type { ShadowCounts } from '../../dataplane/shadow.js';
import { Asks } from '../workers/asks.js';
import { LeaseClient } from '../workers/leased-router.js';
import type { FromWorker, RenderedMetrics, ToWorker, WorkerCount } from '../workers/worker-protocol.js';
import {
  CONTROL_PROTOCOL,
  controlSocketPath,
  frontDoorDir,
  onLines,
  sendLine,
  type ControlQuestion,
  type FromFrontDoor,
  type FrontDoorLaunch,
} from './control-protocol.js';

const FRONT_DOOR_MAIN = join(packageRoot(), 'dist', 'src', 'front-door', 'supervisor', 'main.js');
/** How long a front door this control plane started may take to answer on its control socket. */
const START_TIMEOUT_MS = 30_000;
/** How long a hello waits for its welcome. */
const HELLO_TIMEOUT_MS = 5_000;
/** How often a control plane that lost its front door tries to start and attach another: doubling from the first, up to the last. */
const REATTACH_BASE_MS = 250;
const REATTACH_MAX_MS = 10_000;
/** How long a question to the front door (drained, endpointIdle) may wait; the front door bounds them itself. */
const ASK_TIMEOUT_MS = 10 * 60_000;

type Answer = Extract<FromFrontDoor, { t: 'answer' }>;

/** What the control plane does with what the front door reports. */
export interface FrontDoorReports {
  failed(backend: string, replica: string): void;
  demand(backend: string): void;
  metrics: ServingMetrics;
  render(): Promise<RenderedMetrics>;
}

function launchOf(config: FlotillaConfig): FrontDoorLaunch {
  return {
    instance: config.instance,
    stateDir: config.stateDir,
    http: config.http,
    streamIdleTimeoutMs: config.http.streamIdleTimeoutS * 1000,
    maxResponseBytes: config.handle.maxResponseBytes,
    logLevel: config.logLevel,
    logFormat: config.logFormat === 'auto' ? 'json' : config.logFormat,
  };
}

function lastLine(path: string, from: number): string {
  try {
    const line = readFileSync(path).subarray(from).toString('utf8').trim().split('\n').at(-1) ?? '';
    return line === '' ? '' : `: ${line}`;
  } catch {
    return '';
  }
}

/**
 * The control plane's side of the front-door process (http.frontDoor
 * process): finds the running front door on its control socket, or starts one
 * (detached: it outlives this process), attaches, and drives it as the
 * controller's DataPlane. The ServeHandles of this process take their slots
 * from the front door's lease desk (a LeaseClient over the socket). A front
 * door that goes away is started again, and given the last snapshot; while it
 * is away handle calls fail with FRONT_DOOR_UNAVAILABLE.
 */
export class RemoteFrontDoor {
  readonly leases = new LeaseClient((message) => this.sendLease(message));
  private socket: Socket | undefined;
  private snapshot: RoutingSnapshot | undefined;
  private ongoing = new Map<string, number>();
  private workers: WorkerCount = { serving: 0, configured: 0 };
  private readonly asks = new Asks<Answer>();
  private closing = false;
  private failures = 0;
  private reattach: NodeJS.Timeout | undefined;
  private readonly socketPath: string;

  constructor(
    private readonly config: FlotillaConfig,
    private readonly logger: Logger,
    private readonly reports: FrontDoorReports,
  ) {
    this.socketPath = controlSocketPath(config.stateDir, config.instance);
  }

  /** Attaches to the running front door, or starts one and attaches; resolves with the address it serves. */
  async listen(): Promise<{ host: string; port: number }> {
    const found = await this.tryAttach();
    if (found !== undefined) {
      this.logger.info('attached to the running front door', { component: 'front-door', ...found });
      return found;
    }
    return this.startAndAttach();
  }

  /** Leaves the front door serving (this control plane stops, the front door stays). */
  async detach(): Promise<void> {
    this.closing = true;
    clearTimeout(this.reattach);
    this.socket?.end();
    this.leases.close();
  }

  /** Stops the front door: it lets requests finish for up to graceMs, then exits. */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    clearTimeout(this.reattach);
    const socket = this.socket;
    this.leases.close();
    if (socket === undefined) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      sendLine(socket, { t: 'stop', graceMs });
    });
  }

  serving(): WorkerCount {
    return this.socket === undefined ? { serving: 0, configured: this.config.http.workers } : this.workers;
  }

  /** The controller's data plane: the front door's, with this process's Dispatcher (the handles') kept in step. */
  dataPlane(local: Dispatcher): DataPlane {
    return {
      update: (snapshot) => {
        local.update(snapshot);
        this.snapshot = snapshot;
        if (this.socket !== undefined) sendLine(this.socket, { t: 'snapshot', snapshot });
      },
      cut: (target) => {
        local.cut(target);
        if (this.socket !== undefined) sendLine(this.socket, { t: 'cut', target });
      },
      drained: async (backend, replica) => {
        await this.ask({ q: 'drained', backend, replica });
      },
      endpointIdle: async (endpoint) => {
        await Promise.all([local.endpointIdle(endpoint), this.ask({ q: 'endpointIdle', endpoint })]);
      },
      ongoingRequests: (backend) => (this.socket === undefined ? local.ongoingRequests(backend) : (this.ongoing.get(backend) ?? 0)),
    };
  }

  /** The shadow counts of the front door (each of its processes) and of this process's handles. */
  async shadowCounts(local: Dispatcher, endpoint: string): Promise<Array<Record<string, ShadowCounts>>> {
    const answer = await this.ask({ q: 'shadowCounts', endpoint });
    return [local.shadows.counts(endpoint), ...(answer?.counts ?? [])];
  }

  /** Asks the front door; undefined when it is away or goes away first (nothing is in flight there then). */
  private ask(question: ControlQuestion): Promise<Answer | undefined> {
    const { socket } = this;
    if (socket === undefined) return Promise.resolve(undefined);
    return this.asks.ask((id) => sendLine(socket, { t: 'ask', id, ...question }), ASK_TIMEOUT_MS).catch(() => undefined);
  }

  private sendLease(message: FromWorker): void {
    if (this.socket !== undefined) {
      sendLine(this.socket, message as never);
      return;
    }
    if (message.t === 'want') {
      const refusal: ToWorker = {
        t: 'refused',
        want: message.want,
        code: 'FRONT_DOOR_UNAVAILABLE',
        message: 'the front door is being restarted; retry shortly',
      };
      queueMicrotask(() => this.leases.receive(refusal));
    }
  }

  /** Connects and says hello; undefined when no front door answers on the socket. */
  private tryAttach(): Promise<{ host: string; port: number } | undefined> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.socketPath);
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const timer = setTimeout(() => {
        socket.destroy();
        settle(() => reject(new FlotillaError('FRONT_DOOR_UNAVAILABLE', `the front door on ${this.socketPath} did not answer its hello`)));
      }, HELLO_TIMEOUT_MS);
      socket.once('error', (error: NodeJS.ErrnoException) => {
        settle(() => (error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? resolve(undefined) : reject(error)));
      });
      socket.once('connect', () => sendLine(socket, { t: 'hello', protocol: CONTROL_PROTOCOL, pid: process.pid }));
      onLines<FromFrontDoor>(socket, (message) => {
        if (settled) return this.receive(message);
        if (message.t === 'welcome') {
          settle(() => {
            this.attached(socket);
            resolve(message.address);
          });
        } else if (message.t === 'rejected') {
          settle(() => {
            socket.destroy();
            const error = new FlotillaError(
              message.code as ErrorCode,
              `the front door (protocol ${message.protocol}) refused this control plane (protocol ${CONTROL_PROTOCOL}): ${message.message}`,
            );
            reject(error);
          });
        }
      });
      socket.once('close', () => settle(() => resolve(undefined)));
    });
  }

  private attached(socket: Socket): void {
    this.socket = socket;
    this.failures = 0;
    socket.on('error', () => undefined);
    socket.once('close', () => this.lost());
    if (this.snapshot !== undefined) sendLine(socket, { t: 'snapshot', snapshot: this.snapshot });
  }

  private lost(): void {
    this.socket = undefined;
    const gone = new FlotillaError('FRONT_DOOR_UNAVAILABLE', 'the front door went away; it is being restarted, retry shortly');
    this.asks.dropAll(gone);
    this.leases.reset(gone);
    if (this.closing) return;
    const delayMs = Math.min(REATTACH_MAX_MS, REATTACH_BASE_MS * 2 ** this.failures);
    this.failures++;
    this.logger.error('lost the front door; attaching to its successor, or starting one', { component: 'front-door', inMs: delayMs });
    this.reattach = setTimeout(() => {
      this.listen().catch((error: unknown) => {
        this.logger.error(`could not start the front door: ${errorMessage(error)}`, { component: 'front-door' });
        this.lost();
      });
    }, delayMs);
  }

  private async startAndAttach(): Promise<{ host: string; port: number }> {
    const dir = frontDoorDir(this.config.stateDir, this.config.instance);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const logPath = join(dir, 'front-door.log');
    const log = openSync(logPath, 'a', 0o600);
    const from = statSync(logPath).size;
    const child = spawn(process.execPath, [FRONT_DOOR_MAIN, JSON.stringify(launchOf(this.config))], {
      detached: true,
      stdio: ['ignore', log, log],
      env: frontDoorWorkerEnv(),
    });
    child.unref();
    let exited: number | null | undefined;
    child.once('exit', (code) => (exited = code));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exited !== undefined)
        throw new FlotillaError(
          'FRONT_DOOR_UNAVAILABLE',
          `the front door exited with code ${exited}${lastLine(logPath, from)}; see ${logPath}`,
        );
      const address = await this.tryAttach();
      if (address !== undefined) {
        this.logger.info('started the front door and attached', { component: 'front-door', pid: child.pid, ...address });
        return address;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    child.kill('SIGKILL');
    throw new FlotillaError(
      'FRONT_DOOR_UNAVAILABLE',
      `the front door did not answer on ${this.socketPath} within ${START_TIMEOUT_MS / 1000} s; see ${logPath}`,
    );
  }

  private receive(message: FromFrontDoor): void {
    switch (message.t) {
      case 'load':
        this.ongoing = new Map(Object.entries(message.ongoing));
        this.workers = message.workers;
        return;
      case 'failed':
        this.reports.failed(message.backend, message.replica);
        return;
      case 'demand':
        this.reports.demand(message.backend);
        return;
      case 'metrics':
        for (const [endpoint, backend, status, seconds] of message.requests)
          this.reports.metrics.request(endpoint, backend, status, seconds);
        for (const [endpoint, backend, outcome] of message.shadows) this.reports.metrics.shadow(endpoint, backend, outcome);
        return;
      case 'render': {
        const { socket } = this;
        if (socket === undefined) return;
        this.reports.render().then(
          (rendered) => sendLine(socket, { t: 'rendered', id: message.id, rendered }),
          (error: unknown) => sendLine(socket, { t: 'rendered', id: message.id, error: errorMessage(error) }),
        );
        return;
      }
      case 'answer':
        this.asks.answer(message.id, message);
        return;
      case 'lease':
      case 'refused':
      case 'contended':
        this.leases.receive(message);
        return;
      default:
        return;
    }
  }
}
