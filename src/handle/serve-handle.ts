import { request, type IncomingMessage } from 'node:http';
import type { HandleOptions, ServeHandle as ServeHandleApi } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { Dispatcher } from '../proxy/dispatcher.js';
import { PROTOCOL, type HandlerErrorBody } from '../replica/protocol.js';

interface EncodedBody {
  contentType?: string;
  bytes?: Buffer;
}

function encodeBody(body: unknown): EncodedBody {
  if (body === undefined) return {};
  if (typeof body === 'string') return { contentType: 'text/plain; charset=utf-8', bytes: Buffer.from(body) };
  if (body instanceof Uint8Array) return { contentType: 'application/octet-stream', bytes: Buffer.from(body) };
  return { contentType: 'application/json', bytes: Buffer.from(JSON.stringify(body)) };
}

function decodeBody(response: IncomingMessage, bytes: Buffer): unknown {
  const type = response.headers['content-type'] ?? '';
  if (type.startsWith('application/json')) return JSON.parse(bytes.toString('utf8'));
  if (type.startsWith('text/')) return bytes.toString('utf8');
  return bytes;
}

function handlerError(bytes: Buffer): FlotillaError {
  try {
    const { error } = JSON.parse(bytes.toString('utf8')) as HandlerErrorBody;
    return new FlotillaError('HANDLER_ERROR', error.message, { type: error.type });
  } catch {
    return new FlotillaError('HANDLER_ERROR', bytes.toString('utf8'));
  }
}

/**
 * Calls an endpoint from code, through the same traffic policy and replica
 * router as the HTTP front door, but straight to the replica.
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
    const lease = await this.dispatcher.acquire(this.dispatcher.pickBackend(this.endpoint));
    try {
      const { contentType, bytes } = encodeBody(body);
      const headers: Record<string, string | number> = { host: 'serve-handle' };
      if (contentType !== undefined && bytes !== undefined) {
        headers['content-type'] = contentType;
        headers['content-length'] = bytes.length;
      }
      if (this.handleOptions.methodName !== undefined) headers[PROTOCOL.methodHeader] = this.handleOptions.methodName;
      const { response, data } = await new Promise<{ response: IncomingMessage; data: Buffer }>((resolve, reject) => {
        const req = request(
          {
            ...lease.replica.target,
            agent: this.dispatcher.agent,
            method: bytes === undefined ? 'GET' : 'POST',
            path: routing.route ?? '/',
            headers,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('end', () => resolve({ response: res, data: Buffer.concat(chunks) }));
            res.on('error', reject);
          },
        );
        req.on('error', (error) =>
          reject(
            new FlotillaError(
              'REPLICA_UNREACHABLE',
              `replica ${lease.replica.id} of endpoint '${this.endpoint}' did not answer: ${error.message}`,
            ),
          ),
        );
        req.end(bytes);
      });
      if (response.statusCode === 500 && response.headers[PROTOCOL.errorHeader] === 'handler') throw handlerError(data);
      return decodeBody(response, data);
    } finally {
      lease.release();
    }
  }
}
