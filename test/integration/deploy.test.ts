import { execFile, execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Client } from '../../src/index.js';
import { deployAppFile } from '../../src/cli/deploy.js';
import { shortId } from '../../src/common/ids.js';
import { containersOf, FIXTURES, freePort, inspect, startFlotilla } from './harness.js';
import { startLoad } from './load.js';

const APP_FILE = join(FIXTURES, 'app', 'app.yaml');
const APP = readFileSync(APP_FILE, 'utf8');

describe('flotilla deploy', () => {
  let client: Client;
  let instance: string;
  const dir = mkdtempSync(join(tmpdir(), 'flt-deploy-'));

  /** Writes a variant of the fixture app beside nothing else, so its context is made absolute. */
  function variant(name: string, edit: (text: string) => string): string {
    const path = join(dir, name);
    writeFileSync(path, edit(APP.replace('../my-backend', join(FIXTURES, 'my-backend'))));
    return path;
  }

  async function deploy(path: string): Promise<{ ops: string[]; lines: string[] }> {
    const lines: string[] = [];
    const steps = await deployAppFile(client, path, { log: (line) => lines.push(line) });
    return { ops: steps.map((step) => step.op), lines };
  }

  const imagesOf = (ids: string[]): string[] => [...new Set(ids.map((id) => inspect(id).Image as string))];

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
  });

  afterAll(async () => {
    await client?.shutdown();
  });

  it('deploys the app, serves its route, and applying it again changes nothing', async () => {
    const first = await deploy(APP_FILE);
    expect(first.ops).toEqual(['createBackend', 'createEndpoint']);
    expect(first.lines[0]).toBe('creating backend echo (building image, starting 1 replica)…');

    const answer = await fetch(`${client.httpUrl}/echo?x=1`, { method: 'POST', body: 'hi' });
    expect(await answer.json()).toEqual({ arg: 'hello', method: 'POST', path: '/echo', query: { x: '1' } });

    const containers = containersOf(instance);
    expect(containers).toHaveLength(1);
    const again = await deploy(APP_FILE);
    expect(again).toEqual({ ops: [], lines: ['nothing to change'] });
    expect(containersOf(instance)).toEqual(containers);
  });

  it('rescales on a numReplicas edit without rebuilding or replacing the running replica', async () => {
    const before = containersOf(instance, 'echo');
    const [image] = imagesOf(before);
    const edited = await deploy(variant('scaled.yaml', (text) => text.replace('numReplicas: 1', 'numReplicas: 2')));
    expect(edited.ops).toEqual(['updateBackendConfig']);
    expect(edited.lines).toEqual(['echo: numReplicas 1 → 2', 'deployed: 1 change']);

    const after = containersOf(instance, 'echo');
    expect(after).toHaveLength(2);
    expect(after).toEqual(expect.arrayContaining(before));
    expect(imagesOf(after)).toEqual([image]);
    expect((await client.listReplicas('echo')).map((replica) => replica.state)).toEqual(['ready', 'ready']);
    expect((await fetch(`${client.httpUrl}/echo`)).status).toBe(200);
  });

  it('reports a mistake in the file with its line and key, and changes nothing', async () => {
    const containers = containersOf(instance);
    const bad = variant('bad.yaml', (text) => text.replace('numReplicas: 1', 'numReplicas: -2'));
    await expect(deploy(bad)).rejects.toThrow(`${bad}:7: backends.echo.config.numReplicas: must be an integer from 0 to 1000, got -2`);
    expect(containersOf(instance)).toEqual(containers);
  });

  it('deploys an existing HTTP container from the file with its image, port and health path', async () => {
    const image = 'flotilla-test/http-server:1';
    const base = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';
    execFileSync('docker', ['build', '-q', '-t', image, '--build-arg', `BASE=${base}`, join(FIXTURES, 'http-server')]);
    const web = join(dir, 'web.yaml');
    const text = `${APP.replace('../my-backend', join(FIXTURES, 'my-backend')).replace('numReplicas: 1', 'numReplicas: 2')}  web:
    backend: web
    route: /web
`.replace(
      'endpoints:',
      `  web:\n    import: server\n    runtimeEnv: { image: ${image}, port: 8080, healthPath: /healthz }\n    config: { gracefulShutdownTimeoutS: 1 }\n    replicaOptions: { numCpus: 0.25 }\nendpoints:`,
    );
    writeFileSync(web, text);
    expect((await deploy(web)).ops).toEqual(['createBackend', 'createEndpoint']);
    const answer = await fetch(`${client.httpUrl}/web/page`);
    expect(answer.status).toBe(200);
    expect(await answer.json()).toMatchObject({ path: '/web/page' });
    const [container] = containersOf(instance, 'web');
    expect(inspect(container as string).Config.Image).toBe(image);
    expect((await client.getBackendConfig('web')).runtimeEnv).toMatchObject({ image, port: 8080, healthPath: '/healthz' });
    expect(await deploy(web)).toEqual({ ops: [], lines: ['nothing to change'] });
  });

  it('removes what the file no longer has, endpoints first', async () => {
    const empty = join(dir, 'empty.yaml');
    writeFileSync(empty, 'backends: {}\nendpoints: {}\n');
    expect((await deploy(empty)).ops).toEqual(['deleteEndpoint', 'deleteEndpoint', 'deleteBackend', 'deleteBackend']);
    expect(await client.listBackends()).toEqual({});
    expect(containersOf(instance)).toEqual([]);
  });

  it('rolls out an edited handler file under the context, then changed initArgs, on the next deploys', async () => {
    const context = join(dir, 'ctx-backend');
    cpSync(join(FIXTURES, 'my-backend'), context, { recursive: true });
    const file = join(dir, 'ctx.yaml');
    const app = (arg: string) =>
      `backends:\n  ctx:\n    import: handlers/echo.js:Echo\n    runtimeEnv: { context: ${context} }\n    initArgs: [${arg}]\n` +
      `    config: { numReplicas: 2, gracefulShutdownTimeoutS: 2 }\n    replicaOptions: { numCpus: 0.25 }\n` +
      `endpoints:\n  ctx: { backend: ctx, route: /ctx }\n`;
    writeFileSync(file, app('hello'));
    expect((await deploy(file)).ops).toEqual(['createBackend', 'createEndpoint']);
    const ask = async () => (await (await fetch(`${client.httpUrl}/ctx`)).json()) as Record<string, unknown>;
    expect(await ask()).toMatchObject({ arg: 'hello' });
    const before = containersOf(instance, 'ctx');

    const handler = join(context, 'handlers', 'echo.js');
    writeFileSync(handler, readFileSync(handler, 'utf8').replace('return { arg: this.arg,', 'return { edited: true, arg: this.arg,'));
    const load = startLoad(() => fetch(`${client.httpUrl}/ctx`), 2);
    const edited = await deploy(file);
    expect(edited.ops).toEqual(['updateBackend']);
    expect(edited.lines[0]).toBe(`rolling out a new version of ctx: files under ${context} changed…`);
    expect(await ask()).toMatchObject({ edited: true, arg: 'hello' });
    expect(containersOf(instance, 'ctx').filter((id) => before.includes(id))).toEqual([]);
    expect(await deploy(file)).toEqual({ ops: [], lines: ['nothing to change'] });

    writeFileSync(file, app('bye'));
    const changedArgs = await deploy(file);
    expect(changedArgs.ops).toEqual(['updateBackend']);
    expect(changedArgs.lines[0]).toBe('rolling out a new version of ctx: initArgs ["hello"] → ["bye"]…');
    expect(await ask()).toMatchObject({ edited: true, arg: 'bye' });
    const { statuses, total } = await load.stop();
    expect(Object.fromEntries(statuses)).toEqual({ 200: total });
    expect((await client.getBackendConfig('ctx')).rollout?.state).toBe('completed');
  });
});

describe('flotilla deploy on a full machine (2 CPUs)', () => {
  const CLI = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');
  const dir = mkdtempSync(join(tmpdir(), 'flt-full-'));
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-'));
  const instance = `test-${shortId(3)}`;
  let client: Client;
  let admin: string;

  /** An app file with one backend of `replicas` × `cpus` that serves /api, answering its name. */
  function appWith(backend: string, replicas: number, cpus = 1): string {
    const path = join(dir, `${backend}-${replicas}-${cpus}.yaml`);
    writeFileSync(
      path,
      `backends:\n  ${backend}:\n    import: handlers/echo.js:Echo\n    runtimeEnv: { context: ${join(FIXTURES, 'my-backend')} }\n` +
        `    initArgs: [${backend}]\n    config: { numReplicas: ${replicas}, gracefulShutdownTimeoutS: 2 }\n` +
        `    replicaOptions: { numCpus: ${cpus} }\n` +
        `endpoints:\n  api: { backend: ${backend}, route: /api }\n`,
    );
    return path;
  }

  /** Two clients sending GET /api back to back; answers holds the name of each backend that answered. */
  function loadOnApi() {
    const answers: string[] = [];
    const load = startLoad(async () => {
      const response = await fetch(`${client.httpUrl}/api`);
      if (response.ok) answers.push(((await response.clone().json()) as { arg: string }).arg);
      return response;
    }, 2);
    return { answers, load };
  }

  beforeAll(async () => {
    const port = await freePort();
    admin = `http://127.0.0.1:${port}`;
    ({ client } = await startFlotilla({ instance, stateDir, admin: { host: '127.0.0.1', port }, cpuCapacity: 2 }));
  });
  afterAll(async () => {
    await client?.shutdown();
  });

  it('replaces a backend with another of the same size by ordering its steps, serving the route throughout', async () => {
    await deployAppFile(client, appWith('a', 2), { log: () => undefined });
    expect((await client.getCapacity()).free.cpus).toBe(0);

    const { answers, load } = loadOnApi();
    await expect.poll(() => answers.includes('a')).toBe(true);
    const lines: string[] = [];
    const started = Date.now();
    const steps = await deployAppFile(client, appWith('b', 2), { log: (line) => lines.push(line) });
    console.log(`replacing a (2 × 1 CPU) with b (2 × 1 CPU) on 2 CPUs: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await expect.poll(() => answers.at(-1)).toBe('b');
    const { statuses, total } = await load.stop();

    expect(steps.map((step) => step.op)).toEqual([
      'updateBackendConfig',
      'createBackend',
      'setTraffic',
      'deleteBackend',
      'updateBackendConfig',
    ]);
    expect(lines).toEqual([
      'a: numReplicas 2 → 1 (to make room for b, keeping one replica serving until it is removed)',
      'creating backend b (building image, starting 1 replica; 1 more once there is room)…',
      'api: traffic a 1 → b 1',
      'deleting backend a (draining its replicas)…',
      'b: numReplicas 1 → 2 (the rest of its replicas, now that there is room)',
      'deployed: 5 changes',
    ]);
    expect(Object.fromEntries(statuses)).toEqual({ 200: total });
    expect(answers[0]).toBe('a');
    expect(answers.at(-1)).toBe('b');
    expect(answers.slice(answers.indexOf('b'))).not.toContain('a');
    expect(Object.keys(await client.listBackends())).toEqual(['b']);
    expect((await client.listReplicas('b')).map((r) => r.state)).toEqual(['ready', 'ready']);
    expect(containersOf(instance, 'a')).toEqual([]);
  });

  it('refuses a file that does not fit even once applied, in --dry-run and in deploy, and changes nothing', async () => {
    const before = containersOf(instance);
    const tooBig = appWith('b', 3);
    const reason = `${tooBig}:2: backends.b: replica 3 of 3 does not fit on the machine, even alone: not enough resources: a replica needs 1 CPU, 0 of 2 free`;
    const dry = promisify(execFile)(process.execPath, [
      CLI,
      'deploy',
      tooBig,
      '--dry-run',
      '--address',
      admin,
      '--instance',
      instance,
      '--state-dir',
      stateDir,
    ]);
    await expect(dry).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining(reason) });
    await expect(dry).rejects.toMatchObject({
      stderr: expect.stringMatching(/^flotilla: INSUFFICIENT_RESOURCES: the app file does not fit/),
    });
    await expect(deployAppFile(client, tooBig, { log: () => undefined })).rejects.toMatchObject({
      code: 'INSUFFICIENT_RESOURCES',
      message: expect.stringContaining(reason),
    });
    expect(containersOf(instance)).toEqual(before);
    expect((await client.getBackendConfig('b')).numReplicas).toBe(2);
  });

  it('parks the old backend first when not even one replica of its successor fits beside it: 503 meanwhile, then the successor serves', async () => {
    const { answers, load } = loadOnApi();
    await expect.poll(() => answers.includes('b')).toBe(true);
    const lines: string[] = [];
    await deployAppFile(client, appWith('c', 1, 2), { log: (line) => lines.push(line) });
    await expect.poll(() => answers.includes('c')).toBe(true);
    const { statuses } = await load.stop();
    expect(lines).toEqual([
      'b: numReplicas 2 → 0 (no room for c beside it: endpoint api answers 503 until c takes the traffic)',
      'creating backend c (building image, starting 1 replica)…',
      'api: traffic b 1 → c 1',
      'deleting backend b (draining its replicas)…',
      'deployed: 4 changes',
    ]);
    expect([...statuses.keys()].sort()).toEqual([200, 503]);
    expect(answers.at(-1)).toBe('c');
    expect((await client.getCapacity()).free.cpus).toBe(0);
  });
});

describe('flotilla deploy while an image builds', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-build-'));
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-'));
  const instance = `test-${shortId(3)}`;
  let client: Client;
  let adminPort: number;

  beforeAll(async () => {
    adminPort = await freePort();
    ({ client } = await startFlotilla({ instance, stateDir, admin: { host: '127.0.0.1', port: adminPort } }));
  });
  afterAll(async () => {
    await client?.shutdown();
  });

  it('shows the Dockerfile step the build is at, through the admin API', async () => {
    const context = join(dir, 'context');
    cpSync(join(FIXTURES, 'my-backend'), context, { recursive: true });
    writeFileSync(
      join(context, 'Dockerfile'),
      `ARG FLOTILLA_BASE_IMAGE\nFROM \${FLOTILLA_BASE_IMAGE}\nCOPY . /app\nRUN sleep 3 # ${shortId(4)}\n`,
    );
    const path = join(dir, 'slow-build.yaml');
    writeFileSync(
      path,
      `backends:\n  slow:\n    import: handlers/echo.js:Echo\n    initArgs: [slow]\n` +
        `    runtimeEnv: { context: ${context}, dockerfile: Dockerfile }\n    replicaOptions: { numCpus: 0.25 }\nendpoints: {}\n`,
    );
    const remote = await serve.connect({ address: `http://127.0.0.1:${adminPort}`, instance, stateDir });
    const lines: string[] = [];
    await deployAppFile(remote, path, { log: (line) => lines.push(line), progressIntervalMs: 200 });
    expect(lines.some((line) => /^ {2}slow: building image, Step \d+\/\d+ : RUN sleep 3/.test(line))).toBe(true);
    expect(await remote.listBuilds()).toEqual([]);
  });
});
