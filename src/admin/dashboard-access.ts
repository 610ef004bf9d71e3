import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../common/clock.js';

const CODE_TTL_MS = 2 * 60_000;
const SESSION_TTL_MS = 12 * 60 * 60_000;
const MAX_OPEN = 100;

function secret(): string {
  return randomBytes(24).toString('base64url');
}

function includes(secrets: Map<string, number>, presented: string, now: number): string | undefined {
  const bytes = Buffer.from(presented);
  for (const [value, expires] of secrets) {
    if (expires <= now) {
      secrets.delete(value);
      continue;
    }
    const candidate = Buffer.from(value);
    if (candidate.length === bytes.length && timingSafeEqual(candidate, bytes)) return value;
  }
  return undefined;
}

/**
 * Who may open the dashboard: a holder of the admin token asks for a one-time code (valid 2 minutes);
 * the browser redeems it once for a session (valid 12 hours), which it then presents as a cookie.
 * Codes and sessions live in memory: a restart of the control plane ends them.
 */
export class DashboardAccess {
  private readonly codes = new Map<string, number>();
  private readonly sessions = new Map<string, number>();

  constructor(private readonly clock: Clock) {}

  issueCode(): { code: string; expiresInS: number } {
    const code = secret();
    if (this.codes.size >= MAX_OPEN) this.codes.delete(this.codes.keys().next().value as string);
    this.codes.set(code, this.clock.now() + CODE_TTL_MS);
    return { code, expiresInS: CODE_TTL_MS / 1000 };
  }

  /** The new session for a valid code, which is used up; undefined for an unknown, used or expired one. */
  redeem(code: string): { session: string; maxAgeS: number } | undefined {
    const found = includes(this.codes, code, this.clock.now());
    if (found === undefined) return undefined;
    this.codes.delete(found);
    const session = secret();
    if (this.sessions.size >= MAX_OPEN) this.sessions.delete(this.sessions.keys().next().value as string);
    this.sessions.set(session, this.clock.now() + SESSION_TTL_MS);
    return { session, maxAgeS: SESSION_TTL_MS / 1000 };
  }

  isSession(value: string): boolean {
    return includes(this.sessions, value, this.clock.now()) !== undefined;
  }
}
