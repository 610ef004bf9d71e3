import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { shortId } from '../../src/common/ids.js';

/** A runtime as a control plane of its own holds it: the network it needs for its replicas made on demand. */
class NetworkUser extends DockerRuntime {
  use(name: string): Promise<void> {
    return this.ensureNetwork(name);
  }
}

const networksNamed = (name: string): string[] =>
  execFileSync('docker', ['network', 'ls', '--filter', `name=^${name}$`, '--format', '{{.ID}}'], { encoding: 'utf8' })
    .split('\n')
    .filter((id) => id !== '');

describe('the replicas network, when control planes start at once on a fresh engine', () => {
  const name = `flt-race-${shortId(3)}`;
  afterAll(() => {
    for (const id of networksNamed(name)) execFileSync('docker', ['network', 'rm', id]);
  });

  it('ends as one network that every one of them can use', async () => {
    const planes = Array.from({ length: 6 }, () => new NetworkUser('/var/run/docker.sock'));
    await Promise.all(planes.map((plane) => plane.use(name)));
    expect(networksNamed(name)).toHaveLength(1);
    await Promise.all(planes.map((plane) => plane.use(name)));
  });
});
