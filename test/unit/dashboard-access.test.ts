import { describe, expect, it } from 'vitest';
import { DashboardAccess } from '../../src/admin/dashboard-access.js';

describe('DashboardAccess', () => {
  it('redeems a code once, within 2 minutes, for a session that ends after 10 idle minutes', () => {
    let now = 0;
    const access = new DashboardAccess({ now: () => now });
    const { code } = access.issueCode();
    const late = access.issueCode().code;
    now += 60_000;
    const redeemed = access.redeem(code);
    expect(redeemed).toMatchObject({ idleTimeoutS: 600, maxAgeS: 28_800 });
    expect(access.redeem(code)).toBeUndefined();
    now += 61_000;
    expect(access.redeem(late)).toBeUndefined();
    const session = redeemed?.session ?? '';
    expect(access.useSession(session)).toBe(true);
    expect(access.useSession(`${session}x`)).toBe(false);
    now += 9 * 60_000;
    expect(access.useSession(session)).toBe(true);
    now += 10 * 60_000;
    expect(access.useSession(session)).toBe(false);
  });

  it('ends a session 8 hours after it began, however often it is used', () => {
    let now = 0;
    const access = new DashboardAccess({ now: () => now });
    const session = access.redeem(access.issueCode().code)?.session ?? '';
    for (let minute = 5; minute < 8 * 60; minute += 5) {
      now = minute * 60_000;
      expect(access.useSession(session)).toBe(true);
    }
    now = 8 * 3600_000;
    expect(access.useSession(session)).toBe(false);
  });
});
