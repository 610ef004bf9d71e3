import { LABELS } from '../common/labels.js';
import type { Placement, Scheduler } from '../resources/scheduler.js';
import type { ReplicaStatus } from '../runtime/container-runtime.js';
import type { BackendState } from './backend-state.js';
import { Replica } from './replica.js';
import { readControlSecret } from './replica-files.js';

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Takes over the running containers that serve the restored backends: each
 * becomes a 'starting' replica that must answer a health check before it is
 * routed to. Its version and live-config hash come from its labels, the
 * live-config hash overridden by the saved replicaConfigs, so that the
 * reconcile step reconfigures a replica that holds another live config and
 * rolls out over one of another version (a container without a version label
 * is taken to run the target's). Returns the containers nobody adopted.
 */
export function adoptContainers(
  backends: ReadonlyMap<string, BackendState>,
  statuses: ReplicaStatus[],
  scheduler: Scheduler,
  now: number,
): ReplicaStatus[] {
  const strays: ReplicaStatus[] = [];
  for (const status of statuses) {
    const backend = backends.get(status.labels[LABELS.backend] ?? '');
    const id = status.labels[LABELS.replica];
    const placement = parsePlacement(status.labels[LABELS.placement]);
    if (backend === undefined || id === undefined || placement === undefined || !status.running || status.target === undefined) {
      strays.push(status);
      continue;
    }
    scheduler.adopt(id, placement);
    const target = backend.target;
    const version = status.labels[LABELS.version] ?? target.version;
    const liveHash = target.liveHash === 'none' ? 'none' : (backend.replicaConfigs[id] ?? status.labels[LABELS.configHash] ?? 'unknown');
    const history = { restarts: Number(status.labels[LABELS.restarts] ?? 0) || 0, lastError: status.labels[LABELS.lastError] ?? null };
    const container = {
      containerId: status.containerId,
      target: status.target,
      hostDir: status.hostDir,
      controlSecret: status.hostDir === undefined ? undefined : readControlSecret(status.hostDir),
      startedAt: status.startedAt,
    };
    backend.adopt(new Replica(id, placement, history, version, liveHash, now, undefined, container));
  }
  return strays;
}

function parsePlacement(label: string | undefined): Placement | undefined {
  if (label === undefined) return undefined;
  try {
    const placement = JSON.parse(label) as Placement;
    return isObject(placement) && typeof placement.cpus === 'number' && Array.isArray(placement.gpuIds) ? placement : undefined;
  } catch {
    return undefined;
  }
}
