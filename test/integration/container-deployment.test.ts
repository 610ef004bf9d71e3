import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { containersOf } from './harness.js';

const ROOT = join(import.meta.dirname, '..', '..');
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();

describe('Flotilla in a container', () => {
  const instance = `box-${shortId(3)}`;
  const stateDir = mkdtempSync('/tmp/flt-box-');
  const token = `token-${shortId(8)}`;
  let container = '';

  beforeAll(() => {
    const image = execFileSync('bash', [join(ROOT, 'scripts', 'flotilla-image.sh'), 'flotilla:test'], { encoding: 'utf8' }).trim();
    container = docker(
      'run',
      '-d',
      '--name',
      `flotilla-${instance}`,
      '-v',
      '/var/run/docker.sock:/var/run/docker.sock',
      '-v',
      `${stateDir}:${stateDir}`,
      '-e',
      `FLOTILLA_STATE_DIR=${stateDir}`,
      '-e',
      `FLOTILLA_INSTANCE=${instance}`,
      '-e',
      `FLOTILLA_ADMIN_TOKEN=${token}`,
      '-e',
      `FLOTILLA_BASE_IMAGE=${process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim'}`,
      '-e',
      'FLOTILLA_CPUS=8',
      '-p',
      '127.0.0.1::8000',
      '-p',
      '127.0.0.1::8001',
      image,
    );
  });

  afterAll(() => {
    if (container !== '') docker('rm', '-f', container);
    const left = containersOf(instance);
    if (left.length > 0) docker('rm', '-f', ...left);
  });

  it('runs the control plane with the engine socket mounted and reaches the replicas it starts', async () => {
    const port = (inner: number) => docker('port', container, `${inner}/tcp`).split(':').pop();
    const address = `http://127.0.0.1:${port(8001)}`;
    let client;
    for (let attempt = 0; ; attempt++) {
      try {
        client = await serve.connect({ address, token });
        break;
      } catch (error) {
        if (attempt > 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    }
    await client.createBackend('boxed', (request: Request) => `served ${new URL(request.url).pathname} from a replica`, {
      config: { numReplicas: 2 },
    });
    await client.createEndpoint('boxed', { backend: 'boxed', route: '/boxed' });
    expect(containersOf(instance, 'boxed')).toHaveLength(2);
    const response = await fetch(`http://127.0.0.1:${port(8000)}/boxed/x`);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('served /boxed/x from a replica');
    const code = await fetch(`${address}/api/dashboard/codes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    });
    const redeemed = await fetch(`${address}/dashboard/?code=${(await code.json()).code}`, { redirect: 'manual' });
    const page = await fetch(`${address}/dashboard/`, { headers: { cookie: redeemed.headers.get('set-cookie')?.split(';')[0] ?? '' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>Flotilla dashboard</title>');
    await client.shutdown();
    await expect.poll(() => containersOf(instance, 'boxed'), { timeout: 30_000 }).toEqual([]);
  });
});
