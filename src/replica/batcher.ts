export interface BatchSettings {
  maxBatchSize: number;
  batchWaitTimeoutS: number;
}

interface Pending<I> {
  input: I;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * Groups single calls into batches: a batch runs as soon as maxBatchSize calls
 * wait, or batchWaitTimeoutS after the first of them arrived. Each caller gets
 * its own element of the result; a result that is not an array of the batch's
 * length fails every call of that batch.
 */
export class Batcher<I> {
  private queue: Pending<I>[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private settings: BatchSettings,
    private readonly run: (inputs: I[]) => Promise<unknown>,
  ) {}

  configure(settings: BatchSettings): void {
    this.settings = settings;
    if (this.queue.length >= settings.maxBatchSize) this.flush();
  }

  submit(input: I): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      if (this.queue.length >= this.settings.maxBatchSize) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.settings.batchWaitTimeoutS * 1000);
    });
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.settings.maxBatchSize);
      void this.runBatch(batch);
      if (this.queue.length < this.settings.maxBatchSize) break;
    }
    if (this.queue.length > 0) this.timer = setTimeout(() => this.flush(), this.settings.batchWaitTimeoutS * 1000);
  }

  private async runBatch(batch: Pending<I>[]): Promise<void> {
    try {
      const results = await this.run(batch.map((pending) => pending.input));
      if (!Array.isArray(results) || results.length !== batch.length) {
        const got = Array.isArray(results) ? `${results.length} results` : `a ${typeof results}`;
        throw new Error(
          `batch handler returned ${got} for a batch of ${batch.length} requests; it must return an array of the same length`,
        );
      }
      batch.forEach((pending, index) => pending.resolve(results[index]));
    } catch (error) {
      for (const pending of batch) pending.reject(error);
    }
  }
}
