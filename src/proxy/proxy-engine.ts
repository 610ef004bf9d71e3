import { createHash } from 'node:crypto';
import type { Agent, ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import { FlotillaError } from '../common/errors.js';
import { PROTOCOL, readErrorTrailer } from '../replica/protocol.js';
import type { Cancel } from './cancel.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import { stripHopByHop } from './request-guard.js';

/** What the front door learns of an answer while it is relayed. */
export interface ForwardWatch {
  /** The head arrived; `upstream.bytesRead` grows while the body comes, so nothing is done per chunk. */
  headArrived(upstream: { readonly bytesRead: number }): void;
  /** The answer failed after its head was relayed (status for metrics); the client's response is destroyed right after. */
  failed(status: number): void;
  /** When given, told the upstream's status and body hash once its response has ended (shadow comparison). */
  observe?: (status: number, bodyHash: string) => void;
}

interface Forwarding {
  res: ServerResponse;
  cancel: Cancel;
  watch: ForwardWatch;
  settle(error?: Error): void;
}

/** What http-proxy pipes into the upstream request: the already-read body, without a stream per request. */
class BufferedBody {
  constructor(private readonly body: Buffer) {}

  pipe(upstream: ClientRequest): ClientRequest {
    if (this.body.length === 0) upstream.end();
    else upstream.end(this.body);
    return upstream;
  }
}

function relay(proxyRes: IncomingMessage, forwarding: Forwarding): void {
  const { res, watch } = forwarding;
  stripHopByHop(proxyRes.headers);
  proxyRes.headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close';
  if (/^text\/event-stream/i.test(proxyRes.headers['content-type'] ?? '')) proxyRes.headers['x-accel-buffering'] = 'no';
  watch.headArrived(proxyRes.socket);
  proxyRes.once('error', (error: Error) => {
    watch.failed(502);
    res.destroy();
    forwarding.settle(error);
  });
  const hash = watch.observe === undefined ? undefined : createHash('sha256');
  if (hash !== undefined) proxyRes.on('data', (chunk: Buffer) => hash.update(chunk));
  proxyRes.on('end', () => {
    const failure = proxyRes.trailers[PROTOCOL.errorHeader];
    if (failure !== undefined) {
      watch.failed(500);
      res.destroy();
      forwarding.settle(new FlotillaError('HANDLER_ERROR', `the handler failed midway through its answer: ${readErrorTrailer(failure)}`));
      return;
    }
    if (hash !== undefined) watch.observe?.(proxyRes.statusCode ?? 0, hash.digest('hex'));
  });
}

/**
 * The only module that uses http-proxy. `forward` sends an already-read body
 * (so that a request can be retried or replayed) and resolves when the
 * client's response has closed (undefined) or the upstream failed (the
 * error). It always settles: an upstream that resets or dies after its
 * headers were relayed destroys the client's response at once (the client
 * sees a cut connection, never a hang) and settles with the error. Aborting
 * `cancel` destroys the upstream request: http-proxy itself does not do that
 * once the request body has been read. Response hop-by-hop headers are not
 * relayed. Bodies are relayed chunk by chunk as they come (piped, so a slow
 * client pauses the upstream); event streams get `X-Accel-Buffering: no` for
 * proxies in front. A replica that ends its body with the error trailer (its
 * handler failed midway) gets the client's response destroyed too, so the
 * client sees an incomplete body, never a complete-looking one.
 */
export class ProxyEngine {
  private readonly proxy: httpProxy;
  private readonly targets = new WeakMap<ReplicaTarget, httpProxy.ProxyTarget>();

  constructor(agent: Agent) {
    this.proxy = httpProxy.createProxyServer({ agent, xfwd: false, ws: false });
    this.proxy.on('error', () => undefined);
    this.proxy.on('proxyReq', (proxyReq: ClientRequest, _req, _res, options) => {
      const forwarding = (options as { forwarding: Forwarding }).forwarding;
      forwarding.cancel.onAbort(() => proxyReq.destroy());
      proxyReq.prependOnceListener('response', (proxyRes: IncomingMessage) => relay(proxyRes, forwarding));
    });
  }

  forward(
    req: IncomingMessage,
    res: ServerResponse,
    target: ReplicaTarget,
    body: Buffer,
    cancel: Cancel,
    watch: ForwardWatch,
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
      const options = {
        target: this.proxyTarget(target),
        buffer: new BufferedBody(body) as unknown as httpProxy.ServerOptions['buffer'],
        forwarding: { res, cancel, watch, settle },
      };
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
