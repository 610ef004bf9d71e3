import type { Agent, IncomingMessage, ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import type { ReplicaTarget } from '../runtime/container-runtime.js';

/**
 * The only module that uses http-proxy. `forward` calls `done` exactly once,
 * when the client's response has closed (finished or aborted) or the upstream
 * failed. A client that hangs up destroys its upstream request, which
 * http-proxy itself does not do once the request body has been read.
 */
export class ProxyEngine {
  private readonly proxy: httpProxy;

  constructor(agent: Agent) {
    this.proxy = httpProxy.createProxyServer({ agent, xfwd: true, ws: false });
    this.proxy.on('proxyReq', (proxyReq, _req, res) => {
      res.once('close', () => {
        if (!res.writableFinished) proxyReq.destroy();
      });
    });
  }

  forward(req: IncomingMessage, res: ServerResponse, target: ReplicaTarget, done: (error?: Error) => void): void {
    let settled = false;
    const settle = (error?: Error): void => {
      if (settled) return;
      settled = true;
      done(error);
    };
    res.once('close', () => settle());
    const proxyTarget = 'socketPath' in target ? { socketPath: target.socketPath } : { ...target, protocol: 'http:' };
    this.proxy.web(req, res, { target: proxyTarget as unknown as httpProxy.ProxyTarget }, (error) => settle(error));
  }

  close(): void {
    this.proxy.close();
  }
}
