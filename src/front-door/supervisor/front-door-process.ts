import { fork } from 'node:child_process';
import { chmodSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, type Server, type Server as NetServer, type Socket } from 'node:net';
import { FlotillaError, errorMessage } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { Dispatcher, type DataPlane, type RoutingSnapshot } from '../../dataplane/dispatcher.js';
import { frontDoorWorkerEnv } from '../../config/config.js';
import { ProxyServer } from '../server.js';
import { Asks } from '../workers/asks.js';
import { ForwardedMetrics } from '../workers/forwarded-metrics.js';
import { FrontDoorWorkers } from '../workers/front-door-workers.js';
import { LeaseDesk, type DeskSeat } from '../workers/lease-desk.js';
import type { RenderedMetrics } from '../workers/worker-protocol.js';
import {
  CONTROL_PROTOCOL,
  LOAD_PUSH_MS,
  controlSocketPath,
  frontDoorDir,
  frontDoorPidPath,
  onLines,
  sendLine,
  type FromFrontDoor,
  type FrontDoorLaunch,
  type Handover,
  type ToFrontDoor,
} from './control-protocol.js';

/** How long a /-/metrics scrape waits for the control plane's render. */
const RENDER_TIMEOUT_MS = 10_000;
/** How long the front door that replaces this one may take to serve. */
const UPGRADE_START_MS = 30_000;
/** How long a replaced front door lets its requests finish. */
const UPGRADE_DRAIN_MS = 30_000;
/** How long a newcomer has to say hello before its connection is closed. */
const HELLO_TIMEOUT_MS = 5_000;

/** Listens on the control socket, mode 0600, in place of a stale one a killed front door left. */
async function listenControl(control: Server, socketPath: string): Promise<void> {
  rmSync(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    control.once('error', reject);
    control.listen(socketPath, () => {
      control.off('error', reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o600);
}

/** Resolves true when something answers on the unix socket (a front door runs there), false when nothing does. */
export function answersOn(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

interface Attached {
  socket: Socket;
  seat: DeskSeat;
  pid: number;
  load: NodeJS.Timeout;
}

/**
 * The front door as a process of its own (http.frontDoor process): it owns the
 * listening port, the Dispatcher with the lease desk (so maxConcurrentQueries
 * and maxQueuedRequests hold over its workers and the control plane's
 * ServeHandles, which take one seat), its workers, and the last routing
 * snapshot. A control plane attaches over the control socket
 * (<stateDir>/run/<instance>/front-door.sock, mode 0600) and drives it as its
 * DataPlane (remote-front-door.ts). While no control plane is attached it
 * serves its last snapshot: passive ejection goes on, requests waiting for a
 * replica (a cold start) wait their noReplicaWaitMs, and the backends that
 * asked for one are told to the control plane when it attaches. Only one
 * control plane is attached at a time.
 */
export class FrontDoorProcess {
  private attached: Attached | undefined;
  private readonly renders = new Asks<RenderedMetrics>();
  /** Backends that asked for a replica while no control plane was attached. */
  private readonly demanded = new Set<string>();
  private stopping: Promise<void> | undefined;
  private snapshot: RoutingSnapshot | undefined;
  /** Replaced by another front door, which owns the control socket and the pid file now. */
  private handedOver = false;

  private constructor(
    private readonly launch: FrontDoorLaunch,
    private readonly logger: Logger,
    private readonly dispatcher: Dispatcher,
    private readonly desk: LeaseDesk,
    private readonly metrics: ForwardedMetrics,
    private readonly workers: FrontDoorWorkers | undefined,
    private readonly proxy: Pick<ProxyServer, 'listen' | 'close' | 'listener'>,
    private readonly control: Server,
    readonly address: { host: string; port: number },
    private readonly onStopped: () => void,
  ) {}

  /** Starts serving; `takeOver`: the listening server and state of the front door this one replaces (an upgrade). */
  static async start(
    launch: FrontDoorLaunch,
    logger: Logger,
    onStopped: () => void,
    takeOver?: { server: NetServer; snapshot?: RoutingSnapshot; demanded: string[] },
  ): Promise<FrontDoorProcess> {
    const socketPath = controlSocketPath(launch.stateDir, launch.instance);
    mkdirSync(frontDoorDir(launch.stateDir, launch.instance), { recursive: true, mode: 0o700 });
    if (takeOver === undefined && (await answersOn(socketPath)))
      throw new FlotillaError(
        'FRONT_DOOR_RUNNING',
        `a front door already serves instance '${launch.instance}' (its control socket ${socketPath} answers): stop it first (flotilla stop), or use another instance name`,
      );
    /** Set once built: the Dispatcher's callbacks, made before it, reach it through this. */
    const built: { self?: FrontDoorProcess } = {};
    const metrics = new ForwardedMetrics((message) => built.self?.toControlPlane(message));
    const dispatcher = new Dispatcher({
      metrics,
      streamIdleTimeoutMs: launch.streamIdleTimeoutMs,
      maxResponseBytes: launch.maxResponseBytes,
      onReplicaFailure: (backend, replica) => built.self?.toControlPlane({ t: 'failed', backend, replica }),
      onDemand: (backend) => built.self?.demand(backend),
      onQueued: (backend) => void desk.contend(backend),
    });
    const desk = new LeaseDesk(dispatcher);
    const render = (): Promise<RenderedMetrics> => built.self?.render() ?? Promise.reject(new Error('starting'));
    const { http } = launch;
    const workers =
      http.workers > 1
        ? new FrontDoorWorkers(http.workers, dispatcher, http, launch, logger, render, frontDoorWorkerEnv(), desk)
        : undefined;
    workers?.setControlPlane('away');
    const proxy =
      workers ??
      new ProxyServer(dispatcher, http, logger, http.metrics ? render : undefined, undefined, () =>
        built.self?.attached === undefined ? 'away' : 'attached',
      );
    if (takeOver?.snapshot !== undefined) (workers?.dataPlane() ?? dispatcher).update(takeOver.snapshot);
    const address = await proxy.listen(http.host, http.port, takeOver?.server);
    const control = createServer((socket) => built.self?.greet(socket));
    try {
      await listenControl(control, socketPath);
      writeFileSync(frontDoorPidPath(launch.stateDir, launch.instance), `${process.pid}\n`, { mode: 0o600 });
    } catch (error) {
      await proxy.close(0);
      throw error;
    }
    const self = new FrontDoorProcess(launch, logger, dispatcher, desk, metrics, workers, proxy, control, address, onStopped);
    built.self = self;
    self.snapshot = takeOver?.snapshot;
    for (const backend of takeOver?.demanded ?? []) self.demanded.add(backend);
    logger.info('front door serving; waiting for a control plane', { component: 'front-door', socket: socketPath, ...address });
    return self;
  }

  /** Stops accepting, lets requests finish for up to graceMs, closes everything and calls onStopped. */
  stop(graceMs: number, handover = false): Promise<void> {
    this.stopping ??= (async () => {
      this.control.close();
      await this.proxy.close(graceMs, handover);
      if (this.attached !== undefined) this.detach(this.attached, 'the front door stops');
      this.metrics.close();
      this.desk.close();
      this.dispatcher.close();
      if (!this.handedOver) {
        rmSync(controlSocketPath(this.launch.stateDir, this.launch.instance), { force: true });
        rmSync(frontDoorPidPath(this.launch.stateDir, this.launch.instance), { force: true });
      }
      this.logger.info('front door stopped', { component: 'front-door' });
      this.onStopped();
    })();
    return this.stopping;
  }

  private dataPlane(): DataPlane {
    return this.workers?.dataPlane() ?? this.dispatcher;
  }

  private toControlPlane(message: FromFrontDoor): void {
    if (this.attached !== undefined) sendLine(this.attached.socket, message);
  }

  private demand(backend: string): void {
    if (this.attached === undefined) this.demanded.add(backend);
    else sendLine(this.attached.socket, { t: 'demand', backend });
  }

  private render(): Promise<RenderedMetrics> {
    const { attached } = this;
    if (attached === undefined)
      return Promise.reject(
        new FlotillaError('FRONT_DOOR_UNAVAILABLE', 'no control plane is attached to the front door: /-/metrics answers again once one is'),
      );
    return this.renders.ask((id) => sendLine(attached.socket, { t: 'render', id }), RENDER_TIMEOUT_MS);
  }

  /** A connection on the control socket: it must say hello in our protocol's version, and only one is attached. */
  private greet(socket: Socket): void {
    socket.on('error', () => undefined);
    const timer = setTimeout(() => socket.destroy(), HELLO_TIMEOUT_MS).unref();
    let attached: Attached | undefined;
    onLines<ToFrontDoor>(socket, (message) => {
      if (attached !== undefined) return this.receive(attached, message);
      clearTimeout(timer);
      attached = this.hello(socket, message);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      if (attached !== undefined && this.attached === attached) this.detach(attached, 'its control socket closed');
    });
  }

  private hello(socket: Socket, message: ToFrontDoor): Attached | undefined {
    const refuse = (code: string, why: string): undefined => {
      this.logger.warn(`refused a control plane: ${why}`, { component: 'front-door' });
      sendLine(socket, { t: 'rejected', protocol: CONTROL_PROTOCOL, code, message: why });
      socket.end();
      return undefined;
    };
    if (message.t === 'upgrade' && message.protocol === CONTROL_PROTOCOL) {
      void this.upgrade(socket, message.main);
      return undefined;
    }
    if (message.t !== 'hello') return refuse('INVALID_ARGUMENT', `the first control message must be hello, not ${String(message.t)}`);
    if (message.protocol !== CONTROL_PROTOCOL)
      return refuse(
        'FRONT_DOOR_PROTOCOL',
        `the front door speaks control protocol ${CONTROL_PROTOCOL}, the control plane ${String(message.protocol)}: run a control plane of the front door's Flotilla version, or replace the front door (docs/operations.md); it keeps serving its last routing meanwhile`,
      );
    if (this.stopping !== undefined) return refuse('FRONT_DOOR_UNAVAILABLE', 'the front door is stopping');
    if (this.attached !== undefined)
      return refuse('FRONT_DOOR_RUNNING', `another control plane (pid ${this.attached.pid}) is attached to this front door`);
    const attached: Attached = {
      socket,
      pid: message.pid,
      seat: this.desk.seat((lease) => sendLine(socket, lease as FromFrontDoor)),
      load: setInterval(() => this.pushLoad(attached), LOAD_PUSH_MS).unref(),
    };
    this.attached = attached;
    this.workers?.setControlPlane('attached');
    sendLine(socket, { t: 'welcome', protocol: CONTROL_PROTOCOL, pid: process.pid, address: this.address });
    this.pushLoad(attached);
    for (const backend of this.demanded) sendLine(socket, { t: 'demand', backend });
    this.demanded.clear();
    this.logger.info('control plane attached', { component: 'front-door', pid: message.pid });
    return attached;
  }

  /**
   * Replaces this front door by the one `main` starts: forks it, hands it the listening server (both accept on it
   * until this one stops) with the last snapshot, and once it serves and owns the control socket, stops accepting,
   * lets the control plane go (it re-attaches to the successor), drains for up to UPGRADE_DRAIN_MS and exits.
   */
  private async upgrade(requester: Socket, main: string): Promise<void> {
    const fail = (why: string): void => {
      this.logger.error(`upgrade failed: ${why}`, { component: 'front-door' });
      sendLine(requester, {
        t: 'rejected',
        protocol: CONTROL_PROTOCOL,
        code: 'FRONT_DOOR_UNAVAILABLE',
        message: `the upgrade failed: ${why}`,
      });
      requester.end();
    };
    if (this.stopping !== undefined || this.handedOver) return fail('this front door is stopping');
    const { stateDir, instance } = this.launch;
    // Closing a unix socket server unlinks its path: close ours before the successor listens there.
    this.control.close();
    const log = openSync(join(frontDoorDir(stateDir, instance), 'front-door.log'), 'a', 0o600);
    const child = fork(main, [JSON.stringify(this.launch)], {
      detached: true,
      stdio: ['ignore', log, log, 'ipc'],
      env: frontDoorWorkerEnv(),
    });
    const outcome = new Promise<Handover>((resolve) => {
      child.once('message', (message: Handover) => resolve(message));
      child.once('exit', (code) => resolve({ t: 'failed', message: `the new front door exited with code ${code}; see front-door.log` }));
      setTimeout(
        () => resolve({ t: 'failed', message: `the new front door did not serve within ${UPGRADE_START_MS / 1000} s` }),
        UPGRADE_START_MS,
      ).unref();
    });
    this.handedOver = true;
    child.send(
      {
        t: 'handover',
        ...(this.snapshot === undefined ? {} : { snapshot: this.snapshot }),
        demanded: [...this.demanded],
      } satisfies Handover,
      this.proxy.listener(),
    );
    const answer = await outcome;
    if (answer.t !== 'serving') {
      this.handedOver = false;
      child.kill('SIGKILL');
      await listenControl(this.control, controlSocketPath(stateDir, instance)).catch((error: unknown) =>
        this.logger.error(`could not listen on the control socket again: ${errorMessage(error)}`, { component: 'front-door' }),
      );
      return fail(answer.t === 'failed' ? answer.message : 'unexpected answer');
    }
    child.disconnect();
    child.unref();
    if (this.attached !== undefined) this.detach(this.attached, `handed over to the new front door (pid ${child.pid})`);
    this.logger.info('handed the port to the new front door; draining', { component: 'front-door', successor: child.pid });
    sendLine(requester, { t: 'upgraded', pid: child.pid ?? 0 });
    requester.end();
    await this.stop(UPGRADE_DRAIN_MS, true);
  }

  private detach(attached: Attached, why: string): void {
    this.attached = undefined;
    this.workers?.setControlPlane('away');
    clearInterval(attached.load);
    this.desk.unseat(attached.seat);
    this.renders.dropAll(new Error('the control plane went away'));
    attached.socket.destroy();
    this.logger.warn(`control plane away (${why}): serving the last routing snapshot`, { component: 'front-door', pid: attached.pid });
  }

  private pushLoad(attached: Attached): void {
    const ongoing: Record<string, number> = {};
    for (const backend of this.dispatcher.backendNames()) ongoing[backend] = this.dispatcher.ongoingRequests(backend);
    const workers = this.workers?.serving() ?? { serving: 1, configured: 1 };
    sendLine(attached.socket, { t: 'load', ongoing, workers });
  }

  private receive(attached: Attached, message: ToFrontDoor): void {
    if (this.desk.receive(attached.seat, message as never)) return;
    switch (message.t) {
      case 'snapshot':
        this.snapshot = message.snapshot;
        this.dataPlane().update(message.snapshot);
        return;
      case 'cut':
        this.dataPlane().cut(message.target);
        return;
      case 'rendered':
        if (message.rendered !== undefined) this.renders.answer(message.id, message.rendered);
        else this.renders.drop(message.id, new Error(`the control plane could not render the metrics: ${message.error ?? 'no answer'}`));
        return;
      case 'stop':
        void this.stop(message.graceMs);
        return;
      case 'ask':
        void this.answer(attached, message).catch((error: unknown) =>
          this.logger.error('a control question failed', { component: 'front-door', error: errorMessage(error) }),
        );
        return;
      default:
        return;
    }
  }

  private async answer(attached: Attached, message: Extract<ToFrontDoor, { t: 'ask' }>): Promise<void> {
    const { id } = message;
    switch (message.q) {
      case 'drained':
        await this.dataPlane().drained(message.backend, message.replica);
        return sendLine(attached.socket, { t: 'answer', id });
      case 'endpointIdle':
        await this.dataPlane().endpointIdle(message.endpoint);
        return sendLine(attached.socket, { t: 'answer', id });
      case 'shadowCounts': {
        const counts = (await this.workers?.shadowCounts(message.endpoint)) ?? [this.dispatcher.shadows.counts(message.endpoint)];
        return sendLine(attached.socket, { t: 'answer', id, counts });
      }
    }
  }
}
