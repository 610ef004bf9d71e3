import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../common/clock.js';

const CODE_TTL_MS = 2 * 60_000;
const SESSION_IDLE_MS = 10 * 60_000;
const SESSION_MAX_MS = 8 * 60 * 60_000;
const MAX_OPEN = 100;

interface Lifetime {
  /** When it ends unless used before; a session's use moves it on. */
  idleEnd: number;
  /** When it ends whatever happens. */
  end: number;
}

function secret(): string {
  return randomBytes(24).toString('base64url');
}

/** The stored secret equal to `presented` (compared in constant time), forgetting the expired ones on the way. */
function find(secrets: Map<string, Lifetime>, presented: string, now: number): string | undefined {
  const bytes = Buffer.from(presented);
  let found: string | undefined;
  for (const [value, life] of secrets) {
    if (life.idleEnd <= now || life.end <= now) {
      secrets.delete(value);
      continue;
    }
    const candidate = Buffer.from(value);
    if (candidate.length === bytes.length && timingSafeEqual(candidate, bytes)) found = value;
  }
  return found;
}

function remember(secrets: Map<string, Lifetime>, value: string, life: Lifetime): void {
  if (secrets.size >= MAX_OPEN) secrets.delete(secrets.keys().next().value as string);
  secrets.set(value, life);
}

/**
 * Who may read through the dashboard: a holder of the admin token asks for a one-time code (valid 2 minutes);
 * the page redeems it once for a session, which it keeps in memory and presents as a bearer. A session ends
 * after 10 minutes without use and 8 hours after it began. Codes and sessions live in memory: a restart of the
 * control plane ends them.
 */
export class DashboardAccess {
  private readonly codes = new Map<string, Lifetime>();
  private readonly sessions = new Map<string, Lifetime>();

  constructor(private readonly clock: Clock) {}

  issueCode(): { code: string; expiresInS: number } {
    const code = secret();
    const end = this.clock.now() + CODE_TTL_MS;
    remember(this.codes, code, { idleEnd: end, end });
    return { code, expiresInS: CODE_TTL_MS / 1000 };
  }

  /** A new session for a valid code, which is used up; undefined for an unknown, used or expired one. */
  redeem(code: string): { session: string; idleTimeoutS: number; maxAgeS: number } | undefined {
    const now = this.clock.now();
    const found = find(this.codes, code, now);
    if (found === undefined) return undefined;
    this.codes.delete(found);
    const session = secret();
    remember(this.sessions, session, { idleEnd: now + SESSION_IDLE_MS, end: now + SESSION_MAX_MS });
    return { session, idleTimeoutS: SESSION_IDLE_MS / 1000, maxAgeS: SESSION_MAX_MS / 1000 };
  }

  /** Whether `value` is an open session; using it keeps it open for another idle period. */
  useSession(value: string): boolean {
    const now = this.clock.now();
    const found = find(this.sessions, value, now);
    const life = found === undefined ? undefined : this.sessions.get(found);
    if (life === undefined) return false;
    life.idleEnd = now + SESSION_IDLE_MS;
    return true;
  }
}
