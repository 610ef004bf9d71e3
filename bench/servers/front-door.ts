import { PrometheusMetrics } from '../../src/admin/metrics.js';
import { fanOut, ServingSeries } from '../../src/admin/serving-series.js';
import { systemClock } from '../../src/common/clock.js';
import { createLogger } from '../../src/common/logger.js';
import { loadConfig } from '../../src/config/config.js';
import { DEFAULT_BACKEND_CONFIG } from '../../src/controller/validation.js';
import { Dispatcher } from '../../src/proxy/dispatcher.js';
import { ProxyServer } from '../../src/proxy/proxy-server.js';

/**
 * Flotilla's front door as serve.start() builds it (Dispatcher with the Prometheus metrics and the dashboard's
 * series, ProxyServer with the default http.* settings), routing /hello to one replica at the given socket.
 */
const [socketPath, route, backend] = [process.argv[2], process.argv[3] ?? '/hello', 'hello'];
if (socketPath === undefined) throw new Error('usage: front-door REPLICA_SOCKET [ROUTE]');
const config = loadConfig({ logLevel: 'warn' });
const metrics = new PrometheusMetrics();
const dispatcher = new Dispatcher({
  metrics: fanOut(metrics, new ServingSeries(systemClock)),
  streamIdleTimeoutMs: config.http.streamIdleTimeoutS * 1000,
});
dispatcher.update({
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
const proxy = new ProxyServer(dispatcher, config.http, createLogger('warn', 'json'), () => metrics.render());
const { port } = await proxy.listen('127.0.0.1', 0);
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.once('SIGTERM', () => void proxy.close(0).then(() => process.exit(0)));
