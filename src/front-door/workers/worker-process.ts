import type { Socket } from 'node:net';
import { exitOnEscape } from '../../common/last-resort.js';
import { createLogger, type LogFormat } from '../../common/logger.js';
import { Dispatcher } from '../../dataplane/dispatcher.js';
import { LeaseClient } from './leased-router.js';
import { ProxyServer, type ControlPlaneState } from '../server.js';
import { ForwardedMetrics } from './forwarded-metrics.js';
import { Asks } from './asks.js';
import type { FromWorker, RenderedMetrics, ToWorker, WorkerCount, WorkerQuestion } from './worker-protocol.js';

/** How long a /-/metrics scrape waits for the primary's render. */
const RENDER_TIMEOUT_MS = 10_000;

/** A message to the primary; one that cannot go (the primary is gone) is dropped, and the disconnect ends the worker. */
function send(message: FromWorker): void {
  process.send?.(message, undefined, {}, () => undefined);
}

/**
 * A front-door worker process (forked by FrontDoorWorkers): a ProxyServer
 * with its own Dispatcher, fed the controller's routing snapshots and the
 * client connections the primary accepted, admitting requests on slots
 * leased from the primary (leased-router.ts).
 */
const leases = new LeaseClient(send);
const metrics = new ForwardedMetrics(send);
const renders = new Asks<RenderedMetrics>();
let dispatcher: Dispatcher | undefined;
let proxy: ProxyServer | undefined;
let workers: WorkerCount | undefined;
let controlPlane: ControlPlaneState | undefined;

function renderMetrics(): Promise<RenderedMetrics> {
  return renders.ask((id) => send({ t: 'ask', id, q: 'render' }), RENDER_TIMEOUT_MS);
}

async function answer(id: number, question: WorkerQuestion): Promise<void> {
  switch (question.q) {
    case 'ping':
      return send({ t: 'answer', id });
    case 'flush':
      metrics.flush();
      return send({ t: 'answer', id });
    case 'shadowCounts':
      return send({ t: 'answer', id, counts: dispatcher?.shadows.counts(question.endpoint) ?? {} });
    case 'endpointIdle':
      await dispatcher?.endpointIdle(question.endpoint);
      return send({ t: 'answer', id });
  }
}

async function close(graceMs: number, handover: boolean): Promise<void> {
  await proxy?.close(graceMs, handover);
  dispatcher?.close();
  leases.close();
  metrics.close();
  process.disconnect();
}

process.on('message', (message: ToWorker, socket?: Socket) => {
  if (leases.receive(message)) return;
  switch (message.t) {
    case 'init': {
      const logger = createLogger(message.logLevel, message.logFormat as LogFormat).child({ worker: process.pid });
      exitOnEscape(logger, () => proxy?.close(0) ?? Promise.resolve());
      dispatcher = new Dispatcher({
        metrics,
        streamIdleTimeoutMs: message.streamIdleTimeoutMs,
        onReplicaFailure: (backend, replica) => send({ t: 'failed', backend, replica }),
        router: (backend) => leases.router(backend),
      });
      proxy = new ProxyServer(
        dispatcher,
        message.settings,
        logger,
        message.settings.metrics ? renderMetrics : undefined,
        () => workers,
        () => controlPlane,
      );
      send({ t: 'ready' });
      return;
    }
    case 'snapshot':
      dispatcher?.update(message.snapshot);
      return;
    case 'cut':
      dispatcher?.cut(message.target);
      return;
    case 'connection':
      if (socket === undefined || proxy === undefined) {
        socket?.destroy();
        return;
      }
      socket.once('close', () => send({ t: 'disconnected' }));
      proxy.accept(socket);
      return;
    case 'workers':
      workers = message.count;
      controlPlane = message.controlPlane;
      return;
    case 'answer':
      if (message.rendered !== undefined) renders.answer(message.id, message.rendered);
      else renders.drop(message.id, new Error(`the control plane could not render the metrics: ${message.error ?? 'no answer'}`));
      return;
    case 'ask':
      void answer(message.id, message);
      return;
    case 'close':
      void close(message.graceMs, message.handover === true);
      return;
  }
});
process.on('disconnect', () => process.exit(0));
