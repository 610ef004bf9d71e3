/** Time, handed in through constructors so that tests can move it by hand. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
};

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for `promise` at most `ms`; true when it settled in time. The timer never outlives the wait. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `produce`, with each result shared while it is produced and reused for `ms` after it succeeded; a failure is not kept. */
export function reusedFor<T>(ms: number, produce: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | undefined;
  let until = 0;
  return () => {
    if (current !== undefined && performance.now() < until) return current;
    const produced = produce();
    current = produced;
    until = Infinity;
    produced.then(
      () => {
        if (current === produced) until = performance.now() + ms;
      },
      () => {
        if (current === produced) current = undefined;
      },
    );
    return produced;
  };
}
