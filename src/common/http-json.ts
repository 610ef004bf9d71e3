import type { ServerResponse } from 'node:http';
import type { FlotillaError } from '../common/errors.js';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function sendError(res: ServerResponse, error: FlotillaError, headers: Record<string, string> = {}): void {
  sendJson(res, error.status, { error: error.toJSON() }, headers);
}
