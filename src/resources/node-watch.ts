import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { NodeCapacity, Scheduler } from './scheduler.js';

export const NODE_WATCH_PERIOD_MS = 1000;

/**
 * Keeps a cluster's scheduler current: every period it reads the nodes (readiness and capacity) and hands them over,
 * logging each node that goes down or comes back. Returns the function that stops it.
 */
export function watchNodes(
  source: { listNodes(): Promise<NodeCapacity[]> },
  scheduler: Scheduler,
  logger: Logger,
  periodMs = NODE_WATCH_PERIOD_MS,
): () => void {
  const known = new Map<string, boolean>();
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    source
      .listNodes()
      .then((nodes) => {
        scheduler.setNodes(nodes);
        for (const node of nodes) {
          if (known.has(node.name) && known.get(node.name) !== node.ready) {
            logger.warn(node.ready ? 'node ready' : 'node down', { component: 'scheduler', node: node.name });
          }
          known.set(node.name, node.ready);
        }
      })
      .catch((error: unknown) => logger.error('reading the nodes failed', { component: 'scheduler', error: errorMessage(error) }))
      .finally(() => (busy = false));
  }, periodMs);
  timer.unref();
  return () => clearInterval(timer);
}
