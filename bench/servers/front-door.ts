import { PrometheusMetrics } from '../../src/admin/metrics.js';
import { fanOut, ServingSeries } from '../../src/admin/serving-series.js';
import { systemClock } from '../../src/common/clock.js';
import { createLogger } from '../../src/common/logger.js';
import { frontDoorWorkerEnv, loadConfig } from '../../src/config/config.js';
import { DEFAULT_BACKEND_CONFIG } from '../../src/spec/validation.js';
import { Dispatcher } from '../../src/dataplane/dispatcher.js';
import { FrontDoorWorkers } from '../../src/front-door/workers/front-door-workers.js';
import { ProxyServer } from '../../src/front-door/server.js';

/**
 * Flotilla's front door as serve.start() builds it (Dispatcher with the Prometheus metrics and the dashboard's
 * series, ProxyServer with the default http.* settings, or WORKERS worker processes), routing ROUTE to one
 * replica at the given socket.
 */
const [socketPath, route, workers, backend] = [process.argv[2], process.argv[3] ?? '/hello', Number(process.argv[4] ?? '1'), 'hello'];
if (socketPath === undefined) throw new Error('usage: front-door REPLICA_SOCKET [ROUTE] [WORKERS]');
const config = loadConfig({ logLevel: 'warn' });
const logger = createLogger('warn', 'json');
const metrics = new PrometheusMetrics();
const render = (): Promise<{ contentType: string; body: string }> => metrics.render();
const dispatcher = new Dispatcher({
  metrics: fanOut(metrics, new ServingSeries(systemClock)),
  streamIdleTimeoutMs: config.http.streamIdleTimeoutS * 1000,
  onQueued: (name) => pool?.contend(name),
});
const pool = workers > 1 ? new FrontDoorWorkers(workers, dispatcher, config.http, config, logger, render, frontDoorWorkerEnv()) : undefined;
const frontDoor = pool ?? new ProxyServer(dispatcher, config.http, logger, render);
const { port } = await frontDoor.listen('127.0.0.1', 0);
(pool?.dataPlane() ?? dispatcher).update({
  endpoints: [{ name: backend, route, methods: ['GET', 'POST'], traffic: { [backend]: 1 }, shadows: {} }],
  backends: [
    {
      name: backend,
      maxConcurrentQueries: DEFAULT_BACKEND_CONFIG.maxConcurrentQueries,
      maxQueuedRequests: DEFAULT_BACKEND_CONFIG.maxQueuedRequests,
      noReplicaWaitMs: 0,
      requestTimeoutS: null,
      replicas: [{ id: `${backend}#1`, target: { socketPath } }],
    },
  ],
});
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.once('SIGTERM', () => void frontDoor.close(0).then(() => process.exit(0)));
