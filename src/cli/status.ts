import type { BackendInfo, Client, EndpointInfo, ReplicaInfo, RolloutStatus } from '../api.js';
import { sleep } from '../common/clock.js';

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** What `flotilla status` shows, asked of the control plane once; a backend deleted meanwhile is left out. */
interface Snapshot {
  httpUrl: string;
  endpoints: Record<string, EndpointInfo>;
  backends: Array<{ name: string; info: BackendInfo; replicas: ReplicaInfo[] }>;
}

async function snapshotOf(client: Client): Promise<Snapshot> {
  const [endpoints, backends] = await Promise.all([client.listEndpoints(), client.listBackends()]);
  const replicas = await Promise.all(Object.keys(backends).map((name) => client.listReplicas(name).catch(() => undefined)));
  return {
    httpUrl: client.httpUrl,
    endpoints,
    backends: Object.entries(backends).flatMap(([name, info], i) =>
      replicas[i] === undefined ? [] : [{ name, info, replicas: replicas[i] }],
    ),
  };
}

function formatStatus({ httpUrl, endpoints, backends }: Snapshot): string {
  const endpointRows = Object.entries(endpoints).map(([name, e]) => [
    name,
    e.route ?? '(handle only)',
    e.methods.join(','),
    Object.entries(e.traffic)
      .map(([backend, weight]) => `${backend}=${weight}`)
      .join(' '),
    Object.entries(e.shadows)
      .map(([backend, share]) => `${backend}=${share}`)
      .join(' ') || '-',
  ]);
  const replicaRows: string[][] = [];
  for (const { name, info: backend, replicas } of backends) {
    const ready = replicas.filter((r) => r.state === 'ready').length;
    const rollout = backend.rollout;
    const rolloutNote =
      rollout === null || rollout.state === 'completed'
        ? ''
        : `rollout ${rollout.state} ${rollout.fromVersion} → ${rollout.targetVersion}${rollout.reason === null ? '' : `: ${rollout.reason}`}`;
    replicaRows.push([name, `${ready}/${backend.numReplicas} ready`, `version ${backend.version}`, '', rolloutNote]);
    const scaling = backend.autoscalingStatus;
    if (backend.autoscaling !== null && scaling !== null) {
      const { minReplicas, maxReplicas, targetOngoingRequests } = backend.autoscaling;
      const summary =
        `autoscaling ${minReplicas}-${maxReplicas} (${targetOngoingRequests} ongoing per replica): ` +
        `wanted ${scaling.wantedReplicas}, target ${scaling.targetReplicas}, running ${scaling.runningReplicas}, ` +
        `${scaling.ongoingRequests} ongoing`;
      replicaRows.push([
        '',
        '',
        '',
        '',
        summary + (scaling.heldBack === null ? '' : ` (${scaling.heldBack.by}: ${scaling.heldBack.message})`),
      ]);
      const last = scaling.lastDecision;
      if (last !== null) replicaRows.push(['', '', '', '', `last decision ${last.time}: ${last.from} → ${last.to}, ${last.reason}`]);
    }
    for (const replica of replicas) {
      replicaRows.push([
        '',
        replica.id,
        replica.state,
        replica.containerId.slice(0, 12),
        `restarts=${replica.restarts}${replica.lastError ? ` last error: ${replica.lastError}` : ''}`,
      ]);
    }
  }
  return [
    `HTTP: ${httpUrl}`,
    '',
    'ENDPOINTS',
    table([['NAME', 'ROUTE', 'METHODS', 'TRAFFIC', 'SHADOWS'], ...endpointRows]),
    '',
    'BACKENDS',
    table([['BACKEND', 'REPLICA', 'STATE', 'CONTAINER', 'HEALTH'], ...replicaRows]),
    '',
  ].join('\n');
}

/** A plain-text overview of endpoints, backends and replicas, as `flotilla status` prints it. */
export async function renderStatus(client: Client): Promise<string> {
  return formatStatus(await snapshotOf(client));
}

/** Where a backend's replicas stand against its target version. */
interface Progress {
  backend: string;
  rollout: RolloutStatus | null;
  version: string;
  numReplicas: number;
  /** Ready replicas of the target version, and of any other. */
  ready: number;
  readyOlder: number;
}

const UNDER_WAY: ReadonlySet<RolloutStatus['state']> = new Set(['rolling', 'in-place', 'rolling-back']);

function progressOf(snapshot: Snapshot): Progress[] {
  return snapshot.backends.map(({ name, info, replicas }) => {
    const ready = replicas.filter((r) => r.state === 'ready');
    const current = ready.filter((r) => r.version === info.version).length;
    return {
      backend: name,
      rollout: info.rollout,
      version: info.version,
      numReplicas: info.numReplicas,
      ready: current,
      readyOlder: ready.length - current,
    };
  });
}

/** e.g. 'greeter: rolling 3c1f… → 9ab2…, 1/3 ready of version 9ab2…, 2 of older versions'. */
export function describeProgress(p: Progress): string {
  const counts = `${p.ready}/${p.numReplicas} ready of version ${p.version}${p.readyOlder === 0 ? '' : `, ${p.readyOlder} of older versions`}`;
  if (p.rollout === null) return `${p.backend}: ${counts}`;
  const { state, fromVersion, targetVersion, reason } = p.rollout;
  return `${p.backend}: ${state} ${fromVersion} → ${targetVersion}, ${counts}${reason === null ? '' : ` (${reason})`}`;
}

export interface WatchOptions {
  /** Redraw the whole status in place (a terminal), or print a line per backend whose progress changed. */
  tty: boolean;
  write(text: string): void;
  /** How often to ask the control plane. Default 500. */
  intervalMs?: number;
}

/**
 * `flotilla status --watch`: shows each backend's rollout progress (state, versions, ready replicas of the new version
 * and of older ones) until no rollout is under way. Resolves false when a rollout it saw under way ended rolled back
 * or paused.
 */
export async function watchStatus(client: Client, options: WatchOptions): Promise<boolean> {
  const seen = new Set<string>();
  const printed = new Map<string, string>();
  for (;;) {
    const snapshot = await snapshotOf(client);
    const progress = progressOf(snapshot);
    const underWay = progress.filter((p) => p.rollout !== null && UNDER_WAY.has(p.rollout.state));
    underWay.forEach((p) => seen.add(p.backend));
    if (options.tty) {
      const rollouts = progress.map((p) => describeProgress(p)).join('\n');
      options.write(`\x1b[H\x1b[2J${formatStatus(snapshot)}\nROLLOUTS\n${rollouts}\n`);
    } else {
      for (const p of progress) {
        const line = describeProgress(p);
        if (printed.get(p.backend) === line) continue;
        printed.set(p.backend, line);
        options.write(`${line}\n`);
      }
    }
    if (underWay.length === 0)
      return !progress.some((p) => seen.has(p.backend) && (p.rollout?.state === 'rolled-back' || p.rollout?.state === 'paused'));
    await sleep(options.intervalMs ?? 500);
  }
}
