import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { PROTOCOL } from './protocol.js';

type WireValue = { json: unknown } | { text: string } | { bytes: string };

function toWire(value: unknown): WireValue {
  if (typeof value === 'string') return { text: value };
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString('base64') };
  return { json: value ?? null };
}

function fromWire(wire: WireValue): unknown {
  if ('text' in wire) return wire.text;
  if ('bytes' in wire) return Buffer.from(wire.bytes, 'base64');
  return wire.json;
}

/** A handle call that failed: `code` is Flotilla's error code (HANDLER_ERROR, REQUEST_TIMEOUT, ENDPOINT_NOT_FOUND, FORBIDDEN, ...). */
export class HandleCallError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'HandleCallError';
  }
}

export interface ReplicaHandleOptions {
  methodName?: string;
  shardKey?: string;
}

/** Waits for the control plane to open the handle socket of a replica that has just started (it finds new replicas within a fraction of a second). */
const SOCKET_WAIT_MS = 5_000;

function post(socketPath: string, token: string, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method: 'POST',
        path: PROTOCOL.handleCallPath,
        headers: { 'content-type': 'application/json', 'content-length': body.length, [PROTOCOL.handleTokenHeader]: token },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function postWhenOpen(socketPath: string, token: string, body: Buffer): Promise<{ status: number; text: string }> {
  const deadline = Date.now() + SOCKET_WAIT_MS;
  for (;;) {
    try {
      return await post(socketPath, token, body);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) {
        throw new HandleCallError('REPLICA_UNREACHABLE', `the handle socket ${socketPath} cannot be reached: ${(error as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** serve.getHandle(name) inside a Node replica: calls another endpoint through the control plane's handle socket. */
export class ReplicaHandle {
  constructor(
    private readonly socketPath: string,
    private readonly token: string,
    readonly endpoint: string,
    private readonly handleOptions: ReplicaHandleOptions = {},
  ) {}

  options(options: ReplicaHandleOptions): ReplicaHandle {
    return new ReplicaHandle(this.socketPath, this.token, this.endpoint, { ...this.handleOptions, ...options });
  }

  /** One argument is the request body; two or more are passed to the method as they are (JSON values). */
  async remote(...args: unknown[]): Promise<unknown> {
    const input = args[0];
    const body = args.length > 1 ? { args } : input === undefined ? {} : { input: toWire(input) };
    const call = { endpoint: this.endpoint, ...this.handleOptions, ...body };
    const { status, text } = await postWhenOpen(this.socketPath, this.token, Buffer.from(JSON.stringify(call)));
    const answer = JSON.parse(text) as { output?: WireValue; error?: { code: string; message: string } };
    if (status !== 200 || answer.output === undefined) {
      throw new HandleCallError(answer.error?.code ?? 'INTERNAL_ERROR', answer.error?.message ?? `handle call answered ${status}`);
    }
    return fromWire(answer.output);
  }
}

/** The getHandle of the global `serve` in a replica whose entry file (at `entryFile`) has a handleToken. */
export function handlesFor(entryFile: string, token: string | undefined): (endpoint: string) => ReplicaHandle {
  const socketPath = join(dirname(entryFile), PROTOCOL.handleSocketName);
  return (endpoint) => {
    if (token === undefined) {
      throw new HandleCallError('FORBIDDEN', `this replica was given no handleToken in ${entryFile}, so it cannot call other endpoints`);
    }
    return new ReplicaHandle(socketPath, token, endpoint);
  };
}
