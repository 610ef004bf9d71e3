import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

const CONNECT_TIMEOUT_MS = 10_000;

export interface Exchange {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: string;
  /** Limit on the whole exchange up to the response head; none by default, so long calls are never cut. */
  timeoutMs?: number;
}

/**
 * One HTTP(S) request on node:http, as the remote client and the CLI send
 * them: no header or body timeouts (a create that builds an image or a
 * followed log may take as long as it takes), a 10 s limit on connecting, and
 * a fresh connection per call (no idle keep-alive socket to race the server
 * closing it). Resolves with the response head; the body is the caller's.
 */
export function exchange({ method, url, headers = {}, body, timeoutMs }: Exchange): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, {
      method,
      agent: false,
      headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    });
    const timers: NodeJS.Timeout[] = [];
    const clear = () => timers.forEach((timer) => clearTimeout(timer));
    const fail = (message: string) => req.destroy(Object.assign(new Error(message), { code: 'ETIMEDOUT' }));
    if (timeoutMs !== undefined) timers.push(setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs));
    req.once('socket', (socket) => {
      if (!socket.connecting) return;
      const timer = setTimeout(() => fail(`could not connect within ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS);
      timers.push(timer);
      socket.once('connect', () => clearTimeout(timer));
    });
    req.once('error', (error) => {
      clear();
      reject(error);
    });
    req.once('response', (res) => {
      clear();
      resolve(res);
    });
    req.end(body);
  });
}

export async function readBody(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
