import { fork, type ChildProcess } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { listenOn } from '../../common/checks.js';
import { reusedFor, settlesWithin } from '../../common/clock.js';
import { errorMessage } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { packageRoot } from '../../common/package-root.js';
import type { ShadowStats } from '../../api.js';
import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { DataPlane, Dispatcher, RoutingSnapshot } from '../../dataplane/dispatcher.js';
import { LeaseDesk, type DeskSeat } from './lease-desk.js';
import type { ControlPlaneState, FrontDoorSettings } from '../server.js';
import { summarizeShadows, type ShadowCounts } from '../../dataplane/shadow.js';
import { Asks } from './asks.js';
import type { FromWorker, RenderedMetrics, ToWorker, WorkerCount, WorkerQuestion } from './worker-protocol.js';

const WORKER_MAIN = join(packageRoot(), 'dist', 'src', 'front-door', 'workers', 'worker-process.js');
/** How long a worker may take to start before the control plane kills it (and starts another). */
const START_TIMEOUT_MS = 15_000;
/** How often each worker is asked whether its event loop runs, and how long it has to answer before it is killed as stuck. */
const HEARTBEAT_MS = 1_000;
const LIVENESS_TIMEOUT_MS = 5_000;
/** How long a question for metrics or shadow stats waits for a worker; one that does not answer is left out. */
const ASK_TIMEOUT_MS = 2_000;
/**
 * Replacing workers that die: the first death in a while is replaced at once, each further one after twice the
 * delay of the one before (RESTART_BASE_MS, then doubling, up to RESTART_MAX_MS), until no worker died for RESTART_CALM_MS.
 */
const RESTART_BASE_MS = 500;
const RESTART_MAX_MS = 30_000;
const RESTART_CALM_MS = 10_000;
/** How long one metrics render (with every worker's flush) serves the scrapes that follow it. */
const METRICS_REUSE_MS = 1_000;

type Answer = Extract<FromWorker, { t: 'answer' }>;

interface Worker {
  child: ChildProcess;
  seat: DeskSeat;
  asks: Asks<Answer>;
  /** Connections handed to it and not yet closed. */
  open: number;
  /** Connections on their way to it: a worker that dies with some queued on its channel never gets them, nor are they closed for it. */
  handing: Set<Socket>;
  ready: boolean;
  /** Left the pool (exited, killed, or its channel failed); set once. */
  gone: boolean;
  /** Told why it left, for a start that waits on it. */
  onGone?: (why: string) => void;
  timer?: NodeJS.Timeout;
}

export interface WorkerLogging {
  logLevel: string;
  logFormat: string;
}

/** How long a connection answered NO_WORKER may stay open (its client may still be sending). */
const NO_WORKER_LINGER_MS = 2_000;

/** A 503 for every connection while no worker serves: the request is not read, the connection is closed after it. */
const NO_WORKER = (() => {
  const body = JSON.stringify({
    error: {
      code: 'FRONT_DOOR_UNAVAILABLE',
      message: 'no front-door worker is serving right now (they are being restarted); retry shortly',
    },
  });
  return `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`;
})();

/**
 * Closes the connection a child was sent but never acknowledged. Node keeps it open for good when the child dies
 * first: on the channel's end, disconnect() waits for the acknowledgement before it closes the pending handle
 * (lib/internal/child_process.js, Node 20), so the client would wait forever.
 */
function closeUndelivered(child: ChildProcess): void {
  const internals = child as unknown as { _pendingMessage?: { handle?: { close?: () => void } } | null };
  internals._pendingMessage?.handle?.close?.();
  internals._pendingMessage = null;
}

/**
 * The front door as several worker processes behind one port (http.workers
 * above 1). This process accepts each connection and hands it to the next
 * worker in turn (as node:cluster's primary does); the workers serve the
 * requests with their own Dispatcher, fed the same routing snapshots, and
 * take replica slots as leases from this process's Dispatcher (lease-desk.ts),
 * which stays the one place that counts maxConcurrentQueries and queues up to
 * maxQueuedRequests, for the workers and the ServeHandles alike. Workers send
 * what they served for metrics; http.maxConnections is counted here over all
 * workers, maxBufferedBytes is split between them.
 *
 * The number of workers is kept: a worker that exits (ready or not), that
 * misses START_TIMEOUT_MS, whose channel fails, or that stops answering the
 * heartbeat for LIVENESS_TIMEOUT_MS is killed and replaced, with a growing
 * delay while they keep dying (a failed fork counts as a death). Its
 * connections are lost and its leases returned. While none serves, every
 * connection gets 503 and serving() says 0.
 */
export class FrontDoorWorkers {
  private readonly workers: Worker[] = [];
  private readonly desk: LeaseDesk;
  /** noDelay as Node's HTTP server sets it, on the socket itself, so the worker's writes go out at once. */
  private readonly server = createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.handOver(socket));
  private readonly restarts = new Set<NodeJS.Timeout>();
  private readonly render = reusedFor(METRICS_REUSE_MS, () => this.renderNow());
  private snapshot: RoutingSnapshot | undefined;
  /** In a front-door process: whether its control plane is attached, for the workers' /-/healthz. */
  private controlPlane: ControlPlaneState | undefined;
  private next = 0;
  private open = 0;
  private closing = false;
  /** Deaths since the last calm period, and when the last one was. */
  private deaths = 0;
  private lastDeath = -Infinity;

  constructor(
    private readonly count: number,
    private readonly dispatcher: Dispatcher,
    private readonly settings: FrontDoorSettings,
    private readonly logging: WorkerLogging,
    private readonly logger: Logger,
    private readonly renderMetrics: () => Promise<RenderedMetrics>,
    /** The environment workers start with: none of the control plane's secrets (see config.ts). */
    private readonly env: NodeJS.ProcessEnv,
    /** The desk that lends the Dispatcher's slots, when others than the workers hold seats too (a front-door process's control plane). */
    desk?: LeaseDesk,
  ) {
    this.desk = desk ?? new LeaseDesk(dispatcher);
  }

  /** Makes the backend's workers give back their leases: a request waits for it in this process (the Dispatcher's onQueued). */
  contend(backend: string): void {
    void this.desk.contend(backend);
  }

  /** Tells the workers whether the front-door process's control plane is attached. */
  setControlPlane(state: ControlPlaneState): void {
    this.controlPlane = state;
    this.announce();
  }

  /** The listening server, to hand over to the front door that replaces this one. */
  listener(): Server {
    return this.server;
  }

  /** How many workers serve now, of how many configured. */
  serving(): WorkerCount {
    return { serving: this.workers.filter((worker) => worker.ready).length, configured: this.count };
  }

  /** Starts the workers, then listens on host:port, or on `handle`, the listening server of the front door this one replaces. */
  async listen(host: string, port: number, handle?: Server): Promise<{ host: string; port: number }> {
    await Promise.all(Array.from({ length: this.count }, () => this.startWorker()));
    const address = await listenOn(this.server, host, port, 'the HTTP front door', handle);
    this.server.on('error', (error) => this.logger.error('front door server error', { component: 'proxy', error: error.message }));
    this.logger.info('front door listening', { component: 'proxy', workers: this.count, ...address });
    return address;
  }

  /** The data plane the controller drives: this process's Dispatcher, with every routing change and cut also sent to the workers. */
  dataPlane(): DataPlane {
    const { dispatcher } = this;
    return {
      update: (snapshot) => {
        dispatcher.update(snapshot);
        this.snapshot = snapshot;
        this.broadcast({ t: 'snapshot', snapshot });
      },
      cut: (target: ReplicaTarget) => {
        dispatcher.cut(target);
        this.broadcast({ t: 'cut', target });
      },
      drained: (backend, replicaId) => dispatcher.drained(backend, replicaId),
      ongoingRequests: (backend) => dispatcher.ongoingRequests(backend),
      endpointIdle: async (endpoint) => {
        await Promise.all([
          dispatcher.endpointIdle(endpoint),
          ...this.workers.map((worker) => this.ask(worker, { q: 'endpointIdle', endpoint })),
        ]);
      },
    };
  }

  /** Stops accepting; each worker lets its requests finish for up to graceMs, then closes its connections and exits. */
  async close(graceMs: number, handover = false): Promise<void> {
    this.closing = true;
    for (const timer of this.restarts) clearTimeout(timer);
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const exits = this.workers.map(({ child }) =>
      child.exitCode !== null || child.signalCode !== null
        ? Promise.resolve()
        : new Promise<void>((resolve) => child.once('exit', () => resolve())),
    );
    this.broadcast({ t: 'close', graceMs, ...(handover ? { handover } : {}) });
    await settlesWithin(Promise.all(exits), graceMs + START_TIMEOUT_MS);
    for (const worker of [...this.workers]) this.leave(worker, 'closed');
    await closed;
    this.desk.close();
  }

  /** The stats of the endpoint's shadows, mirrored by the workers and by this process's handles. */
  async shadowStats(endpoint: string): Promise<Record<string, ShadowStats>> {
    return summarizeShadows(await this.shadowCounts(endpoint));
  }

  /** The shadow counts of this process and of each worker that answers. */
  async shadowCounts(endpoint: string): Promise<Array<Record<string, ShadowCounts>>> {
    const answers = await Promise.all(this.workers.map((worker) => this.ask(worker, { q: 'shadowCounts', endpoint }, ASK_TIMEOUT_MS)));
    const counts = answers.flatMap((answer) => (answer?.counts === undefined ? [] : [answer.counts]));
    return [this.dispatcher.shadows.counts(endpoint), ...counts];
  }

  /** Gives the connection to the next worker in turn that is up; closes it at maxConnections, answers 503 when none is up. */
  private handOver(socket: Socket): void {
    socket.on('error', () => undefined);
    let worker: Worker | undefined;
    for (let tried = 0; tried < this.workers.length && worker === undefined; tried++) {
      const candidate = this.workers[this.next++ % this.workers.length];
      if (candidate?.ready === true && candidate.child.connected) worker = candidate;
    }
    if (this.open >= this.settings.maxConnections) {
      socket.destroy();
      return;
    }
    if (worker === undefined) {
      setTimeout(() => socket.destroy(), NO_WORKER_LINGER_MS).unref();
      socket.resume();
      socket.end(NO_WORKER);
      return;
    }
    this.open++;
    worker.open++;
    worker.handing.add(socket);
    const given = worker;
    given.child.send({ t: 'connection' } satisfies ToWorker, socket, {}, (error: Error | null) => {
      if (!given.handing.delete(socket) || error === null) return;
      this.open--;
      given.open--;
      socket.destroy();
      this.leave(given, `lost its channel (${error.message})`);
    });
  }

  private broadcast(message: ToWorker): void {
    for (const worker of this.workers) this.send(worker, message);
  }

  /**
   * Sends over the worker's channel; a send that fails (the worker died with messages still to answer: EPIPE, a
   * closed channel) makes the worker leave.
   */
  private send(worker: Worker, message: ToWorker): void {
    if (worker.gone) return;
    worker.child.send(message, undefined, {}, (error: Error | null) => {
      if (error !== null) this.leave(worker, `lost its channel (${error.message})`);
    });
  }

  /** Asks the worker a question; undefined when it leaves first or does not answer within timeoutMs. */
  private ask(worker: Worker, question: WorkerQuestion, timeoutMs?: number): Promise<Answer | undefined> {
    return worker.asks.ask((id) => this.send(worker, { t: 'ask', id, ...question }), timeoutMs).catch(() => undefined);
  }

  /** The metrics with what every worker served up to now. */
  private async renderNow(): Promise<RenderedMetrics> {
    await Promise.all(this.workers.map((worker) => this.ask(worker, { q: 'flush' }, ASK_TIMEOUT_MS)));
    return this.renderMetrics();
  }

  /** Forks a worker; resolves once it is ready, rejects when it leaves before. */
  private startWorker(): Promise<void> {
    let child: ChildProcess;
    try {
      child = fork(WORKER_MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: this.env });
    } catch (error) {
      this.died(`could not be started (${errorMessage(error)})`, undefined);
      return Promise.reject(error as Error);
    }
    const worker: Worker = {
      child,
      seat: this.desk.seat((message) => this.send(worker, message)),
      asks: new Asks(),
      open: 0,
      handing: new Set(),
      ready: false,
      gone: false,
    };
    this.workers.push(worker);
    const ready = new Promise<void>((resolve, reject) => {
      worker.onGone = (why) => reject(new Error(`a front-door worker ${why} as it started`));
      const onReady = (message: FromWorker): void => {
        if (message.t !== 'ready' || worker.gone) return;
        child.off('message', onReady);
        clearTimeout(worker.timer);
        worker.ready = true;
        worker.onGone = undefined;
        this.announce();
        this.heartbeat(worker);
        resolve();
      };
      child.on('message', onReady);
    });
    worker.timer = setTimeout(() => this.leave(worker, `did not start within ${START_TIMEOUT_MS / 1000} s`), START_TIMEOUT_MS);
    child.on('message', (message: FromWorker) => this.receive(worker, message));
    child.on('error', (error) => this.leave(worker, `failed (${error.message})`));
    child.once('exit', (code, signal) => {
      closeUndelivered(child);
      this.leave(worker, `exited (${signal ?? `code ${code}`})`);
    });
    this.send(worker, {
      t: 'init',
      settings: { ...this.settings, maxBufferedBytes: Math.floor(this.settings.maxBufferedBytes / this.count) },
      logLevel: this.logging.logLevel,
      logFormat: this.logging.logFormat,
      streamIdleTimeoutMs: this.dispatcher.streamIdleTimeoutMs,
    });
    if (this.snapshot !== undefined) this.send(worker, { t: 'snapshot', snapshot: this.snapshot });
    return ready;
  }

  /** Asks the worker every HEARTBEAT_MS whether it runs; one that does not answer within LIVENESS_TIMEOUT_MS leaves. */
  private heartbeat(worker: Worker): void {
    worker.timer = setTimeout(() => {
      void this.ask(worker, { q: 'ping' }, LIVENESS_TIMEOUT_MS).then((answer) => {
        if (worker.gone) return;
        if (answer === undefined) this.leave(worker, `did not answer its heartbeat within ${LIVENESS_TIMEOUT_MS / 1000} s`);
        else this.heartbeat(worker);
      });
    }, HEARTBEAT_MS);
    worker.timer.unref();
  }

  private receive(worker: Worker, message: FromWorker): void {
    if (this.desk.receive(worker.seat, message)) return;
    switch (message.t) {
      case 'metrics':
        for (const [endpoint, backend, status, seconds] of message.requests)
          this.dispatcher.metrics.request(endpoint, backend, status, seconds);
        for (const [endpoint, backend, outcome] of message.shadows) this.dispatcher.metrics.shadow(endpoint, backend, outcome);
        return;
      case 'failed':
        this.dispatcher.reportFailure(message.backend, message.replica);
        return;
      case 'ask':
        this.render().then(
          (rendered) => this.send(worker, { t: 'answer', id: message.id, rendered }),
          (error: unknown) => {
            this.logger.error('metrics render failed', { component: 'proxy', error: errorMessage(error) });
            this.send(worker, { t: 'answer', id: message.id, error: errorMessage(error) });
          },
        );
        return;
      case 'answer':
        worker.asks.answer(message.id, message);
        return;
      case 'disconnected':
        this.open--;
        worker.open--;
        return;
    }
  }

  /** Takes the worker out of the pool (once): kills it if it still runs, returns its leases, and starts another unless closing. */
  private leave(worker: Worker, why: string): void {
    if (worker.gone) return;
    worker.gone = true;
    const started = worker.ready;
    worker.ready = false;
    clearTimeout(worker.timer);
    if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGKILL');
    this.desk.unseat(worker.seat);
    worker.asks.dropAll(new Error(`the front-door worker ${why}`));
    for (const socket of worker.handing) socket.destroy();
    worker.handing.clear();
    this.open -= worker.open;
    const index = this.workers.indexOf(worker);
    if (index >= 0) this.workers.splice(index, 1);
    worker.onGone?.(why);
    this.announce();
    if (this.closing) return;
    this.died(why, worker.child.pid, started);
  }

  /** Starts a worker in place of one that died, later the more of them died lately. */
  private died(why: string, pid: number | undefined, started = false): void {
    const now = performance.now();
    if (now - this.lastDeath > RESTART_CALM_MS) this.deaths = 0;
    this.lastDeath = now;
    const delayMs = this.deaths === 0 ? 0 : Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (this.deaths - 1));
    this.deaths++;
    const { serving, configured } = this.serving();
    this.logger.error(`front-door worker ${why}; starting another`, {
      component: 'proxy',
      pid,
      started,
      inMs: delayMs,
      serving: `${serving}/${configured}`,
    });
    const timer = setTimeout(() => {
      this.restarts.delete(timer);
      if (!this.closing) this.startWorker().catch(() => undefined);
    }, delayMs);
    this.restarts.add(timer);
  }

  /** Tells the workers how many serve, for their /-/healthz. */
  private announce(): void {
    this.broadcast({
      t: 'workers',
      count: this.serving(),
      ...(this.controlPlane === undefined ? {} : { controlPlane: this.controlPlane }),
    });
  }
}
