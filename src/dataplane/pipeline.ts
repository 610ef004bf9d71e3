import type { OutgoingHttpHeaders } from 'node:http';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import type { Dispatcher } from './dispatcher.js';
import type { Lease, RoutedReplica } from './replica-router.js';
import { describeFailure, isConnectionFailure, MAX_ATTEMPTS, mayRetry } from './retry.js';
import type { MirroredRequest, Outcome } from './shadow.js';

export interface Call {
  endpoint: string;
  backend: string;
  method: string;
  /** Aborts the call: a queued request leaves the queue, a sent one is cut. Read only when it is needed. */
  readonly signal: AbortSignal;
}

/** Sends the call to one replica; rejects with the connection-level error when the replica fails it. */
export type Send<R> = (replica: RoutedReplica<ReplicaTarget>) => Promise<R>;

/**
 * The data plane's one request pipeline, for the HTTP front door and
 * ServeHandles alike: acquire a replica (the call's admission), send, and on
 * a connection-level failure report the replica (the router ejects it, the
 * controller checks it) and send again to another replica when that is safe
 * (retry.ts, and `mayResend`, false once an answer has begun). `finish` is
 * told the outcome once: undefined, or a FlotillaError (the router's
 * QUEUE_FULL, NO_REPLICAS..., the sender's own, REPLICA_UNREACHABLE) or the
 * error of a bad call. A lease is always released, whatever happens. Errors
 * that are not connection failures (a header Node refuses, a bug) never count
 * against a replica. A replica with room is taken and sent to at once: only a
 * call that has to queue waits on a promise.
 *
 * A subclass sends in `send` and reports the attempt's end exactly once, with
 * `sent()` or `sendFailed(error)`.
 */
export abstract class PipelineCall implements Call {
  private attempt = 0;
  private tried: Set<string> | undefined;
  private lease: Lease<ReplicaTarget> | undefined;

  constructor(
    protected readonly dispatcher: Dispatcher,
    readonly endpoint: string,
    readonly backend: string,
    readonly method: string,
  ) {}

  abstract get signal(): AbortSignal;

  /** Whether the call was aborted; a failure then is the abort's, not the replica's. */
  protected get aborted(): boolean {
    return this.signal.aborted;
  }

  protected abstract send(replica: RoutedReplica<ReplicaTarget>): void;

  protected abstract finish(error: unknown): void;

  protected mayResend(): boolean {
    return true;
  }

  /** A replica failed an attempt at the connection level; the error's message (with the replica's address) is for logs only. */
  protected replicaFailed?(replica: string, error: Error): void;

  /** Whether an attempt is under way (a lease is held). */
  protected get attempting(): boolean {
    return this.lease !== undefined;
  }

  start(): void {
    this.attempt++;
    const lease = this.dispatcher.tryAcquire(this.backend, this.tried);
    if (lease !== undefined) return this.sendOn(lease);
    this.dispatcher.acquire(this.backend, this, this.tried).then(
      (queued) => this.sendOn(queued),
      (error: unknown) => this.finish(error),
    );
  }

  protected sent(): void {
    const lease = this.lease;
    if (lease === undefined) return;
    this.lease = undefined;
    lease.release();
    this.finish(undefined);
  }

  protected sendFailed(error: unknown): void {
    const lease = this.lease;
    if (lease === undefined) return;
    this.lease = undefined;
    lease.release();
    if (this.aborted || isFlotillaError(error) || !isConnectionFailure(error)) return this.finish(error);
    const replica = lease.replica.id;
    this.replicaFailed?.(replica, error);
    this.dispatcher.reportFailure(this.backend, replica);
    (this.tried ??= new Set()).add(replica);
    if (this.attempt < MAX_ATTEMPTS && mayRetry(error, this.method) && this.mayResend()) return this.start();
    this.finish(
      new FlotillaError(
        'REPLICA_UNREACHABLE',
        `replica ${replica} of backend '${this.backend}' failed while serving ${this.method} for endpoint '${this.endpoint}' ` +
          `(attempt ${this.attempt}): ${describeFailure(error)}`,
        { replica, attempts: this.attempt },
      ),
    );
  }

  private sendOn(lease: Lease<ReplicaTarget>): void {
    if (this.aborted) {
      lease.release();
      return this.finish(new Error('the call was aborted before it was sent'));
    }
    this.lease = lease;
    try {
      this.send(lease.replica);
    } catch (error) {
      this.sendFailed(error);
    }
  }
}

/** The pipeline for a sender that returns a promise (ServeHandles): resolves with what `send` resolved. */
class PromisedCall<R> extends PipelineCall {
  private result: R | undefined;

  constructor(
    dispatcher: Dispatcher,
    private readonly call: Call,
    private readonly sender: Send<R>,
    private readonly resend: (() => boolean) | undefined,
    private readonly settle: (error: unknown, result: R | undefined) => void,
  ) {
    super(dispatcher, call.endpoint, call.backend, call.method);
  }

  get signal(): AbortSignal {
    return this.call.signal;
  }

  protected send(replica: RoutedReplica<ReplicaTarget>): void {
    this.sender(replica).then(
      (result) => {
        this.result = result;
        this.sent();
      },
      (error: unknown) => this.sendFailed(error),
    );
  }

  protected override mayResend(): boolean {
    return this.resend?.() ?? true;
  }

  protected finish(error: unknown): void {
    this.settle(error, this.result);
  }
}

/** The pipeline (PipelineCall) as a promise: what `send` resolved, or the call's error. */
export function sendWithRetries<R>(dispatcher: Dispatcher, call: Call, send: Send<R>, mayResend?: () => boolean): Promise<R> {
  return new Promise((resolve, reject) => {
    new PromisedCall(dispatcher, call, send, mayResend, (error, result) =>
      error === undefined ? resolve(result as R) : reject(error),
    ).start();
  });
}

/**
 * Starts the endpoint's shadow copies of a call, when it has shadows, and
 * returns how to report the primary's outcome to them (undefined: none);
 * call it exactly once, with undefined when the primary had no answer.
 * `hold` counts each copy's body in a budget (the front door's).
 */
export function startShadows(
  dispatcher: Dispatcher,
  call: Call,
  path: string,
  headers: OutgoingHttpHeaders,
  body: Buffer,
  hold?: MirroredRequest['hold'],
): ((outcome: Outcome | undefined) => void) | undefined {
  const shadows = dispatcher.endpoint(call.endpoint).shadows;
  let hasShadows = false;
  for (const backend in shadows) if (backend !== call.backend) hasShadows = true;
  if (!hasShadows) return undefined;
  let report: (outcome: Outcome | undefined) => void = () => undefined;
  const primary = new Promise<Outcome | undefined>((resolve) => (report = resolve));
  dispatcher.shadows.mirror(
    { endpoint: call.endpoint, primaryBackend: call.backend, method: call.method, path, headers, body, primary, ...(hold && { hold }) },
    shadows,
  );
  return report;
}

/** What a call's requestTimeoutS timer tells when it fires. */
export interface TimesOut {
  timedOut(timeoutMs: number): void;
}

function fire(target: TimesOut, timeoutMs: number): void {
  target.timedOut(timeoutMs);
}

/**
 * A call's life as its caller (the front door's exchange, a ServeHandle) sees it: counted in its endpoint's requests
 * from its start to `end()`, and told `timedOut` when its answer's head has not come within the backend's
 * requestTimeoutS (`headArrived` stops the clock).
 */
export class CallScope {
  readonly started = performance.now();
  readonly timeoutMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private leaveEndpoint: (() => void) | undefined;

  /** `defaultTimeoutMs` bounds a call to a backend without requestTimeoutS (a handle call from a replica, so that a cycle ends). */
  constructor(dispatcher: Dispatcher, endpoint: string, backend: string, target: TimesOut, defaultTimeoutMs?: number) {
    this.timeoutMs = dispatcher.requestTimeoutMs(backend) ?? defaultTimeoutMs;
    if (this.timeoutMs !== undefined) this.timer = setTimeout(fire, this.timeoutMs, target, this.timeoutMs);
    this.leaveEndpoint = dispatcher.endpointRequests.enter(endpoint);
  }

  get elapsedMs(): number {
    return performance.now() - this.started;
  }

  headArrived(): void {
    clearTimeout(this.timer);
  }

  /** The call is over (idempotent). */
  end(): void {
    clearTimeout(this.timer);
    this.leaveEndpoint?.();
    this.leaveEndpoint = undefined;
  }
}
