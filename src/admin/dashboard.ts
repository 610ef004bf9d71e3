import type { IncomingMessage, ServerResponse } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import { dashboardAsset } from './dashboard-assets.js';

const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export function isDashboardPath(pathname: string): boolean {
  return pathname === '/dashboard' || pathname.startsWith('/dashboard/');
}

/**
 * The dashboard page and its assets, to anyone: they hold no data. The page reads the one-time code from its
 * URL's fragment (which browsers never send), trades it for a session (POST /api/dashboard/sessions) that it
 * keeps in memory, and sends that as a bearer with each read.
 */
export function serveDashboard(req: IncomingMessage, res: ServerResponse, url: URL): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    throw new FlotillaError('METHOD_NOT_ALLOWED', `${url.pathname} accepts GET, HEAD`);
  }
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
