/** Methods that may be sent again after a replica failed mid-request (RFC 9110 idempotent methods). */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
/** Connection errors that mean the replica never received the request (EAGAIN: a unix socket's backlog is full). */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'EAGAIN']);
/** System error codes (ECONNRESET, EPIPE, ...), as opposed to Node's own ERR_* codes for a bad call. */
const SYSTEM_ERROR = /^E[A-Z]+$/;

export const MAX_ATTEMPTS = 3;

/** Whether the error is the replica's connection failing (so it counts against the replica), not a bad call. */
export function isConnectionFailure(error: unknown): error is Error {
  return error instanceof Error && SYSTEM_ERROR.test((error as NodeJS.ErrnoException).code ?? '');
}

/** Whether the request never reached the replica: its connection failed while it was being made. */
export function neverSent(error: Error): boolean {
  const { code, syscall } = error as NodeJS.ErrnoException;
  return syscall === 'connect' || NEVER_SENT.has(code ?? '');
}

/** Whether a request that failed with this connection-level error may be sent again, whatever its method when it was never sent. */
export function mayRetry(error: Error, method: string): boolean {
  return neverSent(error) || IDEMPOTENT_METHODS.has(method);
}

/**
 * The connection failure as a caller may read it: the system call and code (`connect EAGAIN`), never the address,
 * which for a unix socket is a path on the host.
 */
export function describeFailure(error: Error): string {
  const { code, syscall } = error as NodeJS.ErrnoException;
  return syscall === undefined ? (code ?? 'connection failed') : `${syscall} ${code ?? 'failed'}`;
}
