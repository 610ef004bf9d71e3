/**
 * A front-door request's cancellation (the client left, or it timed out). Unlike an AbortController it costs
 * nothing until something waits on it, which most requests never do: its `signal` is made on first use (already
 * aborted when abort() came first), and `onAbort` keeps one plain callback (a later call replaces it).
 */
export class Cancel {
  aborted = false;
  private controller: AbortController | undefined;
  private listener: (() => void) | undefined;

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.aborted) this.controller.abort();
    return this.controller.signal;
  }

  /** Calls `listener` when the request is aborted, at once when it already was. */
  onAbort(listener: () => void): void {
    if (this.aborted) listener();
    else this.listener = listener;
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.controller?.abort();
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }
}
