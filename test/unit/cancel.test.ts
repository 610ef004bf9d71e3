import { describe, expect, it } from 'vitest';
import { Cancel } from '../../src/proxy/cancel.js';

describe('Cancel', () => {
  it('aborts the signal it made, and one made after the abort is aborted already', () => {
    const early = new Cancel();
    const signal = early.signal;
    expect(signal.aborted).toBe(false);
    early.abort();
    expect(signal.aborted).toBe(true);
    const late = new Cancel();
    late.abort();
    expect(late.aborted).toBe(true);
    expect(late.signal.aborted).toBe(true);
  });

  it('calls its listener once at abort, at once when it was aborted already, and only the latest one', () => {
    const cancel = new Cancel();
    const calls: string[] = [];
    cancel.onAbort(() => calls.push('first'));
    cancel.onAbort(() => calls.push('second'));
    cancel.abort();
    cancel.abort();
    expect(calls).toEqual(['second']);
    cancel.onAbort(() => calls.push('after'));
    expect(calls).toEqual(['second', 'after']);
  });
});
