/** Methods that may be sent again after a replica failed mid-request (RFC 9110 idempotent methods). */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
/** Connection errors that mean the replica never received the request. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES']);

export const MAX_ATTEMPTS = 3;

/** Whether a request that failed with this connection-level error may be sent to another replica. */
export function mayRetry(error: Error, method: string): boolean {
  return NEVER_SENT.has((error as NodeJS.ErrnoException).code ?? '') || IDEMPOTENT_METHODS.has(method);
}
