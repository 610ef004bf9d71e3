import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ControlPlane } from '../../src/control-plane.js';
import { containersOf, testSettings, CLI } from './harness.js';

const run = promisify(execFile);

function ok() {
  return 'ok';
}

class Tuned {
  private config: unknown = null;
  reconfigure(config: unknown) {
    this.config = config;
  }
  call() {
    return this.config;
  }
}

function fails(): never {
  throw new Error('always');
}

function promtool(args: string[], input = ''): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(input);
  });
}

describe('the Prometheus example', () => {
  it('is a config promtool accepts', async () => {
    const example = join(import.meta.dirname, '..', '..', 'examples', 'prometheus', 'prometheus.yml');
    expect(await promtool(['check', 'config', example])).toMatchObject({ code: 0, output: expect.stringContaining('SUCCESS') });
  });
});

describe('metrics, events and the event history across a restart', () => {
  it('exposes metrics that promtool accepts, records events, and keeps them across a restart', async () => {
    const settings = testSettings();
    const first = await ControlPlane.start(settings);
    const { client } = first;
    await client.createBackend('ok', ok, { replicaOptions: { numCpus: 0.5 } });
    await client.createBackend('fails', fails, { replicaOptions: { numCpus: 0.5 } });
    await client.createEndpoint('ok', { backend: 'ok', route: '/ok' });
    await client.createEndpoint('fails', { backend: 'fails', route: '/fails' });
    await client.shadowTraffic('ok', 'fails', 1);
    await client.setTraffic('fails', { fails: 1 });
    await client.updateBackendConfig('ok', { numReplicas: 2, maxConcurrentQueries: 8 });
    for (let i = 0; i < 5; i++) {
      expect((await fetch(`${client.httpUrl}/ok`)).status).toBe(200);
      expect((await fetch(`${client.httpUrl}/fails`)).status).toBe(500);
    }

    const exposition = await (await fetch(`${client.httpUrl}/-/metrics`)).text();
    expect(exposition).toContain('serve_num_http_requests_total{endpoint="ok",backend="ok",status_code="200"} 5');
    expect(exposition).toContain('serve_num_http_error_requests_total{endpoint="fails",backend="fails",error_code="500"} 5');
    expect(exposition).not.toMatch(/serve_num_http_error_requests_total\{endpoint="ok"/);
    expect(exposition).toMatch(/serve_http_request_latency_seconds_bucket\{le="\+Inf",endpoint="fails",backend="fails"\} 5/);
    const replicas = await client.listReplicas('ok');
    for (const replica of replicas)
      expect(exposition).toContain(`serve_deployment_replica_healthy{backend="ok",replica="${replica.id}"} 1`);
    expect(exposition).toContain('flotilla_replicas{backend="ok",state="ready"} 2');
    const checked = await promtool(['check', 'metrics'], exposition);
    expect(checked).toEqual({ code: 0, output: '' });

    const { events, latest } = await client.listEvents();
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: latest }, (_, i) => i + 1));
    expect(events.filter((e) => !e.kind.startsWith('replica.')).map((e) => `${e.kind} ${e.endpoint ?? '-'} ${e.backend ?? '-'}`)).toEqual([
      'backend.created - ok',
      'backend.created - fails',
      'endpoint.created ok ok',
      'endpoint.created fails fails',
      'shadow.set ok fails',
      'traffic.set fails -',
      'backend.scaled - ok',
      'backend.updated - ok',
    ]);
    const running = [...replicas, ...(await client.listReplicas('fails'))].map((r) => r.id).sort();
    for (const kind of ['replica.started', 'replica.ready'])
      expect(
        events
          .filter((e) => e.kind === kind)
          .map((e) => e.replica)
          .sort(),
        kind,
      ).toEqual(running);
    const scaled = (await client.listEvents({ limit: 2 })).events;
    expect(scaled.map((e) => e.message)).toEqual([
      'backend ok scaled from 1 to 2 replica(s)',
      'backend ok updated: maxConcurrentQueries 8',
    ]);

    const cli = (...args: string[]) =>
      run(process.execPath, [CLI, ...args, '--address', first.adminUrl, '--instance', settings.instance, '--state-dir', settings.stateDir]);
    const { stdout } = await cli('events', '--limit', '2');
    expect(stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^\d{4}-\d\d-\d\dT\S+Z\s+backend\.scaled\s+backend=ok\s+backend ok scaled from 1 to 2 replica\(s\)$/),
      expect.stringMatching(/backend\.updated .* backend=ok {2}backend ok updated: maxConcurrentQueries 8$/),
    ]);
    const json = (await cli('events', '--since', String(latest - 2), '--json')).stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(json.map((e) => e.kind)).toEqual(['backend.scaled', 'backend.updated']);
    await expect(cli('events', '--limit', 'many')).rejects.toMatchObject({
      stderr: "flotilla: INVALID_ARGUMENT: --limit must be a whole number, not 'many'\n",
    });
    const refused = await fetch(`${first.adminUrl}/api/events?limit=0`, {
      headers: { authorization: `Bearer ${readFileSync(join(settings.stateDir, 'admin', `${settings.instance}.token`), 'utf8').trim()}` },
    });
    expect(refused.status).toBe(400);
    expect((await refused.json()).error.message).toMatch(/limit must be a whole number from 1 to 1000/);
    await client.createBackend('tuned', Tuned, { replicaOptions: { numCpus: 0.5 } });
    await client.updateBackendConfig('tuned', { userConfig: { blob: 'x'.repeat(500) } });
    const [reconfigured] = (await client.listEvents({ limit: 1 })).events;
    expect(reconfigured).toMatchObject({ kind: 'backend.reconfigured', backend: 'tuned' });
    expect(reconfigured?.message).toMatch(/^backend tuned reconfigured: userConfig \{"blob":"x{150,}…$/);
    expect(reconfigured?.message.length).toBeLessThan(260);
    await first.close();

    const second = await ControlPlane.start(settings);
    try {
      expect((await second.client.listEvents({ since: 0, limit: latest })).events).toEqual(events);
      await second.client.deleteEndpoint('fails');
      const after = (await second.client.listEvents({ since: latest })).events;
      expect(after.map((e) => e.seq)).toEqual(after.map((_, i) => latest + 1 + i));
      expect(after.filter((e) => e.kind === 'endpoint.deleted')).toMatchObject([{ endpoint: 'fails', message: 'endpoint fails deleted' }]);
    } finally {
      await second.shutdown();
    }
    expect(existsSync(join(settings.stateDir, 'state', `${settings.instance}.events.jsonl`))).toBe(false);
    expect(containersOf(settings.instance)).toEqual([]);
  });
});
