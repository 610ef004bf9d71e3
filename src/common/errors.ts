/**
 * Every error Flotilla raises on purpose. Callers branch on `code`; `status` is
 * the HTTP status the admin API and the front door answer with.
 */
export const ERROR_STATUS = {
  INVALID_ARGUMENT: 400,
  UNSHIPPABLE_DEFINITION: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  BACKEND_NOT_FOUND: 404,
  ENDPOINT_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  CLIENT_TIMEOUT: 408,
  HEADERS_TOO_LARGE: 431,
  EXPECTATION_FAILED: 417,
  BACKEND_EXISTS: 409,
  ENDPOINT_EXISTS: 409,
  ROUTE_TAKEN: 409,
  BACKEND_IN_USE: 409,
  INSTANCE_RUNNING: 409,
  FRONT_DOOR_RUNNING: 409,
  FRONT_DOOR_PROTOCOL: 409,
  INSUFFICIENT_RESOURCES: 409,
  SHUT_DOWN: 409,
  ROLLOUT_PAUSED: 409,
  HANDLER_ERROR: 500,
  BUILD_FAILED: 500,
  INTERNAL_ERROR: 500,
  STATE_INVALID: 500,
  STATE_SAVE_FAILED: 500,
  REPLICA_START_FAILED: 500,
  GPU_RUNTIME_MISSING: 500,
  IMAGE_MISSING: 500,
  RECONFIGURE_FAILED: 500,
  ROLLOUT_FAILED: 500,
  REPLICA_UNREACHABLE: 502,
  RESPONSE_TOO_LARGE: 502,
  ENGINE_UNAVAILABLE: 503,
  ADMIN_UNREACHABLE: 503,
  FRONT_DOOR_UNAVAILABLE: 503,
  NO_REPLICAS: 503,
  QUEUE_FULL: 503,
  COLD_START_TIMEOUT: 503,
  OVERLOADED: 503,
  REQUEST_TIMEOUT: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class FlotillaError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  /** `options.cause`: the error this one reports (Error's own `cause`, for logs and debuggers; not sent to clients). */
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FlotillaError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** An error a newer server sent with a code this side does not know: its code and status as the server sent them. */
export class UnknownRemoteError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'UnknownRemoteError';
  }
}

export function isFlotillaError(error: unknown, code?: ErrorCode): error is FlotillaError {
  return error instanceof FlotillaError && (code === undefined || error.code === code);
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
