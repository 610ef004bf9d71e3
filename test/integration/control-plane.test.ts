import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { LABELS } from '../../src/common/labels.js';
import { connectWhenUp, containersOf, startFlotilla, deployEndpoint, freePort, CLI, processSettings, startProcess } from './harness.js';
import { startLoad } from './load.js';

const run = promisify(execFile);

const settings = () => processSettings('cp');

type Settings = Awaited<ReturnType<typeof settings>>;

const cli = (options: Settings, ...args: string[]) =>
  run(process.execPath, [
    CLI,
    ...args,
    '--address',
    `http://127.0.0.1:${options.admin.port}`,
    '--instance',
    options.instance,
    '--state-dir',
    options.stateDir,
  ]);

describe('crash recovery', () => {
  it('adopts running replicas after kill -9, removes strays, and serves again', async () => {
    const options = await settings();
    const first = startProcess(options);
    let second: ChildProcess | undefined;
    try {
      const client = await connectWhenUp(options);
      await deployEndpoint(client, 'survivor', () => `pid ${process.pid}`, { config: { numReplicas: 2 } });
      expect((await fetch(`${client.httpUrl}/survivor`)).status).toBe(200);
      const [crashed] = await client.listReplicas('survivor');
      execFileSync('docker', ['kill', crashed!.containerId]);
      await expect
        .poll(async () => (await client.listReplicas('survivor')).filter((r) => r.state === 'ready' && r.restarts === 1), {
          timeout: 30_000,
        })
        .toHaveLength(1);
      const before = containersOf(options.instance, 'survivor').sort();
      expect(before).toHaveLength(2);

      const load = startLoad(() => fetch(`${client.httpUrl}/survivor`), 4);
      await new Promise((resolve) => setTimeout(resolve, 500));
      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      const servedBeforeKill = (await load.stop()).statuses.get(200) ?? 0;
      expect(servedBeforeKill).toBeGreaterThan(0);
      const stray = execFileSync(
        'docker',
        [
          'run',
          '-d',
          '--label',
          `${LABELS.managed}=true`,
          '--label',
          `${LABELS.instance}=${options.instance}`,
          '--label',
          `${LABELS.backend}=ghost`,
          'flotilla-local/bookworm-minbase:latest',
          'sleep',
          '600',
        ],
        { encoding: 'utf8' },
      ).trim();
      expect(containersOf(options.instance, 'survivor').sort()).toEqual(before);

      second = startProcess(options);
      const again = await connectWhenUp(options);
      expect(Object.keys(await again.listBackends())).toEqual(['survivor']);
      expect(await again.listEndpoints()).toMatchObject({ survivor: { route: '/survivor' } });
      const afterRestart = await startLoad(() => fetch(`${again.httpUrl}/survivor`), 4, 1).stop();
      expect(Object.fromEntries(afterRestart.statuses)).toEqual({ 200: afterRestart.total });
      expect(containersOf(options.instance, 'survivor').sort()).toEqual(before);
      expect((await again.listReplicas('survivor')).map((r) => r.containerId).sort()).toEqual(before);
      const replaced = (await again.listReplicas('survivor')).find((r) => r.restarts === 1);
      expect(replaced?.lastError).toMatch(/exited with code 137/);
      expect(containersOf(options.instance, 'ghost')).not.toContain(stray);
      await again.shutdown();
      await new Promise((resolve) => second!.once('exit', resolve));
      expect(containersOf(options.instance)).toEqual([]);
    } finally {
      first.kill('SIGKILL');
      second?.kill('SIGKILL');
    }
  });
});

describe('one control plane per instance on an engine', () => {
  it('lets exactly one of two starts at once with different state directories win, and tells the other who has it', async () => {
    const first = await settings();
    const second = { ...(await settings()), instance: first.instance };
    const results = await Promise.allSettled([serve.start(first), serve.start(second)]);
    const won = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const lost = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as { code: string; message: string }] : []));
    try {
      expect(won).toHaveLength(1);
      expect(lost).toEqual([
        expect.objectContaining({
          code: 'INSTANCE_RUNNING',
          message: expect.stringMatching(
            new RegExp(`^instance '${first.instance}' is (being started|already run) by process ${process.pid} `),
          ),
        }),
      ]);
    } finally {
      await Promise.all(won.map((client) => client.shutdown()));
    }
    const again = await serve.start(second);
    await again.shutdown();
  });
});

describe('a rollout across a control-plane crash', () => {
  it('completes a rolling update after kill -9 mid-rollout and a restart, serving throughout', async () => {
    const options = await settings();
    const first = startProcess(options);
    let second: ChildProcess | undefined;
    try {
      const client = await connectWhenUp(options);
      const config = { config: { numReplicas: 3 }, replicaOptions: { numCpus: 0.25 } };
      await deployEndpoint(client, 'roller', () => 'v1', config);
      const v1 = (await client.getBackendConfig('roller')).version;
      const rolling = client.updateBackend('roller', () => 'v2', config);
      rolling.catch(() => undefined);
      await expect
        .poll(async () => (await client.listReplicas('roller')).some((r) => r.version !== v1 && r.state === 'ready'), { timeout: 30_000 })
        .toBe(true);
      first.kill('SIGKILL');
      await new Promise((resolve) => first.once('exit', resolve));
      await expect(rolling).rejects.toThrow();
      const saved = JSON.parse(readFileSync(join(options.stateDir, 'state', `${options.instance}.json`), 'utf8'));
      expect(saved.backends[0].rollout).toMatchObject({ state: 'rolling', fromVersion: v1 });
      expect(saved.backends[0].rollout.previous).toMatchObject({ name: 'roller' });

      second = startProcess(options);
      const again = await connectWhenUp(options);
      const load = startLoad(() => fetch(`${again.httpUrl}/roller`), 4);
      await expect
        .poll(async () => (await again.getBackendConfig('roller')).rollout?.state, { timeout: 60_000, interval: 200 })
        .toBe('completed');
      const { statuses, total } = await load.stop();
      expect(Object.fromEntries(statuses)).toEqual({ 200: total });
      const info = await again.getBackendConfig('roller');
      expect(info.version).not.toBe(v1);
      expect((await again.listReplicas('roller')).map((r) => [r.state, r.version])).toEqual(Array(3).fill(['ready', info.version]));
      expect(await (await fetch(`${again.httpUrl}/roller`)).text()).toBe('v2');
      expect(containersOf(options.instance, 'roller')).toHaveLength(3);
      await again.shutdown();
      await new Promise((resolve) => second!.once('exit', resolve));
    } finally {
      first.kill('SIGKILL');
      second?.kill('SIGKILL');
    }
  });
});

describe('the remote client and admin API', () => {
  let local: Client;
  let remote: Client;
  let adminUrl: string;
  const token = 'test-token-1234';

  beforeAll(async () => {
    const options = await settings();
    ({ client: local } = await startFlotilla({ admin: { host: '127.0.0.1', port: options.admin.port, token } }));
    adminUrl = `http://127.0.0.1:${options.admin.port}`;
    remote = await serve.connect({ address: adminUrl, token });
  });
  afterAll(() => local.shutdown());

  it('offers the same interface, shipping functions and classes as source', async () => {
    class Greeter {
      constructor(private readonly greeting: string) {}
      call(request: Request) {
        return `${this.greeting} ${new URL(request.url).pathname}`;
      }
      bytes() {
        return new Uint8Array([7, 8]);
      }
    }
    await deployEndpoint(remote, 'greeter', Greeter, { initArgs: ['hi'] }, { route: '/greet' });
    expect(await (await fetch(`${remote.httpUrl}/greet`)).text()).toBe('hi /greet');
    expect(await remote.getHandle('greeter').remote()).toBe('hi /greet');
    expect(await remote.getHandle('greeter').options({ methodName: 'bytes' }).remote()).toEqual(Buffer.from([7, 8]));
    await deployEndpoint(remote, 'echo', async (request: Request) => request.json(), undefined, { methods: ['POST'] });
    expect(await remote.getHandle('echo').remote({ nested: [1, 'two'] })).toEqual({ nested: [1, 'two'] });
    expect(Object.keys(await remote.listBackends()).sort()).toEqual(['echo', 'greeter']);
    expect(await remote.listEndpoints()).toEqual(await local.listEndpoints());
    expect(await remote.listReplicas('echo')).toHaveLength(1);
  });

  it('carries error codes across', async () => {
    await expect(remote.createBackend('echo', () => 1)).rejects.toMatchObject({ code: 'BACKEND_EXISTS' });
    await expect(remote.deleteBackend('echo')).rejects.toMatchObject({ code: 'BACKEND_IN_USE', message: expect.stringMatching(/'echo'/) });
    await expect(remote.getHandle('missing').remote()).rejects.toMatchObject({ code: 'ENDPOINT_NOT_FOUND' });
    await expect(remote.setTraffic('echo', { echo: 0.5 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('requires the token on every call', async () => {
    await expect(serve.connect({ address: adminUrl })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(serve.connect({ address: adminUrl, token: 'wrong' })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    const response = await fetch(`${adminUrl}/api/backends`, { method: 'POST', body: '{}' });
    expect(response.status).toBe(401);
  });

  it('answers bad input with a 4xx and changes nothing', async () => {
    const before = { backends: await local.listBackends(), endpoints: await local.listEndpoints() };
    const post = (path: string, body: string, method = 'POST') =>
      fetch(`${adminUrl}${path}`, {
        method,
        ...(method === 'GET' ? {} : { body }),
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      });
    const cases: Array<[string, string, string, number, RegExp]> = [
      ['/api/backends', '{"name": "x", ', 'POST', 400, /malformed JSON/],
      ['/api/backends', '[1, 2]', 'POST', 400, /JSON object/],
      [
        '/api/backends',
        JSON.stringify({ name: 'x', definition: { kind: 'import', module: 'a.js', exportName: 'A' }, extra: 1 }),
        'POST',
        400,
        /unknown field extra/,
      ],
      [
        '/api/backends',
        JSON.stringify({ name: 42, definition: { kind: 'import', module: 'a.js', exportName: 'A' } }),
        'POST',
        400,
        /name must be a string/,
      ],
      [
        '/api/backends',
        JSON.stringify({
          name: 'x',
          definition: { kind: 'function', name: 'f', source: 'function f( {', hasReconfigure: false, acceptsBatch: false },
        }),
        'POST',
        400,
        /does not parse/,
      ],
      ['/api/backends', JSON.stringify({ name: 'x' }), 'POST', 400, /missing field definition/],
      ['/api/backends/echo/config', JSON.stringify({ numReplicas: 'many' }), 'PATCH', 400, /numReplicas/],
      ['/api/endpoints/echo/traffic', JSON.stringify({ weights: 'all' }), 'PUT', 400, /traffic must be an object/],
      ['/api/nowhere', '{}', 'POST', 404, /no \/api\/nowhere/],
      ['/api/endpoints/echo/call', '{"input": 5}', 'POST', 400, /input must be/],
      ['/api/backends/echo/logs?tail=lots', '', 'GET', 400, /tail must be/],
      ['/api/backends', 'x'.repeat(17 * 1024 * 1024), 'POST', 413, /limited/],
      ['/api/backends/%E0%A4%A', '', 'GET', 400, /percent-encoding/],
      ['/api/endpoints/%zz/traffic', '{"weights": {}}', 'PUT', 400, /percent-encoding/],
    ];
    for (const [path, body, method, status, message] of cases) {
      const response = await post(path, body, method);
      expect({ path, status: response.status }).toEqual({ path, status });
      expect((await response.json()).error.message).toMatch(message);
    }
    expect(await local.listBackends()).toEqual(before.backends);
    expect(await local.listEndpoints()).toEqual(before.endpoints);
    expect((await fetch(`${remote.httpUrl}/greet`)).status).toBe(200);
  });

  it('refuses to bind the admin API beyond loopback without a token', async () => {
    await expect(startFlotilla({ admin: { host: '0.0.0.0', port: 0, auth: 'none' } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/FLOTILLA_ADMIN_TOKEN/),
    });
  });
});

describe('the flotilla command', () => {
  it('starts detached, reports status and logs, and shuts down', async () => {
    const fresh = await settings();
    const options = { ...fresh, stateDir: join(fresh.stateDir, 'not-yet-made') };
    const started = await run(process.execPath, [CLI, 'start', '--detached', '--options', JSON.stringify(options)]);
    expect(started.stdout).toMatch(/running in the background \(instance [^)]+\); HTTP on http:\/\/127.0.0.1:\d+/);
    const twice = await run(process.execPath, [CLI, 'start', '--options', JSON.stringify(options)]).catch(
      (error: { stderr: string; code: number }) => error,
    );
    expect(twice).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/INSTANCE_RUNNING: instance '.+' is already run by process \d+/),
    });
    const tokenFile = join(options.stateDir, 'admin', `${options.instance}.token`);
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(statSync(join(options.stateDir, 'admin')).mode & 0o777).toBe(0o700);
    for (const dir of ['', 'state']) expect([dir, statSync(join(options.stateDir, dir)).mode & 0o777]).toEqual([dir, 0o700]);
    expect(statSync(join(options.stateDir, `${options.instance}.log`)).mode & 0o777).toBe(0o600);
    await expect(serve.connect({ address: `http://127.0.0.1:${options.admin.port}` })).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      message: expect.stringMatching(/default\.token/),
    });
    const client = await serve.connect({
      address: `http://127.0.0.1:${options.admin.port}`,
      instance: options.instance,
      stateDir: options.stateDir,
    });
    const fromEnv = await run(process.execPath, [CLI, 'status'], {
      env: {
        ...process.env,
        FLOTILLA_INSTANCE: options.instance,
        FLOTILLA_STATE_DIR: options.stateDir,
        FLOTILLA_ADMIN_PORT: String(options.admin.port),
      },
    });
    expect(fromEnv.stdout).toMatch(/^HTTP: http:\/\/127\.0\.0\.1:\d+/);
    await client.createBackend('talker', (request: Request) => {
      console.error(`served ${new URL(request.url).pathname}`);
      return 'ok';
    });
    await client.createEndpoint('talker', { backend: 'talker', route: '/talk' });
    await fetch(`${client.httpUrl}/talk/to-me`);

    const status = await cli(options, 'status');
    expect(status.stdout).toMatch(/talker\s+\/talk\s+GET\s+talker=1/);
    expect(status.stdout).toMatch(/talker\s+1\/1 ready/);
    expect(status.stdout).toMatch(/ready\s+[0-9a-f]{12}\s+restarts=0/);

    const logs = await cli(options, 'logs', 'talker');
    expect(logs.stdout).toMatch(/\[[0-9a-f]{8}\] served \/talk\/to-me/);

    const missing = await cli(options, 'logs', 'nobody').catch((error: { stderr: string; code: number }) => error);
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringMatching(/BACKEND_NOT_FOUND: backend 'nobody' does not exist/) });

    const appFile = join(import.meta.dirname, '..', 'fixtures', 'app', 'app.yaml');
    const deployed = await cli(options, 'deploy', appFile);
    expect(deployed.stdout).toMatch(/creating backend echo/);
    expect(deployed.stdout).toMatch(/deployed: \d+ changes/);
    expect((await cli(options, 'deploy', appFile)).stdout).toMatch(/nothing to change/);
    const broken = join(mkdtempSync(join(tmpdir(), 'flt-app-')), 'app.yaml');
    writeFileSync(broken, 'backends:\n  echo:\n    import: handlers/echo.js:Echo\n    config: { numReplicas: -1 }\nendpoints: {}\n');
    const refused = await cli(options, 'deploy', broken).catch((error: { stderr: string; code: number }) => error);
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringMatching(/app\.yaml:4: backends\.echo\.config\.numReplicas/) });

    const down = await cli(options, 'shutdown');
    expect(down.stdout).toMatch(/shutting down/);
    await expect.poll(() => containersOf(options.instance), { timeout: 30_000 }).toEqual([]);
    await expect
      .poll(async () => (await fetch(`http://127.0.0.1:${options.admin.port}/api/health`).catch(() => undefined))?.status)
      .toBeUndefined();
    expect(readdirSync(join(options.stateDir, 'admin'))).toEqual([]);
  });

  it('serve.start({ detached: true }) keeps Flotilla running after the caller exits, its token off every command line', async () => {
    const token = `explicit-${shortId(8)}`;
    const options = { ...(await settings()), admin: { host: '127.0.0.1', port: await freePort(), token } };
    const script = `
      const { serve } = await import(${JSON.stringify(join(import.meta.dirname, '..', '..', 'dist', 'src', 'index.js'))});
      const client = await serve.start({ ...${JSON.stringify(options)}, detached: true });
      await client.createBackend('kept', () => 'still serving');
      await client.createEndpoint('kept', { backend: 'kept', route: '/kept' });
    `;
    await run(process.execPath, ['--input-type=module', '-e', script]);
    const detached = readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .map((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          return '';
        }
      })
      .filter((cmdline) => cmdline.includes(`${options.instance}.`) && cmdline.includes('--options-file'));
    expect(detached).toHaveLength(1);
    expect(detached[0]).not.toContain(token);
    expect(readdirSync(join(options.stateDir, 'admin'))).toEqual([]);
    const client = await serve.connect({ address: `http://127.0.0.1:${options.admin.port}`, token });
    expect(await (await fetch(`${client.httpUrl}/kept`)).text()).toBe('still serving');
    await client.shutdown();
    await expect.poll(() => containersOf(options.instance), { timeout: 30_000 }).toEqual([]);
  });

  it('a detached start never takes another control plane on its admin port for its own', async () => {
    const options = await settings();
    const other = await startFlotilla({ instance: options.instance, admin: { host: '127.0.0.1', port: options.admin.port, auth: 'none' } });
    try {
      await expect(serve.start({ ...options, admin: { ...options.admin, auth: 'none' }, detached: true })).rejects.toMatchObject({
        code: 'ADMIN_UNREACHABLE',
        // The instance's marker on the engine names the other control plane, so the child stops before it even listens.
        message: expect.stringMatching(
          /exited with code 1: flotilla: INSTANCE_RUNNING: instance '.+' is already run by process \d+ on this Docker engine/,
        ),
      });
      expect(readFileSync(join(options.stateDir, `${options.instance}.log`), 'utf8')).toMatch(
        new RegExp(`admin API http://127\\.0\\.0\\.1:${options.admin.port}`),
      );
      expect(await other.client.listBackends()).toEqual({});
    } finally {
      await other.client.shutdown();
    }
  });
});
