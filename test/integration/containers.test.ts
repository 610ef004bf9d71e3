import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlane } from '../../src/control-plane.js';
import type { Client } from '../../src/index.js';
import { containersOf, FIXTURES, inspect, startFlotilla, testSettings, deployEndpoint } from './harness.js';

const BIG = 'x'.repeat(200 * 1024);
const HTTP_IMAGE = 'flotilla-test/http-server:1';

class Big {
  private config: { blob: string; tag: string } = { blob: '', tag: '' };
  constructor(private readonly arg: string) {}
  reconfigure(config: { blob: string; tag: string }) {
    this.config = config;
  }
  call() {
    return { arg: this.arg.length, blob: this.config.blob.length, tag: this.config.tag };
  }
}

function spawnsOrphan() {
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  spawnSync('sh', ['-c', 'sleep 0.2 & exit 0']);
  return 'spawned';
}

function writes() {
  const { writeFileSync } = process.getBuiltinModule('node:fs');
  const attempt = (path: string) => {
    try {
      writeFileSync(path, 'x');
      return 'ok';
    } catch (error) {
      return (error as { code?: string }).code ?? 'failed';
    }
  };
  return { tmp: attempt('/tmp/probe'), rootfs: attempt('/var/tmp/probe') };
}

function dockerExec(containerId: string, script: string): string {
  return execFileSync('docker', ['exec', containerId, 'sh', '-c', script], { encoding: 'utf8' });
}

/** A raw request to a replica, past the front door: a unix socket path or a host:port. */
function straight(
  target: { socketPath: string } | { host: string; port: number },
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, method, path, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function hostDirOf(containerId: string): string {
  const mounts = inspect(containerId).Mounts as Array<{ Source: string; Destination: string }>;
  const mount = mounts.find((m) => m.Destination === '/run/flotilla');
  if (mount === undefined) throw new Error(`container ${containerId} has no /run/flotilla mount`);
  return mount.Source;
}

function secretIn(hostDir: string): string {
  return (JSON.parse(readFileSync(join(hostDir, 'entry.json'), 'utf8')) as { controlSecret: string }).controlSecret;
}

describe('replica containers (unix transport)', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
    const base = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';
    execFileSync('docker', ['build', '-q', '-t', HTTP_IMAGE, '--build-arg', `BASE=${base}`, join(FIXTURES, 'http-server')]);
  });
  afterAll(() => client.shutdown());

  it('are confined: no capabilities, an init, a pids limit, a read-only root, an isolated network, no entry in Env', async () => {
    await deployEndpoint(client, 'big', Big, { initArgs: [BIG], config: { userConfig: { blob: BIG, tag: 'first' } } });
    expect(await (await fetch(`${client.httpUrl}/big`)).json()).toEqual({ arg: BIG.length, blob: BIG.length, tag: 'first' });

    const [id] = containersOf(instance, 'big');
    const info = inspect(id!);
    expect(info.HostConfig).toMatchObject({
      CapDrop: ['ALL'],
      PidsLimit: 1024,
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': expect.stringContaining('size=256m') },
      LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
      Init: true,
      NetworkMode: 'flotilla-replicas',
      SecurityOpt: ['no-new-privileges'],
    });
    expect(info.Config.User).toBe('1000:1000');
    const env = (info.Config.Env as string[]).join('\n');
    expect(env).not.toContain('xxxxxxxx');
    expect(env).not.toMatch(/FLOTILLA_ENTRY=|controlSecret/);
    const network = JSON.parse(execFileSync('docker', ['network', 'inspect', 'flotilla-replicas'], { encoding: 'utf8' }))[0];
    expect(network.Options['com.docker.network.bridge.enable_icc']).toBe('false');

    const dir = statSync(hostDirOf(id!));
    expect({ uid: dir.uid, gid: dir.gid, mode: dir.mode & 0o777 }).toEqual({ uid: 1000, gid: 1000, mode: 0o700 });
    expect(statSync(join(hostDirOf(id!), 'entry.json')).mode & 0o777).toBe(0o600);
  });

  it('start with more than 128 KiB of initArgs and userConfig, also after a config change and a scale-up', async () => {
    await client.updateBackendConfig('big', { userConfig: { blob: BIG + BIG, tag: 'second' } });
    await client.updateBackendConfig('big', { numReplicas: 2 });
    const answers = await Promise.all(Array.from({ length: 10 }, async () => (await fetch(`${client.httpUrl}/big`)).json()));
    expect(new Set(answers.map((a) => JSON.stringify(a)))).toEqual(
      new Set([JSON.stringify({ arg: BIG.length, blob: 2 * BIG.length, tag: 'second' })]),
    );
  });

  it('refuse a config call without the control secret, and apply one with it', async () => {
    const [id] = containersOf(instance, 'big');
    const hostDir = hostDirOf(id!);
    const socket = { socketPath: join(hostDir, 'replica.sock') };
    const body = JSON.stringify({ userConfig: { blob: '', tag: 'intruder' } });
    expect((await straight(socket, 'PUT', '/-/flotilla/config', {}, body)).status).toBe(403);
    expect((await straight(socket, 'PUT', '/-/flotilla/config', { 'x-flotilla-control-secret': 'guess' }, body)).status).toBe(403);
    expect((await straight(socket, 'GET', '/-/flotilla/health')).status).toBe(200);
    const answers = await Promise.all(Array.from({ length: 10 }, async () => (await fetch(`${client.httpUrl}/big`)).json()));
    expect(answers.every((a) => (a as { tag: string }).tag === 'second')).toBe(true);

    const applied = await straight(socket, 'PUT', '/-/flotilla/config', { 'x-flotilla-control-secret': secretIn(hostDir) }, body);
    expect(applied.status).toBe(200);
    expect(await straight(socket, 'GET', '/')).toMatchObject({ status: 200, text: expect.stringContaining('intruder') });
  });

  it('run the Python runtime with the same entry file and control secret', async () => {
    const runtimeEnv = { runtime: 'python' as const, context: join(FIXTURES, 'env-python') };
    await client.createBackend('py', 'model.py:Predictor', {
      initArgs: [BIG.length],
      config: { userConfig: { weights: [1, 0, 0] } },
      replicaOptions: { runtimeEnv },
    });
    const [id] = containersOf(instance, 'py');
    expect(inspect(id!).HostConfig).toMatchObject({ CapDrop: ['ALL'], ReadonlyRootfs: true, Init: true });
    const hostDir = hostDirOf(id!);
    const socket = { socketPath: join(hostDir, 'replica.sock') };
    const predict = async () =>
      JSON.parse((await straight(socket, 'POST', '/', {}, JSON.stringify({ features: [1, 1, 1] }))).text) as { score: number };
    expect((await predict()).score).toBe(BIG.length + 1);
    const body = JSON.stringify({ userConfig: { weights: [0, 0, 0] } });
    expect((await straight(socket, 'PUT', '/-/flotilla/config', { 'x-flotilla-control-secret': 'guess' }, body)).status).toBe(403);
    expect((await predict()).score).toBe(BIG.length + 1);
    const secret = { 'x-flotilla-control-secret': secretIn(hostDir) };
    expect((await straight(socket, 'PUT', '/-/flotilla/config', secret, body)).status).toBe(200);
    expect((await predict()).score).toBe(BIG.length);
  });

  it('run under an init that reaps orphaned children and passes SIGTERM on to the drain', async () => {
    await deployEndpoint(client, 'spawner', spawnsOrphan, undefined, { route: '/spawn' });
    for (let i = 0; i < 3; i++) expect(await (await fetch(`${client.httpUrl}/spawn`)).text()).toBe('spawned');
    const [id] = containersOf(instance, 'spawner');
    expect(dockerExec(id!, 'tr "\\0" " " < /proc/1/cmdline')).toMatch(/docker-init/);
    await expect
      .poll(
        () =>
          dockerExec(id!, 'cat /proc/[0-9]*/stat 2>/dev/null')
            .split('\n')
            .filter((line) => / Z /.test(line)),
        {
          timeout: 5000,
        },
      )
      .toEqual([]);

    // Exit code 0 (not 143, nor 137 after the grace period): SIGTERM reached the runtime's drain through the init.
    const exitCode = promisify(execFile)('docker', ['wait', id!]);
    const stopping = Date.now();
    execFileSync('docker', ['stop', '-t', '20', id!]);
    expect(Date.now() - stopping).toBeLessThan(10_000);
    expect((await exitCode).stdout.trim()).toBe('0');
  });

  it('write only to /tmp unless the backend opts out of the read-only root filesystem', async () => {
    await client.createBackend('locked', writes);
    await client.createBackend('writable', writes, { replicaOptions: { readOnlyRootfs: false } });
    await client.createEndpoint('locked', { backend: 'locked', route: '/locked' });
    await client.createEndpoint('writable', { backend: 'writable', route: '/writable' });
    expect(await (await fetch(`${client.httpUrl}/locked`)).json()).toEqual({ tmp: 'ok', rootfs: 'EROFS' });
    expect(await (await fetch(`${client.httpUrl}/writable`)).json()).toEqual({ tmp: 'ok', rootfs: 'ok' });
    const [id] = containersOf(instance, 'writable');
    expect(inspect(id!).HostConfig.ReadonlyRootfs).toBe(false);
    expect((await client.getBackendConfig('writable')).resources.readOnlyRootfs).toBe(false);
  });

  it('may have no network at all', async () => {
    await deployEndpoint(client, 'offline', () => 'offline', { replicaOptions: { network: 'none' } });
    expect(await (await fetch(`${client.httpUrl}/offline`)).text()).toBe('offline');
    const [id] = containersOf(instance, 'offline');
    expect(inspect(id!).HostConfig.NetworkMode).toBe('none');
    expect(dockerExec(id!, 'ls /sys/class/net').split(/\s+/).filter(Boolean)).toEqual(['lo']);
    await expect(client.createBackend('bad', () => 'x', { replicaOptions: { network: 'host' as 'none' } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/replicaOptions\.network: must be 'isolated' or 'none'/),
    });
  });

  it('run plain HTTP containers as replicaUser unless the backend keeps the image user', async () => {
    const web = { runtimeEnv: { image: HTTP_IMAGE, port: 8080, healthPath: '/healthz' } };
    await client.createBackend('web', 'web', { replicaOptions: web });
    await client.createBackend('web-root', 'web', { replicaOptions: { ...web, runAsImageUser: true } });
    await client.createEndpoint('web', { backend: 'web', route: '/web' });
    expect((await fetch(`${client.httpUrl}/web`)).status).toBe(200);
    const [id] = containersOf(instance, 'web');
    expect(inspect(id!).Config.User).toBe('1000:1000');
    expect(inspect(id!).HostConfig).toMatchObject({ CapDrop: ['ALL'], ReadonlyRootfs: true, Init: true });
    expect(dockerExec(id!, 'id -u').trim()).toBe('1000');
    const [rootId] = containersOf(instance, 'web-root');
    expect(dockerExec(rootId!, 'id -u').trim()).toBe('0');
    expect(inspect(rootId!).HostConfig).toMatchObject({ CapDrop: ['ALL'], CapAdd: ['CHOWN', 'SETUID', 'SETGID'] });
    expect(dockerExec(rootId!, 'setpriv --reuid=65534 --regid=65534 --clear-groups id -u').trim()).toBe('65534');
    await expect(client.createBackend('nope', 'web', { replicaOptions: { ...web, network: 'none' } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});

describe('replica containers (tcp transport)', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla({ transport: 'tcp' }));
  });
  afterAll(() => client.shutdown());

  it('read the entry from a mounted directory and refuse config calls without the secret', async () => {
    await deployEndpoint(client, 'big', Big, { initArgs: [BIG], config: { userConfig: { blob: BIG, tag: 'tcp' } } });
    expect(await (await fetch(`${client.httpUrl}/big`)).json()).toEqual({ arg: BIG.length, blob: BIG.length, tag: 'tcp' });
    const [id] = containersOf(instance, 'big');
    const settings = inspect(id!).NetworkSettings as { Ports: Record<string, Array<{ HostIp: string; HostPort: string }>> };
    const [binding] = Object.values(settings.Ports)[0]!;
    expect(binding!.HostIp).toBe('127.0.0.1');
    const target = { host: '127.0.0.1', port: Number(binding!.HostPort) };
    const body = JSON.stringify({ userConfig: { blob: '', tag: 'changed' } });
    expect((await straight(target, 'PUT', '/-/flotilla/config', {}, body)).status).toBe(403);
    const secret = secretIn(hostDirOf(id!));
    expect((await straight(target, 'PUT', '/-/flotilla/config', { 'x-flotilla-control-secret': secret }, body)).status).toBe(200);
    expect(await (await fetch(`${client.httpUrl}/big`)).json()).toMatchObject({ tag: 'changed' });
    expect(dockerExec(id!, '(head -c 1048576 /dev/zero > /run/flotilla/fill) 2>&1; echo "exit $?"')).toMatch(
      /Read-only file system\s+exit [1-9]/,
    );
    // Besides the entry, only the control plane's handle socket (handle.sock) lives there: the replica wrote nothing.
    expect(readdirSync(hostDirOf(id!)).filter((name) => name !== 'handle.sock')).toEqual(['entry.json']);
  });

  it('cannot be reached from another container on their network', async () => {
    const [id] = containersOf(instance, 'big');
    const networks = (inspect(id!).NetworkSettings as { Networks: Record<string, { IPAddress: string }> }).Networks;
    const address = networks['flotilla-replicas']!.IPAddress;
    const probe = `const s = require('net').connect(8000, '${address}'); s.setTimeout(2000);
      s.on('connect', () => { console.log('connected'); process.exit(0); });
      s.on('timeout', () => { console.log('timeout'); process.exit(0); });
      s.on('error', (e) => { console.log(e.code); process.exit(0); });`;
    const image = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';
    const run = (network: string) =>
      execFileSync('docker', ['run', '--rm', '--network', network, image, 'node', '-e', probe], { encoding: 'utf8' }).trim();
    expect(run('flotilla-replicas')).toBe('timeout');
    expect(run('bridge')).toBe('timeout');
    expect((await fetch(`http://${address}:8000/-/flotilla/health`)).status).toBe(200);
  });

  it('refuse a backend that asks for no network', async () => {
    await expect(client.createBackend('offline', () => 'x', { replicaOptions: { network: 'none' } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/needs the unix transport/),
    });
  });
});

describe('control secrets across a control-plane restart', () => {
  it('are read back from the entry files of adopted replicas', async () => {
    const settings = testSettings();
    const first = await ControlPlane.start(settings);
    await first.client.createBackend('big', Big, { initArgs: [BIG], config: { userConfig: { blob: '', tag: 'before' } } });
    const [before] = await first.client.listReplicas('big');
    await first.close();

    const second = await ControlPlane.start(settings);
    try {
      await second.client.createEndpoint('big', { backend: 'big', route: '/big' });
      await second.client.updateBackendConfig('big', { userConfig: { blob: '', tag: 'after' } });
      expect(await (await fetch(`${second.client.httpUrl}/big`)).json()).toMatchObject({ tag: 'after' });
      expect((await second.client.listReplicas('big')).map((r) => r.containerId)).toEqual([before!.containerId]);
    } finally {
      await second.shutdown();
    }
    expect(containersOf(settings.instance)).toEqual([]);
  });
});
