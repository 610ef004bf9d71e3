import { createHash } from 'node:crypto';
import { request, type Agent, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
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

/** Sends one request straight to a replica and reads the whole answer. */
export function requestReplica(target: ReplicaTarget, call: ReplicaRequest): Promise<ReplicaReply> {
  return new Promise((resolve, reject) => {
    const { body, ...options } = call;
    const req = request({ ...target, ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
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
