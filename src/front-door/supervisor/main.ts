import type { Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { exitOnEscape } from '../../common/last-resort.js';
import { createLogger, type LogFormat } from '../../common/logger.js';
import { errorMessage } from '../../common/errors.js';
import type { RoutingSnapshot } from '../../dataplane/dispatcher.js';
import { requestUpgrade } from './upgrade.js';
import type { FrontDoorLaunch, Handover } from './control-protocol.js';
import { FrontDoorProcess } from './front-door-process.js';

/**
 * The front-door process's entry (http.frontDoor process):
 * - `node main.js <launch JSON>`: started detached by a control plane (remote-front-door.ts); forked by a front door
 *   it replaces, it waits for that one's listening server over IPC (the handover) and serves on it.
 * - `node main.js --upgrade <stateDir> <instance>`: replaces the running front door of the instance by this build's.
 * It serves until a control plane tells it to stop, or until SIGTERM (which lets requests finish for 30 s).
 */
const STOP_GRACE_MS = 30_000;

function handover(): Promise<{ server: Server; snapshot?: RoutingSnapshot; demanded: string[] }> {
  return new Promise((resolve) => {
    process.once('message', (message: Handover, server: Server) => {
      if (message.t === 'handover')
        resolve({ server, demanded: message.demanded, ...(message.snapshot === undefined ? {} : { snapshot: message.snapshot }) });
    });
  });
}

async function serve(): Promise<void> {
  const launch = JSON.parse(process.argv[2] ?? '{}') as FrontDoorLaunch;
  const logger = createLogger(launch.logLevel ?? 'info', (launch.logFormat ?? 'json') as LogFormat).child({
    instance: launch.instance,
    frontDoor: process.pid,
  });
  const takeOver = process.send === undefined ? undefined : await handover();
  try {
    const frontDoor = await FrontDoorProcess.start(launch, logger, () => process.exit(0), takeOver);
    exitOnEscape(logger, () => frontDoor.stop(0));
    process.on('SIGTERM', () => void frontDoor.stop(STOP_GRACE_MS));
    process.on('SIGINT', () => void frontDoor.stop(0));
    if (takeOver !== undefined) {
      process.send?.({ t: 'serving' } satisfies Handover);
      process.channel?.unref();
    }
  } catch (error) {
    logger.error(`the front door could not start: ${errorMessage(error)}`, { component: 'front-door' });
    process.send?.({ t: 'failed', message: errorMessage(error) } satisfies Handover);
    process.exit(1);
  }
}

if (process.argv[2] === '--upgrade') {
  try {
    const pid = await requestUpgrade(process.argv[3] ?? '', process.argv[4] ?? '', fileURLToPath(import.meta.url));
    process.stdout.write(`the front door is replaced: pid ${pid} serves the port; the old one drains its requests and exits\n`);
  } catch (error) {
    process.stderr.write(`${errorMessage(error)}\n`);
    process.exit(1);
  }
} else {
  await serve();
}
