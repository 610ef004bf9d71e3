import { createHash } from 'node:crypto';
import type { Agent, ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import { FlotillaError } from '../common/errors.js';
import { PROTOCOL, readErrorTrailer } from '../replica/protocol.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import { stripHopByHop } from './request-guard.js';

/** What the front door learns of a request while it is forwarded. */
export interface ForwardWatch {
  /** The request to the replica was made: destroying it cuts the forward. */
  sending(upstream: ClientRequest): void;
  /** The head arrived; `upstream.bytesRead` grows while the body comes, so nothing is done per chunk. */
  headArrived(upstream: { readonly bytesRead: number }): void;
  /**
   * The forward failed, once: before the head with the error alone; after it with the status to count too, the
   * client's response destroyed already.
   */
  failed(error: Error, status?: number): void;
  /** Whether the answer is hashed, for `observed` (shadow comparison). */
  readonly shadowed: boolean;
  /** Told the upstream's status and body hash once its response has ended (only when shadowed). */
  observed(status: number, bodyHash: string): void;
}

/**
 * One forward, and whether it failed. It is what http-proxy pipes into the upstream request, and pipes nothing: the
 * already-read body is written when the request has its socket (sendBody), so it goes out at once, not buffered.
 */
class Forward {
  private done = false;

  constructor(
    readonly res: ServerResponse,
    readonly watch: ForwardWatch,
    private readonly body: Buffer,
  ) {}

  pipe(upstream: ClientRequest): ClientRequest {
    return upstream;
  }

  sendBody(upstream: ClientRequest): void {
    if (this.body.length === 0) upstream.end();
    else upstream.end(this.body);
  }

  fail(error: Error, status?: number): void {
    if (this.done) return;
    this.done = true;
    if (status !== undefined) this.res.destroy();
    this.watch.failed(error, status);
  }
}

/** The upstream request as the engine tags it with its forward. */
type UpstreamRequest = ClientRequest & { forward?: Forward };

function relay(proxyRes: IncomingMessage, forward: Forward): void {
  const { res, watch } = forward;
  stripHopByHop(proxyRes.headers);
  proxyRes.headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close';
  const type = proxyRes.headers['content-type'];
  if (type !== undefined && /^text\/event-stream/i.test(type)) proxyRes.headers['x-accel-buffering'] = 'no';
  watch.headArrived(proxyRes.socket);
  proxyRes.on('error', (error: Error) => forward.fail(error, 502));
  const hash = watch.shadowed ? createHash('sha256') : undefined;
  if (hash !== undefined) proxyRes.on('data', (chunk: Buffer) => hash.update(chunk));
  proxyRes.on('end', () => {
    const failure = proxyRes.rawTrailers.length === 0 ? undefined : proxyRes.trailers[PROTOCOL.errorHeader];
    if (failure !== undefined) {
      forward.fail(new FlotillaError('HANDLER_ERROR', `the handler failed midway through its answer: ${readErrorTrailer(failure)}`), 500);
      return;
    }
    if (hash !== undefined) watch.observed(proxyRes.statusCode ?? 0, hash.digest('hex'));
  });
}

/**
 * The only module that uses http-proxy. `forward` sends an already-read body
 * (so that a request can be retried or replayed) and tells its watch what
 * becomes of it; the forward is over when the client's response closes, or
 * when `failed` is called. An upstream that resets or dies after its headers
 * were relayed destroys the client's response at once (the client sees a cut
 * connection, never a hang). Destroying the upstream request (given to
 * `sending`) cuts a forward: http-proxy itself does not do that once the
 * request body has been read. Response hop-by-hop headers are not relayed.
 * Bodies are relayed chunk by chunk as they come (piped, so a slow client
 * pauses the upstream); event streams get `X-Accel-Buffering: no` for proxies
 * in front. A replica that ends its body with the error trailer (its handler
 * failed midway) gets the client's response destroyed too, so the client sees
 * an incomplete body, never a complete-looking one.
 */
export class ProxyEngine {
  private readonly proxy: httpProxy;
  private readonly targets = new WeakMap<ReplicaTarget, httpProxy.ProxyTarget>();

  constructor(agent: Agent) {
    this.proxy = httpProxy.createProxyServer({ agent, xfwd: false, ws: false });
    this.proxy.on('error', () => undefined);
    // http-proxy emits proxyReq when the upstream request has its socket (always: Expect is never forwarded).
    this.proxy.on('proxyReq', (proxyReq: UpstreamRequest, _req, _res, options) => {
      const forward = (options as { forwarding: Forward }).forwarding;
      proxyReq.forward = forward;
      forward.watch.sending(proxyReq);
      if (!proxyReq.destroyed) forward.sendBody(proxyReq);
    });
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage & { req?: UpstreamRequest }) => {
      const forward = proxyRes.req?.forward;
      if (forward !== undefined) relay(proxyRes, forward);
    });
  }

  forward(req: IncomingMessage, res: ServerResponse, target: ReplicaTarget, body: Buffer, watch: ForwardWatch): void {
    const forward = new Forward(res, watch, body);
    const options = {
      target: this.proxyTarget(target),
      buffer: forward as unknown as httpProxy.ServerOptions['buffer'],
      forwarding: forward,
    };
    try {
      this.proxy.web(req, res, options, (error: Error) => forward.fail(error));
    } catch (error) {
      forward.fail(error as Error);
    }
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
