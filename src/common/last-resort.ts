import { settlesWithin } from './clock.js';
import { errorMessage } from './errors.js';
import type { Logger } from './logger.js';

/** The exit status of a process that stopped on an exception nothing caught (EX_SOFTWARE). */
export const ESCAPED_EXIT_CODE = 70;
/** How long closing may take after such an exception before the process exits regardless. */
const CLOSE_TIMEOUT_MS = 15_000;

/**
 * The last line of defence of a process Flotilla owns (a control plane run
 * by `flotilla start`, a front-door worker): an exception or rejection that
 * nothing caught is logged with its stack, then `close` runs (for at most
 * CLOSE_TIMEOUT_MS) and the process exits with ESCAPED_EXIT_CODE, so that its
 * supervisor starts it again. The state after such an exception is not known
 * to be sound, so the process never carries on. Never installed in a program
 * that embeds Flotilla: that program owns its process.
 */
export function exitOnEscape(logger: Logger, close: () => Promise<void>): void {
  let exiting = false;
  const escaped = (what: string) => (error: unknown) => {
    logger.error(`${what}: closing, then exiting with ${ESCAPED_EXIT_CODE} for a supervisor to restart the process`, {
      error: errorMessage(error),
      stack: error instanceof Error ? error.stack : undefined,
    });
    if (exiting) return;
    exiting = true;
    const closed = close().catch((failure: unknown) =>
      logger.error('closing after an escaped exception failed', { error: errorMessage(failure) }),
    );
    void settlesWithin(closed, CLOSE_TIMEOUT_MS).finally(() => process.exit(ESCAPED_EXIT_CODE));
  };
  process.on('uncaughtException', escaped('uncaught exception'));
  process.on('unhandledRejection', escaped('unhandled rejection'));
}
