import type { OutgoingHttpHeaders } from 'node:http';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import type { Dispatcher } from './dispatcher.js';
import type { RoutedReplica } from './replica-router.js';
import { isConnectionFailure, MAX_ATTEMPTS, mayRetry } from './retry.js';
import type { Outcome } from './shadow.js';

export interface Call {
  endpoint: string;
  backend: string;
  method: string;
  /** Aborts the call: a queued request leaves the queue, a sent one is cut. Read only when it is needed (see Cancel). */
  readonly signal: AbortSignal;
}

/** Sends the call to one replica; rejects with the connection-level error when the replica fails it. */
export type Send<R> = (replica: RoutedReplica<ReplicaTarget>) => Promise<R>;

/**
 * The data plane's one request pipeline, for the HTTP front door and
 * ServeHandles alike: acquire a replica (the call's admission), send, and on
 * a connection-level failure report the replica (the router ejects it, the
 * controller checks it) and send again to another replica when that is safe
 * (retry.ts, and `mayResend`, false once an answer has begun). It resolves
 * with what `send` resolved, or rejects with a FlotillaError: the router's
 * (QUEUE_FULL, NO_REPLICAS), `send`'s own, or REPLICA_UNREACHABLE. A lease is
 * always released, whatever happens. Errors that are not connection failures
 * (a header Node refuses, a bug) never count against a replica.
 */
export async function sendWithRetries<R>(dispatcher: Dispatcher, call: Call, send: Send<R>, mayResend?: () => boolean): Promise<R> {
  let tried: Set<string> | undefined;
  for (let attempt = 1; ; attempt++) {
    const lease = dispatcher.tryAcquire(call.backend, tried) ?? (await dispatcher.acquire(call.backend, call, tried));
    try {
      return await send(lease.replica);
    } catch (error) {
      if (call.signal.aborted || isFlotillaError(error) || !isConnectionFailure(error)) throw error;
      dispatcher.reportFailure(call.backend, lease.replica.id);
      (tried ??= new Set()).add(lease.replica.id);
      if (attempt < MAX_ATTEMPTS && mayRetry(error, call.method) && (mayResend?.() ?? true)) continue;
      throw new FlotillaError(
        'REPLICA_UNREACHABLE',
        `replica ${lease.replica.id} of backend '${call.backend}' failed while serving ${call.method} for endpoint '${call.endpoint}' ` +
          `(attempt ${attempt}): ${error.message}`,
        { replica: lease.replica.id, attempts: attempt },
      );
    } finally {
      lease.release();
    }
  }
}

/**
 * Starts the endpoint's shadow copies of a call, when it has shadows, and
 * returns how to report the primary's outcome to them (undefined: none);
 * call it exactly once, with undefined when the primary had no answer.
 */
export function startShadows(
  dispatcher: Dispatcher,
  call: Call,
  path: string,
  headers: OutgoingHttpHeaders,
  body: Buffer,
): ((outcome: Outcome | undefined) => void) | undefined {
  const shadows = dispatcher.endpoint(call.endpoint).shadows;
  let hasShadows = false;
  for (const backend in shadows) if (backend !== call.backend) hasShadows = true;
  if (!hasShadows) return undefined;
  let report: (outcome: Outcome | undefined) => void = () => undefined;
  const primary = new Promise<Outcome | undefined>((resolve) => (report = resolve));
  dispatcher.shadows.mirror(
    { endpoint: call.endpoint, primaryBackend: call.backend, method: call.method, path, headers, body, primary },
    shadows,
  );
  return report;
}
