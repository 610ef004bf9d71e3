import type { IncomingMessage, ServerResponse } from 'node:http';
import { pathToFileURL } from 'node:url';
import { PROTOCOL, type HandlerErrorBody, type ReplicaEntry } from './protocol.js';

export type Handler = (request: Request, methodName: string | undefined) => Promise<unknown>;

function isClass(value: unknown): value is new (...args: unknown[]) => Record<string, unknown> {
  return typeof value === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(value));
}

/** Imports the entry's module and turns its export into a handler; a class is constructed once. */
export async function loadHandler(entry: ReplicaEntry): Promise<Handler> {
  const module = (await import(pathToFileURL(entry.module).href)) as Record<string, unknown>;
  const exported = module[entry.exportName];
  if (typeof exported !== 'function') {
    const found = Object.keys(module).join(', ') || 'none';
    throw new Error(`${entry.module} has no function or class export '${entry.exportName}' (exports: ${found})`);
  }
  if (isClass(exported)) {
    const instance = new exported(...entry.initArgs);
    return async (request, methodName) => {
      const name = methodName ?? 'call';
      const method = instance[name];
      if (typeof method !== 'function') {
        throw new Error(`${exported.name || 'the backend class'} has no method '${name}'`);
      }
      return (method as (r: Request) => unknown).call(instance, request);
    };
  }
  const fn = exported as (request: Request) => unknown;
  return async (request, methodName) => {
    if (methodName !== undefined && methodName !== 'call') {
      throw new Error(`function backend ${fn.name || ''} has no method '${methodName}'; only class backends do`);
    }
    return fn(request);
  };
}

/** The Request's signal aborts when the caller (the proxy) hangs up before the response is sent. */
export async function toRequest(req: IncomingMessage, res: ServerResponse): Promise<Request> {
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

/** Maps a handler's value onto the response: Response as is, text, bytes, or JSON. */
export async function sendResult(res: ServerResponse, result: unknown): Promise<void> {
  if (result instanceof Response) {
    const body = Buffer.from(await result.arrayBuffer());
    result.headers.forEach((value, name) => {
      if (name !== 'content-length' && name !== 'set-cookie') res.setHeader(name, value);
    });
    const cookies = result.headers.getSetCookie();
    if (cookies.length > 0) res.setHeader('set-cookie', cookies);
    res.setHeader('content-length', body.length);
    res.writeHead(result.status);
    res.end(body);
    return;
  }
  if (typeof result === 'string') return sendBody(res, 200, 'text/plain; charset=utf-8', result);
  if (result instanceof Uint8Array) return sendBody(res, 200, 'application/octet-stream', Buffer.from(result));
  if (result instanceof ArrayBuffer) return sendBody(res, 200, 'application/octet-stream', Buffer.from(result));
  const json = JSON.stringify(result ?? null);
  if (json === undefined) throw new TypeError(`handler returned a ${typeof result}, which is not JSON-serializable`);
  return sendBody(res, 200, 'application/json', json);
}

export function sendHandlerError(res: ServerResponse, error: unknown): void {
  const body: HandlerErrorBody = {
    error: {
      code: 'HANDLER_ERROR',
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
