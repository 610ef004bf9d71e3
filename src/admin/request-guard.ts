import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { isLoopbackHost } from '../common/checks.js';
import { FlotillaError } from '../common/errors.js';
import type { DashboardAccess } from './dashboard-access.js';

const WILDCARD = /^(0\.0\.0\.0|::)$/;

export interface AdminSettings {
  /** Every request must carry it as `Authorization: Bearer <token>`; undefined for none (loopback only). */
  token: string | undefined;
  /** Host names accepted in `Host` besides IP addresses and localhost. */
  allowedHosts: string[];
}

/** The host name of a Host header or an origin, lowercased, without brackets or a trailing dot; undefined if malformed. */
function hostnameOf(host: string): string | undefined {
  try {
    return new URL(`http://${host}`).hostname
      .replace(/^\[(.*)\]$/, '$1')
      .replace(/\.$/, '')
      .toLowerCase();
  } catch {
    return undefined;
  }
}

/**
 * Who may ask what of the admin API: requests that name it in Host and come from no foreign Origin, then
 * the holders of the token, and (for reading) of a dashboard session.
 */
export class RequestGuard {
  private readonly tokenBytes: Buffer | undefined;
  private boundHost = '127.0.0.1';
  private boundPort = 0;

  constructor(
    private readonly settings: AdminSettings,
    private readonly access: DashboardAccess,
  ) {
    this.tokenBytes = settings.token === undefined || settings.token === '' ? undefined : Buffer.from(settings.token);
  }

  /** Where the API listens: its own host name, and the port that names the session cookie. */
  bind(address: { host: string; port: number }): void {
    this.boundHost = address.host;
    this.boundPort = address.port;
  }

  cookieName(): string {
    return `flotilla_dashboard_${this.boundPort}`;
  }

  /** A GET with a dashboard session cookie: what the page's own requests carry. */
  private hasSession(req: IncomingMessage): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const prefix = `${this.cookieName()}=`;
    const value = (req.headers.cookie ?? '')
      .split(';')
      .map((part) => part.trim())
      .find((part) => part.startsWith(prefix))
      ?.slice(prefix.length);
    return value !== undefined && this.access.isSession(value);
  }

  authorized(req: IncomingMessage): boolean {
    if (this.tokenBytes === undefined || this.hasSession(req)) return true;
    const presented = Buffer.from(/^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1] ?? '');
    return presented.length === this.tokenBytes.length && timingSafeEqual(presented, this.tokenBytes);
  }

  /** A host name this API answers to: its own address, localhost or an IP address when it binds to one or all, or an allowed name. */
  private isOwnHost(hostname: string | undefined): boolean {
    if (hostname === undefined || hostname === '') return false;
    if (this.settings.allowedHosts.includes(hostname)) return true;
    if (hostname === this.boundHost.toLowerCase()) return true;
    if (isLoopbackHost(this.boundHost)) return isLoopbackHost(hostname);
    return WILDCARD.test(this.boundHost) && (hostname === 'localhost' || isIP(hostname) !== 0);
  }

  /**
   * What keeps web pages out, with the server's refusal of bodies that are not JSON: a Host that is not
   * this API's (DNS rebinding) and an Origin other than the API's own (a cross-site request).
   */
  refuseForeign(req: IncomingMessage): void {
    const host = req.headers.host ?? '';
    if (!this.isOwnHost(hostnameOf(host)))
      throw new FlotillaError(
        'FORBIDDEN',
        `the admin API does not answer to Host '${host}': use its IP address or localhost, or list the name in FLOTILLA_ADMIN_ALLOWED_HOSTS (admin.allowedHosts)`,
      );
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let originHost = '';
    try {
      originHost = new URL(origin).host.toLowerCase();
    } catch {
      // 'null' and other opaque origins are foreign
    }
    if (originHost !== host.toLowerCase())
      throw new FlotillaError(
        'FORBIDDEN',
        `the admin API refuses requests from web pages (Origin ${origin}); call it from a program or the CLI`,
      );
  }
}
