import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';

/** Where the load goes: a TCP address or a unix socket, and the request path. */
export type LoadTarget = { host: string; port: number; path: string } | { socketPath: string; path: string };

export interface LoadOptions {
  target: LoadTarget;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  timeoutMs: number;
}

export interface LoadResult {
  /** 2xx responses that ended inside the measured window. */
  requests: number;
  /** Every response, warm-up and late ones included. */
  responses: number;
  elapsedMs: number;
  latenciesMs: number[];
  non2xx: number;
  failures: Record<string, number>;
}

interface Outcome {
  status?: number;
  error?: string;
}

function send(agent: Agent, target: LoadTarget, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = request({ ...target, method: 'GET', agent, timeout: timeoutMs }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => resolve({ status: res.statusCode }));
      res.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    req.end();
  });
}

/**
 * A closed loop: `concurrency` workers each send one request, wait for the
 * whole response, and send the next, over keep-alive connections. Only
 * responses that end inside the measured window (after the warm-up) count.
 * No request starts after the window closes and each one has a timeout, so a
 * run ends within warmupMs + durationMs + timeoutMs.
 */
export async function generateLoad(options: LoadOptions): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const start = performance.now();
  const measureFrom = start + options.warmupMs;
  const measureUntil = measureFrom + options.durationMs;
  const result: LoadResult = { requests: 0, responses: 0, elapsedMs: options.durationMs, latenciesMs: [], non2xx: 0, failures: {} };

  const worker = async (): Promise<void> => {
    while (performance.now() < measureUntil) {
      const sent = performance.now();
      const outcome = await send(agent, options.target, options.timeoutMs);
      const done = performance.now();
      if (outcome.status !== undefined) result.responses++;
      if (done < measureFrom || done > measureUntil) continue;
      if (outcome.error !== undefined) {
        result.failures[outcome.error] = (result.failures[outcome.error] ?? 0) + 1;
      } else if (outcome.status === undefined || outcome.status < 200 || outcome.status > 299) {
        result.non2xx++;
      } else {
        result.requests++;
        result.latenciesMs.push(done - sent);
      }
    }
  };

  try {
    await Promise.all(Array.from({ length: options.concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return result;
}
