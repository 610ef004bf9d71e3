import { Agent, createServer } from 'node:http';
import httpProxy from 'http-proxy';
import { listenOnLoopback } from './ready.js';

/**
 * The baseline for the front door: http-proxy with the Dispatcher's agent settings in front of the replica's
 * socket, and nothing else (no routing, policy, metrics or guards).
 */
const socketPath = process.argv[2];
if (socketPath === undefined) throw new Error('usage: bare-proxy REPLICA_SOCKET');
const proxy = httpProxy.createProxyServer({
  agent: new Agent({ keepAlive: true, maxSockets: Infinity }),
  target: { socketPath } as unknown as httpProxy.ProxyTarget,
  xfwd: false,
  ws: false,
});
proxy.on('error', (_error, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
listenOnLoopback(createServer({ keepAliveTimeout: 65_000 }, (req, res) => proxy.web(req, res)));
process.once('SIGTERM', () => process.exit(0));
