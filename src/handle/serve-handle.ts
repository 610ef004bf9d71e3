import type { HandleOptions, ServeHandle as ServeHandleApi } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { Dispatcher } from '../proxy/dispatcher.js';
import { sendWithRetries, startShadows } from '../proxy/pipeline.js';
import { requestReplica, type ReplicaReply } from '../proxy/replica-request.js';
import { hashBody } from '../proxy/shadow.js';
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

/** A class method name: a JavaScript (or Python) identifier, so it is safe in a header and names a method. */
const METHOD_NAME = /^[A-Za-z_$][A-Za-z0-9_$]{0,127}$/;

/**
 * Calls an endpoint from code, through the same traffic policy, replica
 * router and request pipeline as the HTTP front door (queueing, limits,
 * retries, shadows, timeouts), but straight to the replica.
 */
export class ServeHandle implements ServeHandleApi {
  /** Throws INVALID_ARGUMENT for a methodName that is not an identifier (it travels in a header). */
  constructor(
    private readonly dispatcher: Dispatcher,
    readonly endpoint: string,
    private readonly handleOptions: HandleOptions = {},
  ) {
    const { methodName } = handleOptions;
    if (methodName !== undefined && (typeof methodName !== 'string' || !METHOD_NAME.test(methodName))) {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        `methodName must name a method of the backend class (letters, digits, _ and $, not starting with a digit, at most 128), got ${JSON.stringify(methodName)}`,
      );
    }
  }

  options(options: HandleOptions): ServeHandle {
    return new ServeHandle(this.dispatcher, this.endpoint, { ...this.handleOptions, ...options });
  }

  async remote(body?: unknown): Promise<unknown> {
    const routing = this.dispatcher.endpoint(this.endpoint);
    const backend = this.dispatcher.pickBackend(this.endpoint, this.handleOptions.shardKey);
    const { headers, bytes } = encodeBody(body);
    headers.host = 'serve-handle';
    if (this.handleOptions.methodName !== undefined) headers[PROTOCOL.methodHeader] = this.handleOptions.methodName;
    const cancel = new AbortController();
    const call = { endpoint: this.endpoint, backend, method: bytes === undefined ? 'GET' : 'POST', signal: cancel.signal };
    const path = routing.route ?? '/';
    const started = performance.now();
    const reportPrimary = startShadows(this.dispatcher, call, path, headers, bytes ?? Buffer.alloc(0));
    const timeoutMs = this.dispatcher.requestTimeoutMs(backend);
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => cancel.abort(), timeoutMs);
    const leave = this.dispatcher.endpointRequests.enter(this.endpoint);
    let reply: ReplicaReply | undefined;
    try {
      reply = await sendWithRetries(this.dispatcher, call, (replica) =>
        requestReplica(replica.target, {
          method: call.method,
          path,
          headers,
          ...(bytes === undefined ? {} : { body: bytes }),
          agent: this.dispatcher.agent,
          signal: cancel.signal,
        }),
      );
    } catch (error) {
      if (!cancel.signal.aborted) throw error;
      throw new FlotillaError(
        'REQUEST_TIMEOUT',
        `backend '${backend}' did not answer within ${(timeoutMs ?? 0) / 1000} s (requestTimeoutS)`,
      );
    } finally {
      reportPrimary?.(reply && { status: reply.status, bodyHash: hashBody(reply.body), latencyMs: performance.now() - started });
      clearTimeout(timer);
      leave();
    }
    if (reply.status === 500 && reply.headers[PROTOCOL.errorHeader] === 'handler') throw handlerError(reply.body);
    return decodeBody(reply);
  }
}
