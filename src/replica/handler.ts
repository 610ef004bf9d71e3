import type { IncomingMessage, ServerResponse } from 'node:http';
import { pathToFileURL } from 'node:url';
import { errorTrailer, PROTOCOL, type HandlerErrorBody, type ReplicaEntry } from './protocol.js';

/** The user's code, loaded: one call, batches (when it accepts them) and reconfigure (when it has one). */
export interface LoadedBackend {
  name: string;
  acceptsBatch: boolean;
  /** Whether the batch entry point (the function, or the class's call) is an async generator function, so it streams. */
  streams: boolean;
  call(request: Request, methodName: string | undefined): Promise<unknown>;
  /** A handle's arguments call (PROTOCOL.callHeader): the method gets these values instead of a request. */
  callArguments(args: unknown[], methodName: string | undefined): Promise<unknown>;
  callBatch(requests: Request[]): Promise<unknown>;
  reconfigure: ((userConfig: unknown) => Promise<void>) | undefined;
}

function isAsyncGenerator(value: unknown): boolean {
  return Object.prototype.toString.call(value) === '[object AsyncGeneratorFunction]';
}

function isClass(value: unknown): value is new (...args: unknown[]) => Record<string, unknown> {
  return typeof value === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(value));
}

const SELF_CONTAINED = 'docs/getting-started.md#shipped-code-must-be-self-contained';

/** A name that shipped code uses but does not define (a closure, an import, a runner's helper) says where to read why. */
function explainShipped<T>(entry: ReplicaEntry, run: () => Promise<T>): Promise<T> {
  if (!entry.module.endsWith('/.flotilla/definition.mjs')) return run();
  return run().catch((error: unknown) => {
    if (error instanceof ReferenceError && !error.message.includes(SELF_CONTAINED)) {
      error.message +=
        ' (a shipped function or class can use only what it defines itself: no outer variables, imports or helpers ' +
        `a transformer added; see ${SELF_CONTAINED})`;
    }
    throw error;
  });
}

/** The methods a caller can name on an instance: its own and its classes', without the constructor. */
function methodsOf(instance: Record<string, unknown>): string[] {
  const names = new Set<string>();
  for (
    let object: object | null = instance;
    object !== null && object !== Object.prototype;
    object = Object.getPrototypeOf(object) as object | null
  ) {
    for (const name of Object.getOwnPropertyNames(object))
      if (name !== 'constructor' && typeof instance[name] === 'function') names.add(name);
  }
  return [...names].sort();
}

/** Imports the entry's module and wraps its export; a class is constructed once, with the entry's initArgs. */
export async function loadBackend(entry: ReplicaEntry): Promise<LoadedBackend> {
  const loaded = await explainShipped(entry, () => load(entry));
  const { reconfigure } = loaded;
  return {
    ...loaded,
    call: (request, methodName) => explainShipped(entry, () => loaded.call(request, methodName)),
    callArguments: (args, methodName) => explainShipped(entry, () => loaded.callArguments(args, methodName)),
    callBatch: (requests) => explainShipped(entry, () => loaded.callBatch(requests)),
    reconfigure: reconfigure && ((userConfig) => explainShipped(entry, () => reconfigure(userConfig))),
  };
}

async function load(entry: ReplicaEntry): Promise<LoadedBackend> {
  const module = (await import(pathToFileURL(entry.module).href)) as Record<string, unknown>;
  const exported = module[entry.exportName];
  if (typeof exported !== 'function') {
    const found = Object.keys(module).join(', ') || 'none';
    throw new Error(`${entry.module} has no function or class export '${entry.exportName}' (exports: ${found})`);
  }
  const acceptsBatch = (exported as { acceptsBatch?: unknown }).acceptsBatch === true;
  if (isClass(exported)) {
    const name = exported.name || 'the backend class';
    const instance = new exported(...entry.initArgs);
    const method = (methodName: string): ((...args: unknown[]) => unknown) => {
      const found = instance[methodName];
      if (typeof found !== 'function')
        throw new Error(`${name} has no method '${methodName}'; its methods: ${methodsOf(instance).join(', ')}`);
      return found.bind(instance) as (...args: unknown[]) => unknown;
    };
    return {
      name,
      acceptsBatch,
      streams: isAsyncGenerator(instance.call),
      call: async (request, methodName) => method(methodName ?? 'call')(request),
      callArguments: async (args, methodName) => method(methodName ?? 'call')(...args),
      callBatch: async (requests) => method('call')(requests),
      reconfigure:
        typeof instance.reconfigure === 'function' ? async (userConfig) => void (await method('reconfigure')(userConfig)) : undefined,
    };
  }
  const fn = exported as (...input: unknown[]) => unknown;
  const name = fn.name || 'the backend function';
  const onlyCall = (methodName: string | undefined): void => {
    if (methodName !== undefined && methodName !== 'call') {
      throw new Error(`function backend ${name} has no method '${methodName}'; only class backends do`);
    }
  };
  return {
    name,
    acceptsBatch,
    streams: isAsyncGenerator(fn),
    call: async (request, methodName) => {
      onlyCall(methodName);
      return fn(request);
    },
    callArguments: async (args, methodName) => {
      onlyCall(methodName);
      return fn(...args);
    },
    callBatch: async (requests) => fn(requests),
    reconfigure: undefined,
  };
}

/** A variable route's path parameters (PROTOCOL.pathParamsHeader), {} for a route without any. */
function pathParams(req: IncomingMessage): Record<string, string> {
  const header = req.headers[PROTOCOL.pathParamsHeader];
  if (typeof header !== 'string') return {};
  try {
    return JSON.parse(header) as Record<string, string>;
  } catch {
    return {};
  }
}

/** The Request's signal aborts when the caller (the proxy) hangs up before the response is sent; `params` holds the route's path parameters. */
export async function toRequest(req: IncomingMessage, res: ServerResponse): Promise<Request> {
  return Object.assign(await toFetchRequest(req, res), { params: pathParams(req) });
}

async function toFetchRequest(req: IncomingMessage, res: ServerResponse): Promise<Request> {
  const hangUp = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) hangUp.abort();
  });
  const signal = hangUp.signal;
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) headers.append(name, item);
  }
  const url = `http://${req.headers.host ?? 'replica'}${req.url ?? '/'}`;
  const method = req.method ?? 'GET';
  if (method === 'GET' || method === 'HEAD') return new Request(url, { method, headers, signal });
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return new Request(url, { method, headers, signal, body: Buffer.concat(chunks) });
}

function sendBody(res: ServerResponse, status: number, contentType: string, body: Buffer | string): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { 'content-type': contentType, 'content-length': bytes.length });
  res.end(bytes);
}

export function isStream(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}

function streamContentType(first: unknown): string {
  if (typeof first === 'string') return 'text/plain; charset=utf-8';
  return first instanceof Uint8Array ? 'application/octet-stream' : 'application/x-ndjson';
}

/** A chunk as it goes on the wire: strings and bytes as they are, any other value as one NDJSON line. */
function encodeChunk(value: unknown): Buffer | string {
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return `${JSON.stringify(value ?? null)}\n`;
}

function copyHeaders(res: ServerResponse, headers: Headers): void {
  headers.forEach((value, name) => {
    if (name !== 'content-length' && name !== 'set-cookie') res.setHeader(name, value);
  });
  const cookies = headers.getSetCookie();
  if (cookies.length > 0) res.setHeader('set-cookie', cookies);
}

/**
 * Streams an iterator's chunks as they come, chunked, pulling the next one only
 * once the client has taken the last (write() false waits for drain). The head
 * goes out with the first chunk, so a failure before it is an ordinary 500. A
 * client that leaves ends the iteration at once (return()). A failure midway
 * ends the body with the error trailer, which the front door turns into a cut
 * connection.
 */
async function streamChunks(
  res: ServerResponse,
  iterator: AsyncIterator<unknown>,
  head: (first: unknown) => void,
  onError: (error: unknown) => void,
): Promise<void> {
  let gone = false;
  const leave = (): void => {
    gone = true;
    void Promise.resolve(iterator.return?.()).catch(() => undefined);
  };
  let step = await iterator.next();
  if (res.destroyed) return leave();
  head(step.value);
  res.once('close', () => {
    if (!res.writableFinished) leave();
  });
  try {
    for (; step.done !== true && !gone; step = await iterator.next()) {
      if (!res.write(encodeChunk(step.value)) && !gone) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
    }
  } catch (error) {
    if (gone) return;
    onError(error);
    res.addTrailers({ [PROTOCOL.errorHeader]: errorTrailer(errorText(error)) });
  }
  if (!gone) res.end();
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** Maps a handler's value onto the response: a Response (its body streamed), a stream of chunks, text, bytes, or JSON. */
export async function sendResult(
  res: ServerResponse,
  result: unknown,
  onStreamError: (error: unknown) => void = () => undefined,
): Promise<void> {
  if (result instanceof Response) {
    if (result.body === null) {
      copyHeaders(res, result.headers);
      res.setHeader('content-length', 0);
      res.writeHead(result.status);
      res.end();
      return;
    }
    const head = (): void => {
      copyHeaders(res, result.headers);
      res.writeHead(result.status);
    };
    return streamChunks(res, (result.body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator](), head, onStreamError);
  }
  if (typeof result === 'string') return sendBody(res, 200, 'text/plain; charset=utf-8', result);
  if (result instanceof Uint8Array) return sendBody(res, 200, 'application/octet-stream', Buffer.from(result));
  if (result instanceof ArrayBuffer) return sendBody(res, 200, 'application/octet-stream', Buffer.from(result));
  if (isStream(result)) {
    const head = (first: unknown): void => void res.writeHead(200, { 'content-type': streamContentType(first) });
    return streamChunks(res, result[Symbol.asyncIterator](), head, onStreamError);
  }
  const json = JSON.stringify(result ?? null);
  if (json === undefined) throw new TypeError(`handler returned a ${typeof result}, which is not JSON-serializable`);
  return sendBody(res, 200, 'application/json', json);
}

export function sendHandlerError(res: ServerResponse, error: unknown, code: HandlerErrorBody['error']['code'] = 'HANDLER_ERROR'): void {
  const body: HandlerErrorBody = {
    error: {
      code,
      type: error instanceof Error ? error.name : typeof error,
      message: error instanceof Error ? error.message : String(error),
    },
  };
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.setHeader(PROTOCOL.errorHeader, 'handler');
  sendBody(res, 500, 'application/json', JSON.stringify(body));
}
