import { rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

/** How a bench server tells the bench it is listening: one JSON line on stdout. */
export interface Ready {
  port?: number;
}

function announce(ready: Ready): void {
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

export function listenOnSocket(server: Server, socketPath: string | undefined): void {
  if (socketPath === undefined) throw new Error('usage: <server> SOCKET_PATH');
  rmSync(socketPath, { force: true });
  server.listen(socketPath, () => announce({}));
}

export function listenOnLoopback(server: Server): void {
  server.listen(0, '127.0.0.1', () => announce({ port: (server.address() as AddressInfo).port }));
}
