import type { IncomingMessage } from 'node:http';
import { FlotillaError } from '../common/errors.js';

/** Request body bytes the front door holds at once, over all requests: it refuses to read beyond `max`. */
export class BodyBudget {
  private used = 0;

  constructor(readonly max: number) {}

  take(bytes: number): boolean {
    if (this.used + bytes > this.max) return false;
    this.used += bytes;
    return true;
  }

  /**
   * Takes the bytes of a shadow copy's body, only while the budget stays at most half used, so that shadows never take
   * more than half of it from the requests themselves; returns how to give them back, or undefined when refused.
   */
  holdForShadow(bytes: number): (() => void) | undefined {
    if (this.used + bytes > this.max / 2) return undefined;
    this.used += bytes;
    return () => this.release(bytes);
  }

  release(bytes: number): void {
    this.used -= bytes;
  }

  get inUse(): number {
    return this.used;
  }
}

/**
 * Reads a request's whole body, taking its bytes from `budget` as it goes (a
 * declared Content-Length up front). Rejects with PAYLOAD_TOO_LARGE beyond
 * `limit` bytes, OVERLOADED when the budget is spent, CLIENT_TIMEOUT after
 * `timeoutMs`, and INVALID_ARGUMENT when the client leaves or `signal`
 * aborts; the bytes it took are given back on every rejection. On success
 * the caller owns `body.length` bytes of the budget and releases them.
 */
export function readBody(req: IncomingMessage, signal: AbortSignal, budget: BodyBudget, limit: number, timeoutMs: number): Promise<Buffer> {
  const length = req.headers['content-length'];
  const declared = length === undefined ? undefined : Number(length);
  if (declared !== undefined && declared > limit) return Promise.reject(tooLarge(limit));
  if (declared !== undefined && !budget.take(declared)) return Promise.reject(overloaded(budget));
  return new Promise((resolve, reject) => {
    let reserved = declared ?? 0;
    const whole = declared === undefined ? undefined : Buffer.allocUnsafe(declared);
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (error: FlotillaError | undefined): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onGone);
      signal.removeEventListener('abort', onGone);
      if (error !== undefined) {
        budget.release(reserved);
        reject(error);
        return;
      }
      budget.release(reserved - size);
      resolve(whole === undefined ? Buffer.concat(chunks, size) : whole.subarray(0, size));
    };
    const onData = (chunk: Buffer): void => {
      if (whole !== undefined) {
        chunk.copy(whole, size);
        size += chunk.length;
        return;
      }
      size += chunk.length;
      if (size > limit) return finish(tooLarge(limit));
      if (!budget.take(chunk.length)) return finish(overloaded(budget));
      reserved += chunk.length;
      chunks.push(chunk);
    };
    const onEnd = (): void => finish(undefined);
    const onGone = (): void => finish(new FlotillaError('INVALID_ARGUMENT', 'the client left before sending its whole body'));
    const timer = setTimeout(
      () => finish(new FlotillaError('CLIENT_TIMEOUT', `the request body did not arrive within ${timeoutMs / 1000} s (bodyTimeoutS)`)),
      timeoutMs,
    );
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onGone);
    req.once('close', onGone);
    signal.addEventListener('abort', onGone, { once: true });
  });
}

function tooLarge(limit: number): FlotillaError {
  return new FlotillaError('PAYLOAD_TOO_LARGE', `request bodies are limited to ${limit} bytes (maxBodyBytes); send a smaller one`);
}

function overloaded(budget: BodyBudget): FlotillaError {
  return new FlotillaError(
    'OVERLOADED',
    `the front door is already holding ${budget.inUse} bytes of request bodies (maxBufferedBytes ${budget.max}); retry shortly`,
  );
}
