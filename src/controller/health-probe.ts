import { request } from 'node:http';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import { PROTOCOL } from '../replica/protocol.js';

/** The replica's health status code, or undefined when it cannot be reached within timeoutMs. */
export function probeHealth(target: ReplicaTarget, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request({ ...target, path: PROTOCOL.healthPath, method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}
