import { createHash } from 'node:crypto';
import type { Agent, ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import httpProxy from 'http-proxy';
import type { ReplicaTarget } from '../runtime/container-runtime.js';

/**
 * The only module that uses http-proxy. `forward` sends an already-read body
 * (so that a request can be retried or replayed) and resolves when the
 * client's response has closed (undefined) or the upstream failed (the
 * error). Aborting `signal` destroys the upstream request: http-proxy itself
 * does not do that once the request body has been read.
 */
export class ProxyEngine {
  private readonly proxy: httpProxy;
  private readonly signals = new WeakMap<IncomingMessage, AbortSignal>();
  private readonly observers = new WeakMap<IncomingMessage, (status: number, bodyHash: string) => void>();

  constructor(agent: Agent) {
    this.proxy = httpProxy.createProxyServer({ agent, xfwd: true, ws: false });
    this.proxy.on('proxyReq', (proxyReq: ClientRequest, req: IncomingMessage) => {
      const signal = this.signals.get(req);
      if (signal?.aborted) proxyReq.destroy();
      else signal?.addEventListener('abort', () => proxyReq.destroy(), { once: true });
    });
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
      const observe = this.observers.get(req);
      if (observe === undefined) return;
      const hash = createHash('sha256');
      proxyRes.on('data', (chunk: Buffer) => hash.update(chunk));
      proxyRes.on('end', () => observe(proxyRes.statusCode ?? 0, hash.digest('hex')));
    });
  }

  /** `observe`, when given, is told the upstream's status and body hash once its response has ended. */
  forward(
    req: IncomingMessage,
    res: ServerResponse,
    target: ReplicaTarget,
    body: Buffer,
    signal: AbortSignal,
    observe?: (status: number, bodyHash: string) => void,
  ): Promise<Error | undefined> {
    return new Promise((resolve) => {
      let settled = false;
      const settle = (error?: Error): void => {
        if (settled) return;
        settled = true;
        res.off('close', onClose);
        resolve(error);
      };
      const onClose = (): void => settle();
      res.once('close', onClose);
      this.signals.set(req, signal);
      if (observe !== undefined) this.observers.set(req, observe);
      const proxyTarget = 'socketPath' in target ? { socketPath: target.socketPath } : { ...target, protocol: 'http:' };
      this.proxy.web(req, res, { target: proxyTarget as unknown as httpProxy.ProxyTarget, buffer: Readable.from([body]) }, (error: Error) =>
        settle(error),
      );
    });
  }

  close(): void {
    this.proxy.close();
  }
}
