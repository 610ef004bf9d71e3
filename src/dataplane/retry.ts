/** Methods that may be sent again after a replica failed mid-request (RFC 9110 idempotent methods). */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
/** Connection errors that mean the replica never received the request. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES']);
/** System error codes (ECONNRESET, EPIPE, ...), as opposed to Node's own ERR_* codes for a bad call. */
const SYSTEM_ERROR = /^E[A-Z]+$/;

export const MAX_ATTEMPTS = 3;

/** Whether the error is the replica's connection failing (so it counts against the replica), not a bad call. */
export function isConnectionFailure(error: unknown): error is Error {
  return error instanceof Error && SYSTEM_ERROR.test((error as NodeJS.ErrnoException).code ?? '');
}

/** Whether a request that failed with this connection-level error may be sent to another replica. */
export function mayRetry(error: Error, method: string): boolean {
  return NEVER_SENT.has((error as NodeJS.ErrnoException).code ?? '') || IDEMPOTENT_METHODS.has(method);
}
