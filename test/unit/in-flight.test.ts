import { describe, expect, it } from 'vitest';
import { InFlight } from '../../src/dataplane/in-flight.js';

describe('InFlight', () => {
  it('counts per key and resolves idle when the last one leaves', async () => {
    const inFlight = new InFlight();
    const leaveA = inFlight.enter('a');
    const leaveA2 = inFlight.enter('a');
    inFlight.enter('b');
    expect(inFlight.count('a')).toBe(2);
    let idle = false;
    const waiting = inFlight.idle('a').then(() => (idle = true));
    leaveA();
    leaveA();
    await Promise.resolve();
    expect(idle).toBe(false);
    leaveA2();
    await waiting;
    expect(inFlight.count('a')).toBe(0);
    expect(inFlight.count('b')).toBe(1);
    await expect(inFlight.idle('c')).resolves.toBeUndefined();
  });
});
