/** Counts requests in flight per key and tells when a key has none left. */
export class InFlight {
  private readonly counts = new Map<string, number>();
  private readonly waiters = new Map<string, Array<() => void>>();
  private entered = 0;

  enter(key: string): () => void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.entered++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.entered--;
      const count = (this.counts.get(key) ?? 1) - 1;
      if (count > 0) {
        this.counts.set(key, count);
        return;
      }
      this.counts.delete(key);
      for (const wake of this.waiters.get(key) ?? []) wake();
      this.waiters.delete(key);
    };
  }

  /** In flight over every key. */
  get total(): number {
    return this.entered;
  }

  count(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  idle(key: string): Promise<void> {
    if (this.count(key) === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.set(key, [...(this.waiters.get(key) ?? []), resolve]));
  }
}
