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
 * the holders of the token, and (for reading) of a dashboard session. No cookie authorizes anything: browsers
 * send a host's cookies to every port of it (RFC 6265 §8.5), so to the front door and its replicas too.
 */
export class RequestGuard {
  private readonly tokenBytes: Buffer | undefined;
  private boundHost = '127.0.0.1';

  constructor(
    private readonly settings: AdminSettings,
    private readonly access: DashboardAccess,
  ) {
    this.tokenBytes = settings.token === undefined || settings.token === '' ? undefined : Buffer.from(settings.token);
  }

  /** Where the API listens: the host name it answers to besides the allowed ones. */
  bind(address: { host: string }): void {
    this.boundHost = address.host;
  }

  /** The token, or (for reading only) a dashboard session, as `Authorization: Bearer`; anyone when there is no token. */
  authorized(req: IncomingMessage): boolean {
    if (this.tokenBytes === undefined) return true;
    const bearer = /^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const presented = Buffer.from(bearer);
    if (presented.length === this.tokenBytes.length && timingSafeEqual(presented, this.tokenBytes)) return true;
    return (req.method === 'GET' || req.method === 'HEAD') && bearer !== '' && this.access.useSession(bearer);
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
