import type { HandleOptions, ServeHandle as ServeHandleApi } from '../api.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import type { Dispatcher } from '../proxy/dispatcher.js';
import { requestReplica, type ReplicaReply } from '../proxy/replica-request.js';
import { MAX_ATTEMPTS, mayRetry } from '../proxy/retry.js';
import { hashBody, type Outcome } from '../proxy/shadow.js';
import { PROTOCOL, type HandlerErrorBody } from '../replica/protocol.js';

interface EncodedBody {
  headers: Record<string, string | number>;
  bytes?: Buffer;
}

function encodeBody(body: unknown): EncodedBody {
  if (body === undefined) return { headers: {} };
  let contentType = 'application/json';
  let bytes: Buffer;
  if (typeof body === 'string') {
    contentType = 'text/plain; charset=utf-8';
    bytes = Buffer.from(body);
  } else if (body instanceof Uint8Array || body instanceof ArrayBuffer) {
    contentType = 'application/octet-stream';
    bytes = Buffer.from(body instanceof ArrayBuffer ? new Uint8Array(body) : body);
  } else {
    bytes = Buffer.from(JSON.stringify(body));
  }
  return { headers: { 'content-type': contentType, 'content-length': bytes.length }, bytes };
}

function decodeBody({ headers, body }: ReplicaReply): unknown {
  const type = headers['content-type'] ?? '';
  if (type.startsWith('application/json')) return JSON.parse(body.toString('utf8'));
  if (type.startsWith('text/')) return body.toString('utf8');
  return body;
}

function handlerError(data: Buffer): FlotillaError {
  try {
    const { error } = JSON.parse(data.toString('utf8')) as HandlerErrorBody;
    return new FlotillaError('HANDLER_ERROR', error.message, { type: error.type });
  } catch {
    return new FlotillaError('HANDLER_ERROR', data.toString('utf8'));
  }
}

/**
 * Calls an endpoint from code, through the same traffic policy and replica
 * router as the HTTP front door (queueing, limits, retries, timeouts), but
 * straight to the replica.
 */
export class ServeHandle implements ServeHandleApi {
  constructor(
    private readonly dispatcher: Dispatcher,
    readonly endpoint: string,
    private readonly handleOptions: HandleOptions = {},
  ) {}

  options(options: HandleOptions): ServeHandle {
    return new ServeHandle(this.dispatcher, this.endpoint, { ...this.handleOptions, ...options });
  }

  async remote(body?: unknown): Promise<unknown> {
    const routing = this.dispatcher.endpoint(this.endpoint);
    const backend = this.dispatcher.pickBackend(this.endpoint, this.handleOptions.shardKey);
    const { headers, bytes } = encodeBody(body);
    headers.host = 'serve-handle';
    if (this.handleOptions.methodName !== undefined) headers[PROTOCOL.methodHeader] = this.handleOptions.methodName;
    const method = bytes === undefined ? 'GET' : 'POST';
    const path = routing.route ?? '/';
    const started = performance.now();
    let reportPrimary: (outcome: Outcome | undefined) => void = () => undefined;
    if (Object.keys(routing.shadows).length > 0) {
      const primary = new Promise<Outcome | undefined>((resolve) => (reportPrimary = resolve));
      const mirrored = { endpoint: this.endpoint, primaryBackend: backend, method, path, headers, body: bytes ?? Buffer.alloc(0), primary };
      this.dispatcher.shadows.mirror(mirrored, routing.shadows);
    }
    const cancel = new AbortController();
    const timeoutMs = this.dispatcher.requestTimeoutMs(backend);
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => cancel.abort(), timeoutMs);
    const leave = this.dispatcher.endpointRequests.enter(this.endpoint);
    const timedOut = () =>
      new FlotillaError('REQUEST_TIMEOUT', `backend '${backend}' did not answer within ${(timeoutMs ?? 0) / 1000} s (requestTimeoutS)`);
    try {
      const tried = new Set<string>();
      for (let attempt = 1; ; attempt++) {
        const lease = await this.dispatcher.acquire(backend, cancel.signal, tried).catch((error: unknown) => {
          throw cancel.signal.aborted ? timedOut() : error;
        });
        let reply: ReplicaReply;
        try {
          reply = await requestReplica(lease.replica.target, {
            method,
            path,
            headers,
            ...(bytes === undefined ? {} : { body: bytes }),
            agent: this.dispatcher.agent,
            signal: cancel.signal,
          });
        } catch (error) {
          if (cancel.signal.aborted) throw timedOut();
          if (isFlotillaError(error)) throw error;
          this.dispatcher.reportFailure(backend, lease.replica.id);
          tried.add(lease.replica.id);
          if (attempt < MAX_ATTEMPTS && mayRetry(error as Error, method)) continue;
          throw new FlotillaError(
            'REPLICA_UNREACHABLE',
            `replica ${lease.replica.id} of endpoint '${this.endpoint}' failed: ${(error as Error).message}`,
          );
        } finally {
          lease.release();
        }
        reportPrimary({ status: reply.status, bodyHash: hashBody(reply.body), latencyMs: performance.now() - started });
        if (reply.status === 500 && reply.headers[PROTOCOL.errorHeader] === 'handler') throw handlerError(reply.body);
        return decodeBody(reply);
      }
    } finally {
      reportPrimary(undefined);
      clearTimeout(timer);
      leave();
    }
  }
}
