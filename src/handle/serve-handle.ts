import type { HandleOptions, ServeHandle as ServeHandleApi } from '../api.js';
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { errorMessage, FlotillaError, isFlotillaError } from '../common/errors.js';
import type { Dispatcher } from '../dataplane/dispatcher.js';
import { CallScope, sendWithRetries, startShadows, type Call } from '../dataplane/pipeline.js';
import { openReplica, requestReplica, type ReplicaReply, type ReplicaRequest } from '../dataplane/replica-request.js';
import { hashBody } from '../dataplane/shadow.js';
import { PROTOCOL, readErrorTrailer, type HandlerErrorBody } from '../replica/protocol.js';
import { decodeStream } from './stream.js';

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

export interface StreamedAnswer {
  contentType: string;
  chunks: AsyncGenerator<Buffer>;
  /** Ends the call at once, even while `chunks` waits for the next chunk. */
  cancel(): void;
}

const MAX_RESPONSE_SETTING = 'handle.maxResponseBytes; stream larger answers with openStream';

/** A handler's error body, at most maxBytes of it (RESPONSE_TOO_LARGE beyond: the answer is cut). */
async function readAtMost(res: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) {
      res.destroy();
      throw new FlotillaError(
        'RESPONSE_TOO_LARGE',
        `the replica's error answer was larger than ${maxBytes} bytes (${MAX_RESPONSE_SETTING}); it was cut`,
        { maxBytes },
      );
    }
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/** A class method name: a JavaScript (or Python) identifier, so it is safe in a header and names a method. */
const METHOD_NAME = /^[A-Za-z_$][A-Za-z0-9_$]{0,127}$/;

/**
 * Calls an endpoint from code, through the same traffic policy, replica
 * router and request pipeline as the HTTP front door (queueing, limits,
 * retries, shadows, timeouts), but straight to the replica.
 */
export class ServeHandle implements ServeHandleApi {
  /**
   * Throws INVALID_ARGUMENT for a methodName that is not an identifier (it travels in a header). `defaultTimeoutMs`
   * bounds calls to a backend without requestTimeoutS (handle calls from replicas, so that a cycle ends).
   */
  constructor(
    private readonly dispatcher: Dispatcher,
    readonly endpoint: string,
    private readonly handleOptions: HandleOptions = {},
    private readonly defaultTimeoutMs?: number,
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
    return new ServeHandle(this.dispatcher, this.endpoint, { ...this.handleOptions, ...options }, this.defaultTimeoutMs);
  }

  /** Two or more arguments are an arguments call (see callArguments). */
  async remote(...args: unknown[]): Promise<unknown> {
    return args.length > 1 ? this.callArguments(args, {}) : this.send(args[0]);
  }

  /** Ray 1.x's handle.remote(*args, **kwargs): the method gets these JSON values instead of a request (PROTOCOL.callHeader). */
  async callArguments(args: unknown[], kwargs: Record<string, unknown>): Promise<unknown> {
    return this.send(argumentsBody(args, kwargs), { [PROTOCOL.callHeader]: 'args' });
  }

  private async send(body: unknown, extraHeaders: Record<string, string> = {}): Promise<unknown> {
    const { call, backend, path, headers, bytes, cancel, scope, reportPrimary } = this.begin(body, extraHeaders);
    let reply: ReplicaReply | undefined;
    try {
      reply = await sendWithRetries(this.dispatcher, call, (replica) =>
        requestReplica(
          replica.target,
          this.replicaRequest(call, path, headers, bytes),
          this.dispatcher.maxResponseBytes,
          MAX_RESPONSE_SETTING,
        ),
      );
    } catch (error) {
      if (!cancel.signal.aborted) throw error;
      throw timedOut(backend, scope.timeoutMs);
    } finally {
      reportPrimary?.(reply && { status: reply.status, bodyHash: hashBody(reply.body), latencyMs: scope.elapsedMs });
      scope.end();
    }
    if (reply.status === 500 && reply.headers[PROTOCOL.errorHeader] === 'handler') throw handlerError(reply.body);
    return decodeBody(reply);
  }

  /** The answer's chunks as they come (see decodeStream); a whole answer is one stream too. */
  async *stream(body?: unknown): AsyncGenerator<unknown> {
    const { contentType, chunks } = await this.openStream(body);
    yield* decodeStream(contentType, chunks);
  }

  /**
   * Sends the call and resolves at the answer's head, holding the replica's
   * slot until its body has been read, abandoned (return() on `chunks`) or
   * failed. requestTimeoutS bounds the time to the head, streamIdleTimeoutS
   * each gap between chunks after it. Retries happen only before the head.
   * A body that fails midway throws from `chunks`: HANDLER_ERROR when the
   * handler failed, REPLICA_UNREACHABLE when the connection broke,
   * REQUEST_TIMEOUT when it went quiet.
   */
  async openStream(body?: unknown): Promise<StreamedAnswer> {
    const { call, backend, path, headers, bytes, cancel, scope, reportPrimary } = this.begin(body);
    let deliver: (res: IncomingMessage) => void = () => undefined;
    const head = new Promise<IncomingMessage>((resolve) => (deliver = resolve));
    let headed = false;
    const done = sendWithRetries(
      this.dispatcher,
      call,
      async (replica) => {
        const res = await openReplica(replica.target, this.replicaRequest(call, path, headers, bytes));
        headed = true;
        scope.headArrived();
        deliver(res);
        if (!res.closed) await new Promise((resolve) => res.once('close', resolve));
      },
      () => !headed,
    );
    done.catch(() => undefined).finally(() => scope.end());
    let res: IncomingMessage;
    try {
      res = await Promise.race([head, done.then(() => head)]);
    } catch (error) {
      reportPrimary?.(undefined);
      if (!cancel.signal.aborted) throw error;
      throw timedOut(backend, scope.timeoutMs);
    }
    if (res.statusCode === 500 && res.headers[PROTOCOL.errorHeader] === 'handler') {
      reportPrimary?.(undefined);
      throw handlerError(await readAtMost(res, this.dispatcher.maxResponseBytes));
    }
    const hash = reportPrimary === undefined ? undefined : createHash('sha256');
    const idleMs = this.dispatcher.streamIdleTimeoutMs;
    const chunks = async function* (): AsyncGenerator<Buffer> {
      let idle: NodeJS.Timeout | undefined;
      const arm = (): void => {
        idle = setTimeout(() => {
          res.destroy(
            new FlotillaError('REQUEST_TIMEOUT', `backend '${backend}' sent no chunk for ${idleMs / 1000} s (streamIdleTimeoutS)`),
          );
        }, idleMs);
      };
      let complete = false;
      try {
        arm();
        for await (const chunk of res) {
          clearTimeout(idle);
          hash?.update(chunk as Buffer);
          yield chunk as Buffer;
          arm();
        }
        const failure = res.trailers[PROTOCOL.errorHeader];
        if (failure !== undefined) throw new FlotillaError('HANDLER_ERROR', readErrorTrailer(failure));
        complete = true;
      } catch (error) {
        if (isFlotillaError(error)) throw error;
        throw new FlotillaError('REPLICA_UNREACHABLE', `the stream from backend '${backend}' broke midway: ${errorMessage(error)}`);
      } finally {
        clearTimeout(idle);
        if (!res.complete) cancel.abort();
        const bodyHash = hash?.digest('hex');
        reportPrimary?.(
          complete && bodyHash !== undefined ? { status: res.statusCode ?? 0, bodyHash, latencyMs: scope.elapsedMs } : undefined,
        );
      }
    };
    return { contentType: res.headers['content-type'] ?? 'application/octet-stream', chunks: chunks(), cancel: () => cancel.abort() };
  }

  /** A call's start: its backend picked, its body encoded, its shadows started, its scope (endpoint count, requestTimeoutS) entered. */
  private begin(body: unknown, extraHeaders: Record<string, string> = {}) {
    const routing = this.dispatcher.endpoint(this.endpoint);
    const backend = this.dispatcher.pickBackend(this.endpoint, this.handleOptions.shardKey);
    const { headers, bytes } = encodeBody(body);
    headers.host = 'serve-handle';
    if (this.handleOptions.methodName !== undefined) headers[PROTOCOL.methodHeader] = this.handleOptions.methodName;
    const cancel = new AbortController();
    const call = { endpoint: this.endpoint, backend, method: bytes === undefined ? 'GET' : 'POST', signal: cancel.signal };
    const path = routing.route ?? '/';
    Object.assign(headers, extraHeaders);
    const reportPrimary = startShadows(this.dispatcher, call, path, headers, bytes ?? Buffer.alloc(0));
    const scope = new CallScope(this.dispatcher, this.endpoint, backend, { timedOut: () => cancel.abort() }, this.defaultTimeoutMs);
    return { call, backend, path, headers, bytes, cancel, scope, reportPrimary };
  }

  private replicaRequest(call: Call, path: string, headers: EncodedBody['headers'], bytes: Buffer | undefined): ReplicaRequest {
    return {
      method: call.method,
      path,
      headers,
      ...(bytes === undefined ? {} : { body: bytes }),
      agent: this.dispatcher.agent,
      signal: call.signal,
    };
  }
}

function argumentsBody(args: unknown[], kwargs: Record<string, unknown>): { args: unknown[]; kwargs: Record<string, unknown> } {
  for (const value of [...args, ...Object.values(kwargs)]) {
    if (value instanceof Uint8Array || value instanceof ArrayBuffer || value === undefined || typeof value === 'function') {
      throw new FlotillaError(
        'INVALID_ARGUMENT',
        'handle arguments travel as JSON: pass JSON values (bytes as base64 text), or one body argument',
      );
    }
  }
  return { args, kwargs };
}

function timedOut(backend: string, timeoutMs: number | undefined): FlotillaError {
  return new FlotillaError('REQUEST_TIMEOUT', `backend '${backend}' did not answer within ${(timeoutMs ?? 0) / 1000} s (requestTimeoutS)`);
}
