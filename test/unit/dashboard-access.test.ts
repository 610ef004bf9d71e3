import { describe, expect, it } from 'vitest';
import { DashboardAccess } from '../../src/admin/dashboard-access.js';

describe('DashboardAccess', () => {
  it('redeems a code once, within 2 minutes, for a session that lasts 12 hours', () => {
    let now = 0;
    const access = new DashboardAccess({ now: () => now });
    const { code } = access.issueCode();
    const late = access.issueCode().code;
    now += 60_000;
    const redeemed = access.redeem(code);
    expect(redeemed?.maxAgeS).toBe(43_200);
    expect(access.redeem(code)).toBeUndefined();
    now += 61_000;
    expect(access.redeem(late)).toBeUndefined();
    const session = redeemed?.session ?? '';
    expect(access.isSession(session)).toBe(true);
    expect(access.isSession(`${session}x`)).toBe(false);
    now += 12 * 3600_000;
    expect(access.isSession(session)).toBe(false);
  });
});
