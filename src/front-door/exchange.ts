import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { FlotillaConfig } from '../config/config.js';
import { sendError } from '../common/http-json.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';
import type { Dispatcher } from '../dataplane/dispatcher.js';
import { CallScope, PipelineCall, startShadows, type TimesOut } from '../dataplane/pipeline.js';
import type { RoutedReplica } from '../dataplane/replica-router.js';
import type { Outcome } from '../dataplane/shadow.js';
import { readBody, type BodyBudget } from './body.js';
import type { ForwardWatch, ProxyEngine } from './proxy-engine.js';
import { applyRouteHeaders } from './route-headers.js';
import { prepareForwardHeaders } from './request-guard.js';

const EMPTY = Buffer.alloc(0);

/** The front door's limits: config http.* (documented in src/config/config.ts and docs/configuration.md). */
export type FrontDoorSettings = Omit<FlotillaConfig['http'], 'host' | 'port' | 'publicUrl' | 'workers' | 'frontDoor'>;

/** Whether the request has a body to read (within the budget and the body timeout); one without costs nothing. */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return length === undefined ? req.headers['transfer-encoding'] !== undefined : length !== '0';
}

/** What a forwarded request needs of its front door. */
export interface Door {
  readonly dispatcher: Dispatcher;
  readonly engine: ProxyEngine;
  readonly settings: FrontDoorSettings;
  readonly budget: BodyBudget;
  readonly trusted: ReadonlySet<string>;
  readonly logger: Logger;
  /** Answers being relayed, checked for progress a few times per streamIdleTimeoutS (or clientStallTimeoutS) by the server's one timer. */
  readonly relaying: Exchange[];
  /** Answers a request that failed (the error's status, and how its unread body is dropped). */
  readonly answer: (req: IncomingMessage, res: ServerResponse, error: unknown) => void;
  /** A request has closed. */
  readonly ended: () => void;
}

/**
 * One forwarded request, from admission to its response's close: the
 * pipeline's call (acquire, body, send, retry), what the engine reports of
 * the forward, and the one 'close' listener that does the request's
 * bookkeeping (endpoint count, cancel, timer, idle sweep, body budget,
 * shadows, metrics).
 *
 * requestTimeoutS bounds the time to the answer's head (queueing included:
 * 504 REQUEST_TIMEOUT), streamIdleTimeoutS each gap between its chunks after
 * that (the connection is cut), not counting time the client itself takes to
 * read (a full write buffer); clientStallTimeoutS bounds the time a client
 * that is behind takes nothing (cut too, so that it does not pin its replica
 * slot). Both are checked a few times a period against the bytes read from
 * the replica and taken by the client, not per chunk. An answer that fails after
 * its head is counted in metrics with the failure's status, not the head's.
 * The client leaving before its answer is complete cancels the request: a
 * queued one leaves the queue, a sent one has its upstream request destroyed.
 */
export class Exchange extends PipelineCall implements ForwardWatch, TimesOut {
  private readonly scope: CallScope;
  private cancelled = false;
  private controller: AbortController | undefined;
  private upstream: ClientRequest | undefined;
  private body: Buffer | undefined;
  private report: ((outcome: Outcome | undefined) => void) | undefined;
  private failedStatus: number | undefined;
  /** For the idle sweep: the replica's connection while the answer is relayed, its bytes last seen, since when none came. */
  private relayed: { readonly bytesRead: number } | undefined;
  /** Where it is in door.relaying, -1 when it is not. */
  private relayIndex = -1;
  private seen = 0;
  private quietSince = 0;
  /** For the stall check: the bytes the client's connection had taken, and since when it took none while behind. */
  private delivered = 0;
  private stallSince = 0;

  constructor(
    private readonly door: Door,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    endpoint: string,
    backend: string,
    method: string,
  ) {
    super(door.dispatcher, endpoint, backend, method);
    this.scope = new CallScope(door.dispatcher, endpoint, backend, this);
    res.on('close', () => this.closed());
  }

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.cancelled) this.controller.abort();
    return this.controller.signal;
  }

  protected override get aborted(): boolean {
    return this.cancelled;
  }

  get shadowed(): boolean {
    return this.report !== undefined;
  }

  protected send(replica: RoutedReplica<ReplicaTarget>): void {
    if (this.body !== undefined) return this.door.engine.forward(this.req, this.res, replica.target, this.body, this);
    if (hasBody(this.req)) {
      const { budget, settings } = this.door;
      readBody(this.req, this.signal, budget, settings.maxBodyBytes, settings.bodyTimeoutS * 1000).then(
        (body) => this.forwardFirst(replica, body),
        (error: unknown) => this.sendFailed(error),
      );
      return;
    }
    this.forwardFirst(replica, EMPTY);
  }

  protected override mayResend(): boolean {
    return !this.res.headersSent;
  }

  protected finish(error: unknown): void {
    if (error === undefined || this.cancelled) return;
    this.door.answer(this.req, this.res, error);
  }

  protected override replicaFailed(replica: string, error: Error): void {
    this.door.logger.warn('replica failed a request', { component: 'proxy', backend: this.backend, replica, error: error.message });
  }

  sending(upstream: ClientRequest): void {
    if (this.cancelled) upstream.destroy();
    else this.upstream = upstream;
  }

  headArrived(upstream: { readonly bytesRead: number }): void {
    this.scope.headArrived();
    this.relayed = upstream;
    this.seen = upstream.bytesRead;
    this.quietSince = this.stallSince = performance.now();
    if (this.relayIndex < 0) this.relayIndex = this.door.relaying.push(this) - 1;
  }

  failed(error: Error, status?: number): void {
    if (status !== undefined) this.failedStatus ??= status;
    this.sendFailed(error);
  }

  observed(status: number, bodyHash: string): void {
    this.report?.({ status, bodyHash, latencyMs: this.scope.elapsedMs });
  }

  /**
   * Cuts the connection when the replica sent nothing for idleMs while the client kept up, or when the client, behind
   * (its write buffer full), took nothing for stallMs: either way the replica's slot is released.
   */
  checkIdle(now: number, idleMs: number, stallMs: number): void {
    const { res } = this;
    const bytesRead = this.relayed?.bytesRead ?? 0;
    const behind = res.writableNeedDrain || (res.writableEnded && !res.writableFinished);
    if (bytesRead !== this.seen || behind) {
      this.seen = bytesRead;
      this.quietSince = now;
    }
    const socket = res.socket;
    const delivered = socket === null ? 0 : socket.bytesWritten - socket.writableLength;
    if (!behind || delivered !== this.delivered) {
      this.delivered = delivered;
      this.stallSince = now;
    }
    if (now - this.stallSince >= stallMs) {
      this.cut('client stopped reading', { stallTimeoutS: this.door.settings.clientStallTimeoutS });
    } else if (now - this.quietSince >= idleMs) {
      this.failedStatus = 504;
      this.cut('stream idle too long', { idleTimeoutS: this.door.settings.streamIdleTimeoutS });
    }
  }

  timedOut(timeoutMs: number): void {
    sendError(
      this.res,
      new FlotillaError('REQUEST_TIMEOUT', `backend '${this.backend}' did not answer within ${timeoutMs / 1000} s (requestTimeoutS)`),
    );
    this.abort();
  }

  private forwardFirst(replica: RoutedReplica<ReplicaTarget>, body: Buffer): void {
    this.body = body;
    const { req } = this;
    prepareForwardHeaders(req, body.length, this.door.trusted);
    applyRouteHeaders(req);
    const hold = () => this.door.budget.holdForShadow(body.length);
    this.report = startShadows(this.door.dispatcher, this, req.url ?? '/', req.headers, body, hold);
    this.door.engine.forward(req, this.res, replica.target, body, this);
  }

  private cut(why: string, limit: Record<string, number>): void {
    this.leaveRelaying();
    this.door.logger.warn(why, { component: 'proxy', backend: this.backend, ...limit });
    this.res.destroy();
    this.abort();
  }

  private abort(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.controller?.abort();
    this.upstream?.destroy();
  }

  private leaveRelaying(): void {
    const relaying = this.door.relaying;
    const last = relaying.pop();
    if (last !== undefined && last !== this) {
      relaying[this.relayIndex] = last;
      last.relayIndex = this.relayIndex;
    }
    this.relayIndex = -1;
  }

  private closed(): void {
    const { door, res } = this;
    this.scope.end();
    if (!res.writableFinished) this.abort();
    if (this.relayIndex >= 0) this.leaveRelaying();
    if (this.attempting) this.sent();
    if (this.body !== undefined) door.budget.release(this.body.length);
    this.report?.(undefined);
    door.dispatcher.metrics.request(this.endpoint, this.backend, this.failedStatus ?? res.statusCode, this.scope.elapsedMs / 1000);
    door.ended();
  }
}
