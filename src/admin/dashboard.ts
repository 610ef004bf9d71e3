import type { IncomingMessage, ServerResponse } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import type { DashboardAccess } from './dashboard-access.js';
import { dashboardAsset } from './dashboard-assets.js';
import type { RequestGuard } from './request-guard.js';

const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export function isDashboardPath(pathname: string): boolean {
  return pathname === '/dashboard' || pathname.startsWith('/dashboard/');
}

/**
 * The dashboard page and its assets, for a browser with a session cookie. `?code=` redeems a one-time
 * code from POST /api/dashboard/codes: the answer sets the cookie (HTTP-only, SameSite=Strict) and
 * redirects to the page without the code.
 */
export function serveDashboard(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  { guard, access }: { guard: RequestGuard; access: DashboardAccess },
): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    throw new FlotillaError('METHOD_NOT_ALLOWED', `${url.pathname} accepts GET, HEAD`);
  }
  const code = url.searchParams.get('code');
  if (code !== null) {
    const redeemed = access.redeem(code);
    if (redeemed === undefined)
      throw new FlotillaError('UNAUTHORIZED', 'this dashboard code is unknown, used or expired: run `flotilla dashboard` for a new one');
    res.writeHead(303, {
      location: '/dashboard/',
      'set-cookie': `${guard.cookieName()}=${redeemed.session}; Path=/; Max-Age=${redeemed.maxAgeS}; HttpOnly; SameSite=Strict`,
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
    });
    res.end();
    return;
  }
  if (!guard.authorized(req))
    throw new FlotillaError('UNAUTHORIZED', 'the dashboard needs a session: open the URL that `flotilla dashboard` prints');
  if (url.pathname === '/dashboard') {
    res.writeHead(308, { location: '/dashboard/' });
    res.end();
    return;
  }
  const asset = dashboardAsset(url.pathname.slice('/dashboard/'.length));
  if (asset === undefined) throw new FlotillaError('ROUTE_NOT_FOUND', `the dashboard has no ${url.pathname}`);
  res.writeHead(200, {
    'content-type': asset.contentType,
    'content-length': asset.body.length,
    'cache-control': 'no-store',
    'content-security-policy': CONTENT_SECURITY_POLICY,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  res.end(req.method === 'HEAD' ? undefined : asset.body);
}
