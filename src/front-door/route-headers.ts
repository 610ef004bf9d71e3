import type { IncomingMessage } from 'node:http';
import type { RouteMatch } from '../dataplane/route-table.js';
import { PROTOCOL } from '../replica/protocol.js';

const pending = new WeakMap<IncomingMessage, Record<string, string>>();

/** JSON with every non-ASCII character escaped (\uXXXX), so that it is a valid header value. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The protocol headers a route gives a request (the path parameters of a variable route), noted when the route
 * matches and added by applyRouteHeaders once the caller's own x-flotilla-* headers have been dropped.
 */
export function noteRouteHeaders(req: IncomingMessage, route: RouteMatch): void {
  if (Object.keys(route.params).length > 0) pending.set(req, { [PROTOCOL.pathParamsHeader]: asciiJson(route.params) });
}

export function applyRouteHeaders(req: IncomingMessage): void {
  const headers = pending.get(req);
  if (headers !== undefined) Object.assign(req.headers, headers);
}
