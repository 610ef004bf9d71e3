/**
 * Questions sent over the IPC channel that wait for their answer, by id: the
 * one table each side keeps (the primary's questions to a worker, a worker's
 * wants and metrics renders). A question can have a deadline; one that is
 * dropped (its worker left, it timed out, it was abandoned) rejects.
 */
export class Asks<A> {
  private next = 1;
  private readonly pending = new Map<number, { resolve(answer: A): void; reject(error: Error): void; timer?: NodeJS.Timeout }>();

  /** Sends the question with a fresh id (`send(id)`); resolves with its answer, rejects after timeoutMs without one. */
  ask(send: (id: number) => void, timeoutMs?: number): Promise<A> {
    const id = this.next++;
    return new Promise<A>((resolve, reject) => {
      const timer =
        timeoutMs === undefined ? undefined : setTimeout(() => this.drop(id, new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      timer?.unref();
      this.pending.set(id, { resolve, reject, ...(timer === undefined ? {} : { timer }) });
      send(id);
    });
  }

  /** Resolves the question; false when none waits under that id (answered, dropped or never asked). */
  answer(id: number, answer: A): boolean {
    const pending = this.pending.get(id);
    if (pending === undefined) return false;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    pending.resolve(answer);
    return true;
  }

  /** Rejects the question; false when none waits under that id. */
  drop(id: number, error: Error): boolean {
    const pending = this.pending.get(id);
    if (pending === undefined) return false;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    pending.reject(error);
    return true;
  }

  dropAll(error: Error): void {
    for (const id of [...this.pending.keys()]) this.drop(id, error);
  }
}
