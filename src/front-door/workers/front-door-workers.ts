import { fork, type ChildProcess } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { listenOn } from '../../common/checks.js';
import { settlesWithin } from '../../common/clock.js';
import type { Logger } from '../../common/logger.js';
import { packageRoot } from '../../common/package-root.js';
import type { ShadowStats } from '../../api.js';
import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { DataPlane, Dispatcher, RoutingSnapshot } from '../../dataplane/dispatcher.js';
import { LeaseDesk, type DeskSeat } from './lease-desk.js';
import type { FrontDoorSettings } from '../server.js';
import { summarizeShadows } from '../../dataplane/shadow.js';
import type { FromWorker, ToWorker } from './worker-protocol.js';

const WORKER_MAIN = join(packageRoot(), 'dist', 'src', 'front-door', 'workers', 'worker-process.js');
/** How long a worker may take to start before the control plane gives up on it. */
const START_TIMEOUT_MS = 15_000;

interface Worker {
  child: ChildProcess;
  seat: DeskSeat;
  asks: Map<number, (answer?: FromWorker) => void>;
  /** Connections handed to it and not yet closed. */
  open: number;
  ready: boolean;
}

export interface WorkerLogging {
  logLevel: string;
  logFormat: string;
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
 * workers, maxBufferedBytes is split between them. A worker that dies is
 * replaced (its connections are lost, its leases returned).
 */
export class FrontDoorWorkers {
  private readonly workers: Worker[] = [];
  private readonly desk: LeaseDesk;
  /** noDelay as Node's HTTP server sets it, on the socket itself, so the worker's writes go out at once. */
  private readonly server = createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.handOver(socket));
  private snapshot: RoutingSnapshot | undefined;
  private next = 0;
  private open = 0;
  private nextAsk = 1;
  private closing = false;

  constructor(
    private readonly count: number,
    private readonly dispatcher: Dispatcher,
    private readonly settings: FrontDoorSettings,
    private readonly logging: WorkerLogging,
    private readonly logger: Logger,
    private readonly renderMetrics: () => Promise<{ contentType: string; body: string }>,
  ) {
    this.desk = new LeaseDesk(dispatcher);
  }

  /** Makes the backend's workers give back their leases: a request waits for it in this process (the Dispatcher's onQueued). */
  contend(backend: string): void {
    void this.desk.contend(backend);
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await Promise.all(Array.from({ length: this.count }, () => this.startWorker()));
    const address = await listenOn(this.server, host, port, 'the HTTP front door');
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
          ...this.workers.map((worker) => this.ask(worker, (id) => ({ t: 'endpointIdle', id, endpoint }))),
        ]);
      },
    };
  }

  /** Stops accepting; each worker lets its requests finish for up to graceMs, then closes its connections and exits. */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const exits = this.workers.map(({ child }) =>
      child.exitCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once('exit', () => resolve())),
    );
    this.broadcast({ t: 'close', graceMs });
    await settlesWithin(Promise.all(exits), graceMs + START_TIMEOUT_MS);
    for (const { child } of this.workers) child.kill('SIGKILL');
    await closed;
    this.desk.close();
  }

  /** Gives the connection to the next worker in turn that is up; closes it at maxConnections or when none is. */
  private handOver(socket: Socket): void {
    let worker: Worker | undefined;
    for (let tried = 0; tried < this.workers.length && worker === undefined; tried++) {
      const candidate = this.workers[this.next++ % this.workers.length];
      if (candidate?.ready === true && candidate.child.connected) worker = candidate;
    }
    if (worker === undefined || this.open >= this.settings.maxConnections) {
      socket.destroy();
      return;
    }
    this.open++;
    worker.open++;
    worker.child.send({ t: 'connection' } satisfies ToWorker, socket, (error) => {
      if (error === null) return;
      this.open--;
      worker.open--;
      socket.destroy();
    });
  }

  private broadcast(message: ToWorker): void {
    for (const { seat } of this.workers) seat.send(message);
  }

  /** The stats of the endpoint's shadows, mirrored by the workers and by this process's handles. */
  async shadowStats(endpoint: string): Promise<Record<string, ShadowStats>> {
    const answers = await Promise.all(this.workers.map((worker) => this.ask(worker, (id) => ({ t: 'shadowCounts', id, endpoint }))));
    const counts = answers.flatMap((answer) => (answer?.t === 'shadowCounts' ? [answer.counts] : []));
    return summarizeShadows([this.dispatcher.shadows.counts(endpoint), ...counts]);
  }

  /** Sends the worker a question and resolves with its answer (undefined when it exits first). */
  private ask(worker: Worker, question: (id: number) => ToWorker): Promise<FromWorker | undefined> {
    if (!worker.child.connected) return Promise.resolve(undefined);
    const id = this.nextAsk++;
    return new Promise((resolve) => {
      worker.asks.set(id, resolve);
      worker.seat.send(question(id));
    });
  }

  /** The metrics with what every worker served up to now. */
  private async render(): Promise<{ contentType: string; body: string }> {
    await Promise.all(this.workers.map((worker) => this.ask(worker, (id) => ({ t: 'flush', id }))));
    return this.renderMetrics();
  }

  private startWorker(): Promise<void> {
    const child = fork(WORKER_MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const send = (message: ToWorker): void => {
      if (child.connected) child.send(message);
    };
    const worker: Worker = { child, seat: this.desk.seat(send), asks: new Map(), open: 0, ready: false };
    this.workers.push(worker);
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`a front-door worker did not start within ${START_TIMEOUT_MS / 1000} s`)),
        START_TIMEOUT_MS,
      );
      child.once('exit', (code) => reject(new Error(`a front-door worker exited with code ${code} as it started`)));
      const onReady = (message: FromWorker): void => {
        if (message.t !== 'ready') return;
        child.off('message', onReady);
        clearTimeout(timer);
        worker.ready = true;
        resolve();
      };
      child.on('message', onReady);
    });
    child.on('message', (message: FromWorker) => this.receive(worker, message));
    child.once('exit', (code, signal) => this.exited(worker, code, signal));
    send({
      t: 'init',
      settings: { ...this.settings, maxBufferedBytes: Math.floor(this.settings.maxBufferedBytes / this.count) },
      logLevel: this.logging.logLevel,
      logFormat: this.logging.logFormat,
      streamIdleTimeoutMs: this.dispatcher.streamIdleTimeoutMs,
    });
    if (this.snapshot !== undefined) send({ t: 'snapshot', snapshot: this.snapshot });
    return ready;
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
      case 'render':
        void this.render().then(({ contentType, body }) => worker.seat.send({ t: 'rendered', id: message.id, contentType, body }));
        return;
      case 'done':
      case 'shadowCounts':
        worker.asks.get(message.id)?.(message);
        worker.asks.delete(message.id);
        return;
      case 'disconnected':
        this.open--;
        worker.open--;
        return;
    }
  }

  private exited(worker: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    this.desk.unseat(worker.seat);
    for (const wake of worker.asks.values()) wake();
    this.open -= worker.open;
    const index = this.workers.indexOf(worker);
    if (index >= 0) this.workers.splice(index, 1);
    if (this.closing || !worker.ready) return;
    this.logger.error('front-door worker exited; starting another', { component: 'proxy', pid: worker.child.pid, code, signal });
    this.startWorker().catch((error: Error) =>
      this.logger.error('front-door worker did not start', { component: 'proxy', error: error.message }),
    );
  }
}
