import type { Client } from '../api.js';

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

/** A plain-text overview of endpoints, backends and replicas, as `flotilla status` prints it. */
export async function renderStatus(client: Client): Promise<string> {
  const [endpoints, backends] = await Promise.all([client.listEndpoints(), client.listBackends()]);
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
  for (const [name, backend] of Object.entries(backends)) {
    const replicas = await client.listReplicas(name);
    const ready = replicas.filter((r) => r.state === 'ready').length;
    const rollout = backend.rollout;
    const rolloutNote =
      rollout === null || rollout.state === 'completed'
        ? ''
        : `rollout ${rollout.state} ${rollout.fromVersion} → ${rollout.targetVersion}${rollout.reason === null ? '' : `: ${rollout.reason}`}`;
    replicaRows.push([name, `${ready}/${backend.numReplicas} ready`, `version ${backend.version}`, '', rolloutNote]);
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
    `HTTP: ${client.httpUrl}`,
    '',
    'ENDPOINTS',
    table([['NAME', 'ROUTE', 'METHODS', 'TRAFFIC', 'SHADOWS'], ...endpointRows]),
    '',
    'BACKENDS',
    table([['BACKEND', 'REPLICA', 'STATE', 'CONTAINER', 'HEALTH'], ...replicaRows]),
    '',
  ].join('\n');
}
