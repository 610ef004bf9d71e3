import { afterEach, describe, expect, it, vi } from 'vitest';
import { serve } from '../../src/index.js';
import { SSE_KEEP_ALIVE_S } from '../../src/replica/sse.js';

afterEach(() => {
  vi.useRealTimers();
});

async function read(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  const { value } = await reader.read();
  return new TextDecoder().decode(value);
}

describe('serve.sse', () => {
  it('answers text/event-stream, one event per value: lines of a string as data lines, other values as JSON', async () => {
    const response = serve.sse(['one', 'two\nlines', { token: 'x' }]);
    expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(await response.text()).toBe('data: one\n\ndata: two\ndata: lines\n\ndata: {"token":"x"}\n\n');
  });

  it(`sends a keep-alive comment after ${SSE_KEEP_ALIVE_S} s without an event, and ends the iteration when the reader cancels`, async () => {
    vi.useFakeTimers();
    let release: () => void = () => undefined;
    let cleaned = false;
    const events = (async function* () {
      try {
        yield 'first';
        await new Promise<void>((resolve) => (release = resolve));
        yield 'second';
      } finally {
        cleaned = true;
      }
    })();
    const reader = serve.sse(events).body!.getReader();
    expect(await read(reader)).toBe('data: first\n\n');
    const quiet = read(reader);
    await vi.advanceTimersByTimeAsync(SSE_KEEP_ALIVE_S * 1000);
    expect(await quiet).toBe(': keep-alive\n\n');
    release();
    expect(await read(reader)).toBe('data: second\n\n');
    await reader.cancel();
    expect(cleaned).toBe(true);
  });
});
