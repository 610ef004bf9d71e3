import { connect } from 'node:net';
import { FlotillaError, type ErrorCode } from '../../common/errors.js';
import { CONTROL_PROTOCOL, controlSocketPath, onLines, sendLine, type FromFrontDoor } from './control-protocol.js';

/** How long an upgrade may take: the new front door starting (its workers too) and taking the port. */
const UPGRADE_TIMEOUT_MS = 60_000;

/**
 * Asks the instance's running front door to hand its port to a new one started from `main` (the new build's
 * main.js); resolves with the new front door's process id once it serves.
 */
export function requestUpgrade(stateDir: string, instance: string, main: string): Promise<number> {
  const path = controlSocketPath(stateDir, instance);
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new FlotillaError(
          'FRONT_DOOR_UNAVAILABLE',
          `the front door on ${path} did not finish the upgrade within ${UPGRADE_TIMEOUT_MS / 1000} s`,
        ),
      );
    }, UPGRADE_TIMEOUT_MS);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(new FlotillaError('FRONT_DOOR_UNAVAILABLE', `no front door answers on ${path} (${error.message}): nothing to upgrade`));
    });
    socket.once('connect', () => sendLine(socket, { t: 'upgrade', protocol: CONTROL_PROTOCOL, main }));
    onLines<FromFrontDoor>(socket, (message) => {
      clearTimeout(timer);
      socket.destroy();
      if (message.t === 'upgraded') resolve(message.pid);
      else if (message.t === 'rejected') reject(new FlotillaError(message.code as ErrorCode, message.message));
      else reject(new FlotillaError('FRONT_DOOR_UNAVAILABLE', `unexpected answer ${message.t}`));
    });
  });
}
