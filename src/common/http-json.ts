import type { IncomingMessage, ServerResponse } from 'node:http';
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

/** A request's whole body, refused with `tooLarge()` as soon as it passes maxBytes (nothing more is kept). */
export async function readBounded(req: IncomingMessage, maxBytes: number, tooLarge: () => FlotillaError): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}
