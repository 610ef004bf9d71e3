import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS } from '../../src/common/labels.js';
import { ControlPlane } from '../../src/control-plane.js';
import type { Client } from '../../src/index.js';
import { containersOf, inspect, startFlotilla, testSettings } from './harness.js';

class SlowToLoad {
  constructor() {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20_000);
  }
  call() {
    return 'loaded';
  }
}

class Slow {
  async call(request: Request) {
    const ms = Number(new URL(request.url).searchParams.get('ms') ?? '0');
    await new Promise((resolve) => setTimeout(resolve, ms));
    return 'done';
  }
}

class Tagged {
  private tag = 'none';
  reconfigure(config: { tag: string }) {
    this.tag = config.tag;
  }
  call() {
    return { tag: this.tag };
  }
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the controller as a reconciler', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  it('answers listBackends, setTraffic and a scale-up elsewhere while a constructor takes 20 s', async () => {
    await Promise.all([
      client.createBackend('blue', () => 'blue'),
      client.createBackend('green', () => 'green'),
      client.createBackend('third', () => 'third'),
    ]);
    await client.createEndpoint('colors', { backend: 'blue', route: '/colors' });
    const began = Date.now();
    let loadedAt = 0;
    const loading = client.createBackend('heavy', SlowToLoad).then(() => (loadedAt = Date.now()));
    await expect.poll(async () => (await client.listReplicas('heavy').catch(() => [])).map((r) => r.state)).toEqual(['starting']);

    expect(Object.keys(await client.listBackends()).sort()).toEqual(['blue', 'green', 'heavy', 'third']);
    await client.setTraffic('colors', { green: 1 });
    expect(await (await fetch(`${client.httpUrl}/colors`)).text()).toBe('green');
    await client.updateBackendConfig('third', { numReplicas: 2 });
    const othersDone = Date.now();
    expect((await client.listReplicas('third')).map((r) => r.state)).toEqual(['ready', 'ready']);
    expect(loadedAt).toBe(0);
    expect((await client.listReplicas('heavy')).map((r) => r.state)).toEqual(['starting']);

    await loading;
    expect(loadedAt - began).toBeGreaterThanOrEqual(19_000);
    expect(othersDone).toBeLessThan(loadedAt);
    expect((await client.listReplicas('heavy')).map((r) => r.state)).toEqual(['ready']);
  });

  it('lets in-flight requests finish when a backend is deleted (without force)', async () => {
    await client.createBackend('old', Slow, { config: { gracefulShutdownTimeoutS: 10 } });
    await client.createBackend('new', () => 'new');
    await client.createEndpoint('moving', { backend: 'old', route: '/moving' });
    const inFlight = fetch(`${client.httpUrl}/moving?ms=2000`);
    await wait(300);
    await client.setTraffic('moving', { new: 1 });
    const deleting = Date.now();
    await client.deleteBackend('old');
    const answer = await inFlight;
    expect(answer.status).toBe(200);
    expect(await answer.text()).toBe('done');
    expect(Date.now() - deleting).toBeGreaterThanOrEqual(1000);
    expect(containersOf(instance, 'old')).toEqual([]);
    expect(Object.keys(await client.listBackends())).not.toContain('old');
  });
});

describe('adoption after a restart', () => {
  it('reconfigures an adopted replica whose live config differs from the saved state, without replacing it', async () => {
    const settings = testSettings();
    const first = await ControlPlane.start(settings);
    await first.client.createBackend('tagged', Tagged, { config: { userConfig: { tag: 'v1' } } });
    await first.client.createEndpoint('tagged', { backend: 'tagged', route: '/tagged' });
    await first.client.updateBackendConfig('tagged', { userConfig: { tag: 'v2' } });
    const [replica] = await first.client.listReplicas('tagged');
    expect(inspect(replica!.containerId).Config.Labels).toHaveProperty([LABELS.configHash]);
    await first.close();

    // As if the control plane died after saving v3 and before pushing it.
    const statePath = join(settings.stateDir, 'state', `${settings.instance}.json`);
    const state = JSON.parse(readFileSync(statePath, 'utf8'));
    expect(state.version).toBe(2);
    state.backends[0].config.userConfig = { tag: 'v3' };
    writeFileSync(statePath, JSON.stringify(state));

    const second = await ControlPlane.start(settings);
    try {
      await expect.poll(async () => (await second.client.listReplicas('tagged')).map((r) => r.state)).toEqual(['ready']);
      expect(await (await fetch(`${second.client.httpUrl}/tagged`)).json()).toEqual({ tag: 'v3' });
      expect((await second.client.listReplicas('tagged')).map((r) => r.containerId)).toEqual([replica!.containerId]);
    } finally {
      await second.shutdown();
    }
    expect(containersOf(settings.instance)).toEqual([]);
  });
});
