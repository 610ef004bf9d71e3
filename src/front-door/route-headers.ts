import type { IncomingMessage } from 'node:http';
import { FlotillaError } from '../common/errors.js';
import type { RouteMatch } from '../dataplane/route-table.js';
import { PROTOCOL } from '../replica/protocol.js';

/** Ray 1.x's header: the class method an HTTP caller wants, where the endpoint allows it (allowCallMethod). */
export const CALL_METHOD_HEADER = 'x-serve-call-method';
const METHOD_NAME = /^[A-Za-z_$][A-Za-z0-9_$]{0,127}$/;

const pending = new WeakMap<IncomingMessage, Record<string, string>>();

/** JSON with every non-ASCII character escaped (\uXXXX), so that it is a valid header value. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function chosenMethod(req: IncomingMessage, route: RouteMatch): string | undefined {
  const chosen = req.headers[CALL_METHOD_HEADER];
  if (chosen === undefined) return undefined;
  if (route.allowCallMethod !== true) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `endpoint '${route.endpoint}' does not let callers choose a method with X-SERVE-CALL-METHOD; create it with allowCallMethod: true, or leave the header out`,
    );
  }
  if (typeof chosen !== 'string' || !METHOD_NAME.test(chosen)) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `X-SERVE-CALL-METHOD must name a method (letters, digits, _ and $), got ${JSON.stringify(chosen)}`,
    );
  }
  return chosen;
}

/**
 * The protocol headers a route gives a request (the path parameters of a variable route, the method chosen with
 * X-SERVE-CALL-METHOD), noted when the route matches and added by applyRouteHeaders once the caller's own
 * x-flotilla-* headers have been dropped. Throws INVALID_ARGUMENT for a method the endpoint does not let callers choose.
 */
export function noteRouteHeaders(req: IncomingMessage, route: RouteMatch): void {
  const headers: Record<string, string> = {};
  if (Object.keys(route.params).length > 0) headers[PROTOCOL.pathParamsHeader] = asciiJson(route.params);
  const method = chosenMethod(req, route);
  if (method !== undefined) headers[PROTOCOL.methodHeader] = method;
  if (Object.keys(headers).length > 0) pending.set(req, headers);
}

export function applyRouteHeaders(req: IncomingMessage): void {
  const headers = pending.get(req);
  if (headers !== undefined) Object.assign(req.headers, headers);
}
