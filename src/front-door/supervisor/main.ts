import { exitOnEscape } from '../../common/last-resort.js';
import { createLogger, type LogFormat } from '../../common/logger.js';
import { errorMessage } from '../../common/errors.js';
import type { FrontDoorLaunch } from './control-protocol.js';
import { FrontDoorProcess } from './front-door-process.js';

/**
 * The front-door process's entry (http.frontDoor process): `node main.js <launch JSON>`, started detached by a
 * control plane (remote-front-door.ts) or by a process manager. It serves until a control plane tells it to stop,
 * or until SIGTERM (which lets requests finish for 30 s).
 */
const STOP_GRACE_MS = 30_000;

const launch = JSON.parse(process.argv[2] ?? '{}') as FrontDoorLaunch;
const logger = createLogger(launch.logLevel ?? 'info', (launch.logFormat ?? 'json') as LogFormat).child({
  instance: launch.instance,
  frontDoor: process.pid,
});
try {
  const frontDoor = await FrontDoorProcess.start(launch, logger, () => process.exit(0));
  exitOnEscape(logger, () => frontDoor.stop(0));
  process.on('SIGTERM', () => void frontDoor.stop(STOP_GRACE_MS));
  process.on('SIGINT', () => void frontDoor.stop(0));
} catch (error) {
  logger.error(`the front door could not start: ${errorMessage(error)}`, { component: 'front-door' });
  process.exit(1);
}
