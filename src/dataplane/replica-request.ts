import { createHash } from 'node:crypto';
import { request, type Agent, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import { PROTOCOL } from '../replica/protocol.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';

export interface ReplicaReply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface ReplicaRequest {
  method: string;
  path: string;
  headers?: OutgoingHttpHeaders;
  body?: Buffer | string;
  /** A keep-alive agent, or false for a connection of its own. */
  agent: Agent | false;
  signal: AbortSignal;
}

/** How much of an answer whose body nobody reads (a health check's) is read and dropped before its connection is cut. */
export const DISCARDED_BODY_BYTES = 4096;

function tooLarge(maxBytes: number, setting: string): FlotillaError {
  return new FlotillaError('RESPONSE_TOO_LARGE', `the replica's answer was larger than ${maxBytes} bytes (${setting}); it was cut`, {
    maxBytes,
  });
}

/**
 * Sends one request straight to a replica and reads its answer, at most `maxBytes` of it (a replica may be hostile):
 * beyond, the connection is cut and the call rejects with RESPONSE_TOO_LARGE, naming `setting` (what bounds it).
 */
export function requestReplica(target: ReplicaTarget, call: ReplicaRequest, maxBytes: number, setting: string): Promise<ReplicaReply> {
  return new Promise((resolve, reject) => {
    const { body, ...options } = call;
    const req = request({ ...target, ...options }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= maxBytes) return void chunks.push(chunk);
        reject(tooLarge(maxBytes, setting));
        req.destroy();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Sends one request straight to a replica and resolves with its status once the answer's body has ended, dropping
 * it; a body past DISCARDED_BODY_BYTES is not read: its connection is cut (use a connection of its own).
 */
export function replicaStatus(target: ReplicaTarget, call: ReplicaRequest): Promise<number> {
  return new Promise((resolve, reject) => {
    const { body, ...options } = call;
    const req = request({ ...target, ...options }, (res) => {
      const status = res.statusCode ?? 0;
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= DISCARDED_BODY_BYTES) return;
        resolve(status);
        req.destroy();
      });
      res.on('end', () => resolve(status));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Sends one request straight to a replica and resolves with the answer's head; its body is the caller's to read. */
export function openReplica(target: ReplicaTarget, call: ReplicaRequest): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const { body, ...options } = call;
    const req = request({ ...target, ...options }, (res) => {
      res.on('error', () => undefined);
      resolve(res);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Sends one request straight to a replica and hashes its answer as it comes, holding none of it. */
export async function hashReplica(target: ReplicaTarget, call: ReplicaRequest): Promise<{ status: number; bodyHash: string }> {
  const res = await openReplica(target, call);
  const hash = createHash('sha256');
  for await (const chunk of res) hash.update(chunk as Buffer);
  if (res.trailers[PROTOCOL.errorHeader] !== undefined) throw new Error('the answer failed midway');
  return { status: res.statusCode ?? 0, bodyHash: hash.digest('hex') };
}
