import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { isIP } from 'node:net';

/** Hop-by-hop headers (RFC 9110 7.6.1, plus the Proxy-* family): they describe one connection and are never passed on. */
const HOP_BY_HOP_NAMES = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
];
const HOP_BY_HOP: ReadonlySet<string> = new Set(HOP_BY_HOP_NAMES);
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;
/** The admin dashboard's session cookies: a browser sends them to every port of the host, the front door's included. */
const FLOTILLA_COOKIE = 'flotilla_dashboard_';

/**
 * The path of a request, or undefined when its request target is not one
 * the front door forwards: not origin-form or absolute-form http(s), with
 * '.'/'..' segments (raw or percent-encoded), a backslash, or starting
 * with '//': a replica could resolve those to another path than the one
 * routed (some servers merge slashes, '//x' reads as a host to URL parsers,
 * and URL parsers, http-proxy's url.parse among them, read '\' as '/'). An absolute-form target is rewritten
 * to origin-form in req.url, so the replica sees the same path.
 */
export function requestPath(req: IncomingMessage): string | undefined {
  let url = req.url ?? '';
  if (url.charCodeAt(0) !== 47 /* / */) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return undefined;
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return undefined;
    url = req.url = `${parsed.pathname}${parsed.search}`;
  }
  const query = url.indexOf('?');
  const path = query < 0 ? url : url.slice(0, query);
  const dotted = (path.includes('.') || path.includes('%')) && DOT_SEGMENT.test(path);
  return path.charCodeAt(1) === 47 || path.includes('\\') || dotted ? undefined : path;
}

/** Whether the path is in the replica protocol's namespace: /- or under /-/. */
export function isProtocolPath(path: string): boolean {
  return path.charCodeAt(1) === 45 /* - */ && (path.length === 2 || path.charCodeAt(2) === 47);
}

/** Parses a comma-separated list of IP addresses; throws naming the first entry that is not one. */
export function parseTrustedProxies(list: string): Set<string> {
  const addresses = list
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  const bad = addresses.find((address) => isIP(address) === 0);
  if (bad !== undefined) throw new Error(`'${bad}' is not an IP address`);
  return new Set(addresses);
}

function unmapped(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/**
 * Rewrites req.headers, once, into what a replica receives: hop-by-hop headers
 * (and those named by Connection), Expect and the replica protocol's own
 * x-flotilla-* headers removed, and Flotilla's own cookies (the dashboard's
 * session, see withoutFlotillaCookies); X-Forwarded-For/Proto/Host/Port set from this
 * connection, replacing the client's, unless the client is one of `trusted`
 * (then its X-Forwarded-* and Forwarded are kept and its address appended to
 * X-Forwarded-For). The body travels with a Content-Length.
 */
export function prepareForwardHeaders(req: IncomingMessage, bodyLength: number, trusted: ReadonlySet<string>): void {
  const headers: IncomingHttpHeaders = req.headers;
  const remote = unmapped(req.socket.remoteAddress ?? '');
  const fromTrusted = trusted.size > 0 && trusted.has(remote);
  const connection = headers.connection;
  if (namesHeaders(connection)) for (const token of connection.split(',')) delete headers[token.trim().toLowerCase()];
  const chunked = headers['transfer-encoding'] !== undefined;
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || name === 'expect' || name.startsWith('x-flotilla-')) delete headers[name];
    else if (!fromTrusted && (name === 'forwarded' || name.startsWith('x-forwarded-'))) delete headers[name];
  }
  const cookie = headers.cookie;
  if (cookie !== undefined && cookie.includes(FLOTILLA_COOKIE)) {
    const kept = withoutFlotillaCookies(cookie);
    if (kept === '') delete headers.cookie;
    else headers.cookie = kept;
  }
  if (chunked || bodyLength > 0) headers['content-length'] = String(bodyLength);
  const forwardedFor = fromTrusted ? headers['x-forwarded-for'] : undefined;
  headers['x-forwarded-for'] = forwardedFor === undefined ? remote : `${forwardedFor}, ${remote}`;
  if (!fromTrusted || headers['x-forwarded-proto'] === undefined) headers['x-forwarded-proto'] = 'http';
  if (!fromTrusted || headers['x-forwarded-host'] === undefined) headers['x-forwarded-host'] = headers.host ?? '';
  if (!fromTrusted || headers['x-forwarded-port'] === undefined) headers['x-forwarded-port'] = String(req.socket.localPort ?? '');
}

/** A Cookie header without the cookies whose name starts with flotilla_dashboard_ (the others as they were). */
export function withoutFlotillaCookies(cookie: string): string {
  return cookie
    .split(';')
    .map((pair) => pair.trim())
    .filter((pair) => pair !== '' && !pair.startsWith(FLOTILLA_COOKIE))
    .join('; ');
}

/**
 * Keeps a response's hop-by-hop headers (and those its Connection names) from being relayed: their values become
 * undefined, which http-proxy's writeHeaders skips (deleting them would turn the headers object into a slow dictionary).
 */
export function stripHopByHop(headers: IncomingHttpHeaders): void {
  const connection = headers.connection;
  if (namesHeaders(connection)) {
    for (const token of connection.split(',')) {
      const name = token.trim().toLowerCase();
      if (headers[name] !== undefined) headers[name] = undefined;
    }
  }
  for (const name of HOP_BY_HOP_NAMES) if (headers[name] !== undefined) headers[name] = undefined;
}

/** Whether a Connection value names headers beyond the hop-by-hop ones (the usual keep-alive and close name none). */
function namesHeaders(connection: string | undefined): connection is string {
  return connection !== undefined && connection !== 'keep-alive' && connection !== 'close';
}
