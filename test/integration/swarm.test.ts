import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { SwarmRuntime } from '../../src/runtime/docker/swarm-runtime.js';
import type { ReplicaSpec } from '../../src/runtime/container-runtime.js';

const ROOT = join(import.meta.dirname, '..', '..');

/**
 * The stack file as the bed runs it: this machine's kernel has no ESP (CONFIG_INET_ESP), so an encrypted overlay would
 * carry nothing between the bed's nodes; the bed's overlay is plain, and the test of encryption creates one of its own.
 */
function bedStack(): string {
  const stack = readFileSync(join(ROOT, 'examples', 'swarm', 'stack.yml'), 'utf8');
  const plain = stack
    .replace(/\n\s+driver_opts:\n\s+encrypted: 'true'/, '')
    .replace("FLOTILLA_SWARM_ENCRYPTED: 'true'", "FLOTILLA_SWARM_ENCRYPTED: 'false'");
  if (plain.includes('encrypted: ') || !plain.includes("FLOTILLA_SWARM_ENCRYPTED: 'false'"))
    throw new Error('the stack file changed: update bedStack');
  return plain;
}
const run = (command: string, args: string[], input?: Buffer | string) =>
  execFileSync(command, args, { encoding: 'utf8', input, maxBuffer: 64 * 1024 * 1024, stdio: ['pipe', 'pipe', 'pipe'] }).trim();

/**
 * A real three-node Swarm on this machine (scripts/swarm-testbed.sh): the control plane runs from examples/swarm/stack.yml
 * on the manager, replicas run as Swarm services on every node, and the test reaches the front door and the admin API
 * on the manager container's address.
 */
describe('Flotilla on a Docker Swarm of three nodes', () => {
  const bed = `flt-bed-${shortId(3)}`;
  const token = `token-${shortId(8)}`;
  let manager = '';
  let socket = '';
  let client: Client;
  const inManager = (...args: string[]) => run('docker', ['exec', `${bed}-manager`, 'docker', ...args]);
  const front = (path: string, init?: RequestInit) =>
    fetch(`http://${manager}:8000${path}`, { ...init, signal: AbortSignal.timeout(10_000) });

  /** The services of a backend: node and spec, as Swarm reports them. */
  const servicesOf = (backend: string) => {
    const ids = inManager('service', 'ls', '-q', '--filter', `label=dev.flotilla.backend=${backend}`).split('\n').filter(Boolean);
    return ids.flatMap((id) => {
      try {
        const spec = JSON.parse(inManager('service', 'inspect', id))[0].Spec;
        const tasks = inManager('service', 'ps', id, '--filter', 'desired-state=running', '--format', '{{.Node}}');
        return [{ id, node: tasks.split('\n')[0] ?? '', spec }];
      } catch {
        return []; // removed by Flotilla between the listing and the inspection
      }
    });
  };

  const connect = async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await serve.connect({ address: `http://${manager}:8001`, token });
      } catch (error) {
        if (attempt > 200) throw error;
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    }
  };

  beforeAll(async () => {
    const settings = Object.fromEntries(
      run('bash', [join(ROOT, 'scripts', 'swarm-testbed.sh'), 'up', bed])
        .split('\n')
        .map((line) => line.split('=') as [string, string]),
    );
    manager = settings.FLOTILLA_BED_MANAGER ?? '';
    socket = settings.FLOTILLA_BED_SOCKET ?? '';
    const image = run('bash', [join(ROOT, 'scripts', 'flotilla-image.sh'), 'flotilla:swarm-test']);
    execFileSync('sh', ['-c', `docker save ${image} | docker exec -i ${bed}-manager docker load`], { stdio: 'ignore' });
    const base = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';
    run(
      'docker',
      [
        'exec',
        '-i',
        ...['-e', `FLOTILLA_IMAGE=${image}`, '-e', `FLOTILLA_SWARM_REGISTRY=${settings.FLOTILLA_BED_REGISTRY}`],
        ...['-e', `FLOTILLA_ADMIN_TOKEN=${token}`, '-e', `FLOTILLA_BASE_IMAGE=${base}`],
        ...['-e', `FLOTILLA_HTTP_PUBLIC_URL=http://${manager}:8000`],
        `${bed}-manager`,
        ...['sh', '-c', 'cat > /tmp/stack.yml && docker stack deploy -c /tmp/stack.yml flotilla'],
      ],
      bedStack(),
    );
    client = await connect();
  });

  afterAll(() => {
    // What the control plane and the manager's engine said, for a failure in CI (their logs go with the bed).
    const said = (command: string) => {
      try {
        return run('sh', ['-c', `${command} 2>&1`]);
      } catch (error) {
        return String(error);
      }
    };
    console.log(said(`docker exec ${bed}-manager docker service logs --tail 40 flotilla_control-plane`));
    console.log(said(`docker logs --tail 40 ${bed}-manager`));
    run('bash', [join(ROOT, 'scripts', 'swarm-testbed.sh'), 'down', bed]);
  });

  it('refuses to start on an engine that is not a Swarm manager, saying what to do', async () => {
    await expect(
      serve.start({ runtime: 'swarm', swarmRegistry: 'registry:5000', instance: `noswarm-${shortId(3)}` }),
    ).rejects.toMatchObject({
      code: 'ENGINE_UNAVAILABLE',
      message: expect.stringContaining('runtime swarm needs a Swarm manager, but this Docker engine is not in a Swarm'),
    });
  });

  it('spreads replicas by their CPUs over the nodes, runs more than one node holds, and refuses one that fits on none', async () => {
    await client.createBackend('spread', () => `served by ${process.env.HOSTNAME}`, {
      config: { numReplicas: 3, gracefulShutdownTimeoutS: 7 },
      replicaOptions: { numCpus: 1.5 },
    });
    await client.createEndpoint('spread', { backend: 'spread', route: '/spread' });
    const services = servicesOf('spread');
    expect(services.map((s) => s.node).sort()).toEqual(['manager', 'worker1', 'worker2']);
    for (const { spec } of services) {
      expect(spec.TaskTemplate.ContainerSpec.Image).toMatch(/^registry:5000\/flotilla\/backend@sha256:[0-9a-f]{64}$/);
      expect(spec.TaskTemplate.Resources.Reservations.NanoCPUs).toBe(1.5e9);
      expect(spec.EndpointSpec.Mode).toBe('dnsrr');
      expect(spec.TaskTemplate.ContainerSpec.StopGracePeriod).toBe(7e9);
      expect(spec.TaskTemplate.ContainerSpec.Configs ?? []).toEqual([]);
      expect(spec.TaskTemplate.ContainerSpec.Secrets).toEqual([
        expect.objectContaining({ File: expect.objectContaining({ Name: '/run/flotilla/entry.json', Mode: 0o400 }) }),
      ]);
    }
    expect(inManager('config', 'ls', '-q')).toBe('');
    expect(inManager('secret', 'ls', '--format', '{{.Name}}').split('\n').sort()).toEqual(
      services.map((s) => `${s.spec.Name}-entry`).sort(),
    );
    const [network] = JSON.parse(inManager('network', 'inspect', 'flotilla-replicas'));
    expect(network).toMatchObject({ Driver: 'overlay', Attachable: false });
    const servedBy = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const response = await front('/spread');
      expect(response.status).toBe(200);
      servedBy.add(await response.text());
    }
    expect(servedBy.size).toBe(3);
    await expect(client.createBackend('huge', () => 'never', { replicaOptions: { numCpus: 3 } })).rejects.toMatchObject({
      code: 'INSUFFICIENT_RESOURCES',
      message: expect.stringMatching(/largest node, (manager|worker1|worker2) \(2 CPUs/),
    });
    await expect(client.updateBackendConfig('spread', { numReplicas: 4 })).rejects.toMatchObject({ code: 'INSUFFICIENT_RESOURCES' });
    await client.deleteEndpoint('spread');
    await client.deleteBackend('spread');
    expect(servicesOf('spread')).toEqual([]);
  });

  it('gives GPUs from each node’s inventory of generic resources, packing fractions per node', async () => {
    await client.createBackend('whole', () => `${process.env.NVIDIA_VISIBLE_DEVICES}`, { replicaOptions: { numCpus: 0.1, numGpus: 2 } });
    const [whole] = servicesOf('whole');
    expect(whole?.node).toBe('worker2');
    expect(whole?.spec.TaskTemplate.ContainerSpec.Env).toContain('NVIDIA_VISIBLE_DEVICES=w2-gpu0,w2-gpu1');
    await client.createBackend('half', () => 'half', { config: { numReplicas: 2 }, replicaOptions: { numCpus: 0.1, numGpus: 0.5 } });
    const halves = servicesOf('half');
    expect(halves.map((s) => s.node)).toEqual(['worker1', 'worker1']);
    for (const { spec } of halves) expect(spec.TaskTemplate.ContainerSpec.Env).toContain('NVIDIA_VISIBLE_DEVICES=w1-gpu0');
    await expect(client.createBackend('more', () => 'never', { replicaOptions: { numCpus: 0.1, numGpus: 1 } })).rejects.toMatchObject({
      code: 'INSUFFICIENT_RESOURCES',
    });
    await client.deleteBackend('whole');
    await client.deleteBackend('half');
  });

  it('places a backend only on the nodes its placement constraints allow', async () => {
    await client.createBackend('pinned', () => 'pinned', {
      config: { numReplicas: 2 },
      replicaOptions: { numCpus: 0.5, placementConstraints: ['node.role==worker', 'node.hostname!=worker1'] },
    });
    expect(servicesOf('pinned').map((s) => s.node)).toEqual(['worker2', 'worker2']);
    await expect(
      client.createBackend('nowhere', () => 'never', { replicaOptions: { placementConstraints: ['node.labels.zone==mars'] } }),
    ).rejects.toMatchObject({ code: 'INSUFFICIENT_RESOURCES', message: expect.stringContaining('node.labels.zone==mars') });
    await client.deleteBackend('pinned');
  });

  it('creates its overlay encrypted and not attachable, and refuses one that is not encrypted', async () => {
    const network = `flt-enc-${shortId(3)}`;
    const spec: ReplicaSpec = {
      name: `flt-enc-probe-${shortId(3)}`,
      image: 'flotilla-local/bookworm-minbase:latest',
      labels: { 'dev.flotilla.managed': 'true' },
      env: {},
      hostDir: undefined,
      transport: { kind: 'tcp', hostAddress: '0.0.0.0', containerPort: 8000 },
      stopGraceS: 0,
      limits: { cpus: 0.1, cpuLimit: null, memoryMb: null, gpuIds: [] },
      confinement: { user: '1000:1000', capAdd: [], readOnlyRootfs: true, network: { kind: 'isolated', name: network }, pidsLimit: 64 },
    };
    const runtime = (name: string) => new SwarmRuntime(socket, { registry: 'registry:5000', network: name, encrypted: true });
    // The probe's image serves nothing: only the network its start makes is looked at, then the probe goes.
    const probe = runtime(network);
    await probe.startReplica(spec).then(
      (status) => probe.stopReplica(status.containerId, 0),
      () => undefined,
    );
    const [made] = JSON.parse(inManager('network', 'inspect', network));
    expect(made).toMatchObject({ Driver: 'overlay', Attachable: false, Options: expect.objectContaining({ encrypted: 'true' }) });
    await expect
      .poll(
        () => {
          try {
            return inManager('network', 'rm', network);
          } catch {
            return 'in use';
          }
        },
        { timeout: 30_000 },
      )
      .toBe(network);
    await expect(runtime('flotilla-replicas').startReplica(spec)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringContaining("the Swarm overlay network 'flotilla-replicas' is not encrypted"),
    });
  });

  it('pushes an image again to a registry that lost it, so that a replica on a node without the image still starts', async () => {
    const served = () => 'served again';
    await client.createBackend('again', served, { replicaOptions: { numCpus: 0.1, placementConstraints: ['node.role==manager'] } });
    const image = servicesOf('again')[0]?.spec.TaskTemplate.ContainerSpec.Image as string;
    await client.deleteBackend('again');
    run('docker', ['exec', `${bed}-registry`, 'rm', '-rf', '/var/lib/docker-registry/docker']);
    run('docker', ['restart', `${bed}-registry`]);
    run('docker', ['exec', `${bed}-worker1`, 'sh', '-c', 'docker container prune -f && docker image prune -a -f']);
    expect(run('docker', ['exec', `${bed}-worker1`, 'docker', 'image', 'ls', '-q'])).toBe('');
    // The same backend again, on a node that must pull its image: the same image by the same digest.
    await client.createBackend('again', served, {
      replicaOptions: { numCpus: 0.1, placementConstraints: ['node.hostname==worker1'] },
    });
    expect(servicesOf('again').map((s) => [s.node, s.spec.TaskTemplate.ContainerSpec.Image])).toEqual([['worker1', image]]);
    await client.createEndpoint('again', { backend: 'again', route: '/again' });
    expect(await (await front('/again')).text()).toContain('served again');
    await client.deleteEndpoint('again');
    await client.deleteBackend('again');
  });

  it('adopts the replicas on every node when the control plane is killed (-9) and restarted', async () => {
    await client.createBackend('kept', () => `kept by ${process.env.HOSTNAME}`, {
      config: { numReplicas: 3 },
      replicaOptions: { numCpus: 1 },
    });
    await client.createEndpoint('kept', { backend: 'kept', route: '/kept', methods: ['GET', 'POST'] });
    const before = servicesOf('kept');
    expect(new Set(before.map((s) => s.node)).size).toBe(3);
    const plane = inManager('ps', '-q', '--filter', 'label=com.docker.swarm.service.name=flotilla_control-plane');
    const killedAt = Date.now();
    inManager('kill', '-s', 'KILL', plane);
    await expect
      .poll(() => inManager('ps', '-q', '--filter', 'label=com.docker.swarm.service.name=flotilla_control-plane'), { timeout: 60_000 })
      .not.toMatch(new RegExp(`^(${plane})?$`));
    client = await connect();
    await expect.poll(async () => (await front('/kept')).status, { timeout: 30_000 }).toBe(200);
    console.log(`control plane kill -9: serving again after ${Date.now() - killedAt} ms`);
    const after = servicesOf('kept');
    expect(after.map((s) => s.id).sort()).toEqual(before.map((s) => s.id).sort());
    expect((await client.listReplicas('kept')).length).toBe(3);
  });

  it('replaces a replica whose container dies on its node, as Swarm reports its task', async () => {
    const [victim] = await client.listReplicas('kept').then((replicas) => replicas.filter((r) => r.placement.node === 'worker2'));
    expect(victim).toBeDefined();
    const container = run('docker', [
      'exec',
      `${bed}-worker2`,
      'docker',
      'ps',
      '-q',
      '--filter',
      `label=dev.flotilla.replica=${victim?.id}`,
    ]);
    run('docker', ['exec', `${bed}-worker2`, 'docker', 'kill', container]);
    await expect
      .poll(async () => (await client.listReplicas('kept')).filter((r) => r.state === 'ready' && r.id !== victim?.id).length, {
        timeout: 60_000,
      })
      .toBe(3);
    const replacement = (await client.listReplicas('kept')).find((r) => r.restarts === 1);
    expect(replacement?.lastError).toMatch(/exited with code 137/);
    expect(replacement?.placement.node).not.toBe('worker2');
  });

  it('replaces the replicas of a worker that is killed under load on the nodes left, within a measured bound', async () => {
    const victim = servicesOf('kept').find((s) => s.node === 'worker1');
    expect(victim).toBeDefined();
    const stop = { at: 0 };
    const outcomes: Array<{ at: number; method: string; ok: boolean; status: number | string }> = [];
    const load = async (method: 'GET' | 'POST') => {
      while (stop.at === 0 || Date.now() < stop.at) {
        const at = Date.now();
        const status = await front('/kept', { method, body: method === 'POST' ? 'x' : undefined })
          .then(async (r) => `${r.status} ${(await r.text()).slice(0, 80)}`)
          .catch((error: Error) => error.message);
        outcomes.push({ at, method, ok: status.startsWith('200'), status });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    const loops = [load('GET'), load('GET'), load('POST')];
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const killedAt = Date.now();
    run('docker', ['kill', `${bed}-worker1`]);
    await expect
      .poll(
        async () => {
          const ready = (await client.listReplicas('kept')).filter((r) => r.state === 'ready');
          return ready.length === 3 && ready.every((r) => r.placement.node !== 'worker1');
        },
        { timeout: 90_000, interval: 250 },
      )
      .toBe(true);
    const replacedAt = Date.now();
    stop.at = Date.now() + 3000;
    await Promise.all(loops);
    const failed = outcomes.filter((o) => !o.ok && o.at >= killedAt);
    const lastFailure = Math.max(killedAt, ...failed.map((o) => o.at));
    const figures = {
      requests: outcomes.filter((o) => o.at >= killedAt).length,
      failedGet: failed.filter((o) => o.method === 'GET').length,
      failedPost: failed.filter((o) => o.method === 'POST').length,
      lastFailureAfterMs: lastFailure - killedAt,
      replacedAfterMs: replacedAt - killedAt,
    };
    console.log(`worker kill: ${JSON.stringify(figures)}`);
    console.log(failed.map((o) => `${o.at - killedAt} ${o.method} ${o.status}`).join('\n'));
    expect(outcomes.filter((o) => o.at > replacedAt).every((o) => o.ok)).toBe(true);
    await expect.poll(() => servicesOf('kept').length, { timeout: 60_000 }).toBe(3);
  });
});
