import type { AddressInfo, Server } from 'node:net';
import { FlotillaError } from './errors.js';

export function invalid(message: string): FlotillaError {
  return new FlotillaError('INVALID_ARGUMENT', message);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/** http://host:port, with an IPv6 host in brackets. */
export function urlOf({ host, port }: { host: string; port: number }): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * Starts `server` listening (on `handle`, a listening server another process handed over, when given); a taken port or
 * a bad address is an INVALID_ARGUMENT naming `what`.
 */
export async function listenOn(
  server: Server,
  host: string,
  port: number,
  what: string,
  handle?: Server,
): Promise<{ host: string; port: number }> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const listening = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (handle === undefined) server.listen(port, host, listening);
    else server.listen(handle, listening);
  }).catch((error: NodeJS.ErrnoException) => {
    throw invalid(`${what} cannot listen on ${host}:${port}: ${error.code ?? error.message}`);
  });
  const address = server.address() as AddressInfo;
  return { host: address.address, port: address.port };
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i;

/** Whether a host name or address (an IPv6 one with or without brackets) is this machine's loopback. */
export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.test(host.replace(/^\[(.*)\]$/, '$1'));
}
