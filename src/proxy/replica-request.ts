import { request, type Agent, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
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
