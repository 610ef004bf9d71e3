import { createHash } from 'node:crypto';
import type { Agent, ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import { stripHopByHop } from './request-guard.js';

interface Forwarding {
  res: ServerResponse;
  signal: AbortSignal;
  observe: ((status: number, bodyHash: string) => void) | undefined;
  settle(error?: Error): void;
}

/** What http-proxy pipes into the upstream request: the already-read body, without a stream per request. */
class BufferedBody {
  constructor(private readonly body: Buffer) {}

  pipe(upstream: ClientRequest): ClientRequest {
    upstream.end(this.body);
    return upstream;
  }
}

/**
 * The only module that uses http-proxy. `forward` sends an already-read body
 * (so that a request can be retried or replayed) and resolves when the
 * client's response has closed (undefined) or the upstream failed (the
 * error). It always settles: an upstream that resets or dies after its
 * headers were relayed destroys the client's response at once (the client
 * sees a cut connection, never a hang) and settles with the error. Aborting
 * `signal` destroys the upstream request: http-proxy itself does not do that
 * once the request body has been read. Response hop-by-hop headers are not
 * relayed.
 */
export class ProxyEngine {
  private readonly proxy: httpProxy;
  private readonly forwarding = new WeakMap<IncomingMessage, Forwarding>();
  private readonly targets = new WeakMap<ReplicaTarget, httpProxy.ProxyTarget>();

  constructor(agent: Agent) {
    this.proxy = httpProxy.createProxyServer({ agent, xfwd: false, ws: false });
    this.proxy.on('error', () => undefined);
    this.proxy.on('proxyReq', (proxyReq: ClientRequest, req: IncomingMessage) => {
      const signal = this.forwarding.get(req)?.signal;
      if (signal?.aborted) proxyReq.destroy();
      else signal?.addEventListener('abort', () => proxyReq.destroy(), { once: true });
    });
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
      const forwarding = this.forwarding.get(req);
      if (forwarding === undefined) return;
      stripHopByHop(proxyRes.headers);
      proxyRes.headers.connection = forwarding.res.shouldKeepAlive ? 'keep-alive' : 'close';
      proxyRes.once('error', (error: Error) => {
        forwarding.res.destroy();
        forwarding.settle(error);
      });
      const observe = forwarding.observe;
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
      this.forwarding.set(req, { res, signal, observe, settle });
      const options = { target: this.proxyTarget(target), buffer: new BufferedBody(body) as unknown as httpProxy.ServerOptions['buffer'] };
      this.proxy.web(req, res, options, (error: Error) => settle(error));
    });
  }

  close(): void {
    this.proxy.close();
  }

  private proxyTarget(target: ReplicaTarget): httpProxy.ProxyTarget {
    let found = this.targets.get(target);
    if (found === undefined) {
      found = ('socketPath' in target
        ? { socketPath: target.socketPath }
        : { ...target, protocol: 'http:' }) as unknown as httpProxy.ProxyTarget;
      this.targets.set(target, found);
    }
    return found;
  }
}
