/** Seconds between keep-alive comments while a server-sent event stream waits for its next event. */
export const SSE_KEEP_ALIVE_S = 15;

const encoder = new TextEncoder();

/** One value as one event: strings as they are (one `data:` line per line), anything else as JSON. */
function frame(value: unknown): Uint8Array {
  const text = typeof value === 'string' ? value : JSON.stringify(value ?? null);
  return encoder.encode(
    `${text
      .split(/\r\n|\r|\n/)
      .map((line) => `data: ${line}`)
      .join('\n')}\n\n`,
  );
}

/**
 * Answers with the iterable's values as server-sent events (text/event-stream),
 * pulled one at a time as the client reads, with a keep-alive comment every
 * SSE_KEEP_ALIVE_S seconds of silence. A client that leaves ends the iteration
 * (return() on the iterator). Uses only web APIs, so it runs in a replica and in
 * the caller's process alike.
 */
export function sse(events: AsyncIterable<unknown> | Iterable<unknown>): Response {
  const iterator =
    Symbol.asyncIterator in events
      ? (events as AsyncIterable<unknown>)[Symbol.asyncIterator]()
      : (events as Iterable<unknown>)[Symbol.iterator]();
  let pending: Promise<IteratorResult<unknown>> | undefined;
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        pending ??= Promise.resolve(iterator.next());
        let timer: NodeJS.Timeout | undefined;
        const quiet = new Promise<'quiet'>((resolve) => (timer = setTimeout(() => resolve('quiet'), SSE_KEEP_ALIVE_S * 1000)));
        const step = await Promise.race([pending, quiet]).finally(() => clearTimeout(timer));
        if (step === 'quiet') return controller.enqueue(encoder.encode(': keep-alive\n\n'));
        pending = undefined;
        if (step.done === true) controller.close();
        else controller.enqueue(frame(step.value));
      },
      async cancel() {
        await iterator.return?.();
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(body, {
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' },
  });
}
