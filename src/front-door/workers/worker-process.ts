import type { Socket } from 'node:net';
import { createLogger, type LogFormat } from '../../common/logger.js';
import { Dispatcher } from '../../dataplane/dispatcher.js';
import { LeaseClient } from './leased-router.js';
import { ProxyServer } from '../server.js';
import type { ServingMetrics, ShadowOutcome } from '../../dataplane/serving-metrics.js';
import type { FromWorker, ToWorker } from './worker-protocol.js';

/** How often a worker sends the primary what it served, for /metrics and the dashboard. */
const METRICS_FLUSH_MS = 100;

function send(message: FromWorker): void {
  process.send?.(message);
}

/** What the worker served, sent to the primary in batches; replica failures go as their own message ('failed'), counted there. */
class ForwardedMetrics implements ServingMetrics {
  private requests: Array<[string, string, number, number]> = [];
  private shadows: Array<[string, string, ShadowOutcome]> = [];
  private readonly timer = setInterval(() => this.flush(), METRICS_FLUSH_MS).unref();

  request(endpoint: string, backend: string, status: number, seconds: number): void {
    this.requests.push([endpoint, backend, status, seconds]);
  }

  shadow(endpoint: string, backend: string, outcome: ShadowOutcome): void {
    this.shadows.push([endpoint, backend, outcome]);
  }

  replicaFailure(): void {}

  flush(): void {
    if (this.requests.length === 0 && this.shadows.length === 0) return;
    send({ t: 'metrics', requests: this.requests, shadows: this.shadows });
    this.requests = [];
    this.shadows = [];
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

/**
 * A front-door worker process (forked by FrontDoorWorkers): a ProxyServer
 * with its own Dispatcher, fed the controller's routing snapshots and the
 * client connections the primary accepted, admitting requests on slots
 * leased from the primary (leased-router.ts).
 */
const leases = new LeaseClient(send);
const metrics = new ForwardedMetrics();
const renders = new Map<number, (rendered: { contentType: string; body: string }) => void>();
let nextRender = 1;
let dispatcher: Dispatcher | undefined;
let proxy: ProxyServer | undefined;

function renderMetrics(): Promise<{ contentType: string; body: string }> {
  const id = nextRender++;
  return new Promise((resolve) => {
    renders.set(id, resolve);
    send({ t: 'render', id });
  });
}

async function close(graceMs: number): Promise<void> {
  await proxy?.close(graceMs);
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
      dispatcher = new Dispatcher({
        metrics,
        streamIdleTimeoutMs: message.streamIdleTimeoutMs,
        onReplicaFailure: (backend, replica) => send({ t: 'failed', backend, replica }),
        router: (backend) => leases.router(backend),
      });
      proxy = new ProxyServer(dispatcher, message.settings, logger, renderMetrics);
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
    case 'rendered':
      renders.get(message.id)?.({ contentType: message.contentType, body: message.body });
      renders.delete(message.id);
      return;
    case 'endpointIdle':
      void (dispatcher?.endpointIdle(message.endpoint) ?? Promise.resolve()).then(() => send({ t: 'done', id: message.id }));
      return;
    case 'shadowCounts':
      send({ t: 'shadowCounts', id: message.id, counts: dispatcher?.shadows.counts(message.endpoint) ?? {} });
      return;
    case 'flush':
      metrics.flush();
      send({ t: 'done', id: message.id });
      return;
    case 'close':
      void close(message.graceMs);
      return;
  }
});
process.on('disconnect', () => process.exit(0));
