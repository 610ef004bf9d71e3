import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { serve } from '../../src/index.js';
import { shortId } from '../../src/common/ids.js';
import { connectWhenUp, containersOf, startFlotilla, deployEndpoint, freePort, CLI } from './harness.js';

const run = promisify(execFile);

/** Runs the flotilla command; resolves with its exit code and output whether it succeeds or not. */
async function flotilla(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: userEnv() });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

async function settings(instance = `fh-${shortId(3)}`) {
  return {
    instance,
    stateDir: mkdtempSync(join(tmpdir(), 'flt-')),
    http: { host: '127.0.0.1', port: await freePort() },
    admin: { host: '127.0.0.1', port: await freePort() },
    cpuCapacity: 64,
  };
}

type Settings = Awaited<ReturnType<typeof settings>>;

/** The environment of a shell that never ran the project's scripts. */
function userEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.FLOTILLA_BASE_IMAGE;
  delete env.FLOTILLA_PYTHON_BASE_IMAGE;
  return env;
}

const processes: ChildProcess[] = [];
const instances: string[] = [];

function startProcess(options: Settings): { child: ChildProcess; output: () => string } {
  instances.push(options.instance);
  const child = spawn(process.execPath, [CLI, 'start', '--options', JSON.stringify(options)], {
    env: userEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  processes.push(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output };
}

function hasImage(image: string): boolean {
  try {
    execFileSync('docker', ['image', 'inspect', image], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

afterEach(() => {
  for (const child of processes.splice(0)) child.kill('SIGKILL');
  for (const instance of instances.splice(0)) {
    const ids = containersOf(instance);
    if (ids.length > 0) execFileSync('docker', ['rm', '-f', ...ids]);
    // A control plane killed before its shutdown finished leaves its instance marker behind.
    execFileSync('docker', ['volume', 'rm', '-f', `flotilla-instance-${instance}`], { stdio: 'ignore' });
  }
});

describe('the base image', () => {
  it('picks itself when FLOTILLA_BASE_IMAGE is not set, says which, and serves', async () => {
    const expected = hasImage('node:20-bookworm-slim') ? 'node:20-bookworm-slim' : 'flotilla-local/node:20-bookworm-slim';
    const options = await settings();
    const { output } = startProcess(options);
    const client = await connectWhenUp(options);
    await deployEndpoint(client, 'hello', () => 'hello from the picked base');
    const response = await fetch(`${client.httpUrl}/hello`);
    expect(await response.text()).toBe('hello from the picked base');
    expect(output()).toContain(`node base image ${expected}`);
    await client.shutdown();
  });
});

const GOOD = `backends:
  echo:
    import: handlers/echo.js:Echo
    runtimeEnv: { context: ./echo }
    config: { numReplicas: 2 }
    replicaOptions: { numCpus: 0.75 }
endpoints:
  echo: { backend: echo, route: /echo }
`;

describe('offline checks, with no control plane running', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flt-app-'));
  mkdirSync(join(dir, 'echo'));
  writeFileSync(join(dir, 'good.yaml'), GOOD);
  writeFileSync(
    join(dir, 'bad.yaml'),
    GOOD.replace('./echo', './missing').replace('numReplicas: 2', 'numReplicas: two').replace('route: /echo', 'route: /echo, methods: GET'),
  );
  writeFileSync(join(dir, 'broken.yaml'), 'backends: [\n');
  let nobody = '';

  it('validate passes a good file and checks capacity against a given machine', async () => {
    nobody = `http://127.0.0.1:${await freePort()}`;
    expect(await flotilla('validate', join(dir, 'good.yaml'))).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/valid \(1 backend, 1 endpoint\)/),
    });
    expect(await flotilla('validate', join(dir, 'good.yaml'), '--cpus', '2', '--memory-mb', '4096')).toMatchObject({ code: 0 });
    expect(await flotilla('validate', join(dir, 'good.yaml'), '--cpus', '1', '--memory-mb', '4096')).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/good\.yaml:2: backends\.echo: replica 2 of 2 does not fit .*needs 0\.75 CPU, 0\.25 of 1 free/),
    });
  });

  it('validate reports every problem of a bad file with its line, and exits 1', async () => {
    const bad = await flotilla('validate', join(dir, 'bad.yaml'));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/bad\.yaml:4: backends\.echo\.runtimeEnv\.context: '\.\/missing' is not a directory/);
    expect(bad.stderr).toMatch(/bad\.yaml:5: backends\.echo\.config\.numReplicas: /);
    expect(bad.stderr).toMatch(/bad\.yaml:8: endpoints\.echo\.methods: .*not the string "GET"/);
    expect(await flotilla('validate', join(dir, 'broken.yaml'))).toMatchObject({ code: 1, stderr: expect.stringMatching(/YAML syntax/) });
    expect(await flotilla('validate', join(dir, 'none.yaml'))).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/cannot read app file/),
    });
  });

  it('deploy --dry-run plans against an empty instance when no control plane answers', async () => {
    const dry = await flotilla('deploy', join(dir, 'good.yaml'), '--dry-run', '--address', nobody);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/no control plane answers .*planning against an empty instance/);
    expect(dry.stdout).toMatch(/would: creating backend echo \(building image, starting 2 replicas\)/);
    expect(dry.stdout).toMatch(/would: creating endpoint echo at GET \/echo → echo/);
    expect(await flotilla('deploy', join(dir, 'good.yaml'), '--dry-run', '--offline', '--cpus', '1')).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/does not fit/),
    });
    expect(await flotilla('deploy', join(dir, 'bad.yaml'), '--dry-run', '--offline')).toMatchObject({ code: 1 });
  });
});

describe('TypeScript run by tsx', () => {
  it('serves a class backend shipped from a file that npx tsx runs, and names the docs for an outer helper', async () => {
    const adminPort = await freePort();
    const adminUrl = `http://127.0.0.1:${adminPort}`;
    const { client } = await startFlotilla({ admin: { host: '127.0.0.1', port: adminPort, auth: 'none' } });
    try {
      const tsx = join(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'tsx');
      const { stdout } = await run(tsx, [join(import.meta.dirname, '..', 'fixtures', 'tsx-app', 'app.ts'), adminUrl]);
      expect(stdout).toContain('deployed');
      expect(await (await fetch(`${client.httpUrl}/counter/x`)).text()).toBe('Counter 42 at /counter/x');
      const careless = await fetch(`${client.httpUrl}/careless`);
      expect(careless.status).toBe(500);
      expect(await careless.text()).toMatch(/shout is not defined.*docs\/getting-started\.md#shipped-code-must-be-self-contained/);
    } finally {
      await client.shutdown();
    }
  });
});

describe('one control plane per instance on an engine', () => {
  it("refuses a second control plane of the instance from another state dir, and takes over a dead one's marker", async () => {
    const options = await settings();
    const { child } = startProcess(options);
    const first = await connectWhenUp(options);
    await deployEndpoint(first, 'kept', () => 'still here');
    const containers = containersOf(options.instance);

    const second = { ...(await settings(options.instance)), logLevel: 'warn' as const };
    await expect(serve.start(second)).rejects.toMatchObject({
      code: 'INSTANCE_RUNNING',
      message: expect.stringContaining(`admin API http://127.0.0.1:${options.admin.port}`),
    });
    expect(containersOf(options.instance)).toEqual(containers);
    expect(await (await fetch(`${first.httpUrl}/kept`)).text()).toBe('still here');

    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const takeover = await serve.start(second);
    expect(
      execFileSync('docker', ['volume', 'ls', '-q', '--filter', `name=flotilla-instance-${options.instance}`], { encoding: 'utf8' }),
    ).toContain(options.instance);
    await takeover.shutdown();
    expect(
      execFileSync('docker', ['volume', 'ls', '-q', '--filter', `name=flotilla-instance-${options.instance}`], { encoding: 'utf8' }),
    ).toBe('');
  });
});

describe('flotilla prune', () => {
  it("removes the images Flotilla built that nothing uses, and keeps a live backend's image and its base", async () => {
    const label = `flotilla-test.prune=${shortId(4)}`;
    const base = hasImage('node:20-bookworm-slim') ? 'node:20-bookworm-slim' : 'flotilla-local/node:20-bookworm-slim';
    const tag = (name: string) => `flotilla-test/prune-${name}:${label.split('=')[1]}`;
    const dir = mkdtempSync(join(tmpdir(), 'flt-prune-'));
    const build = (name: string, dockerfile: string) => {
      writeFileSync(join(dir, 'Dockerfile'), dockerfile);
      execFileSync('docker', ['build', '-q', '-t', tag(name), '--label', 'dev.flotilla.managed=true', '--label', label, dir], {
        env: { ...process.env, DOCKER_BUILDKIT: '0' },
      });
    };
    execFileSync('cp', [join(import.meta.dirname, '..', 'fixtures', 'http-server', 'server.js'), dir]);
    build('base', `FROM ${base}\nCOPY server.js /srv/server.js\nCMD ["node", "/srv/server.js"]\n`);
    build('used', `FROM ${tag('base')}\nENV ROLE=used\n`);
    build('unused', `FROM ${base}\nCOPY server.js /srv/server.js\nENV ROLE=unused\nCMD ["node", "/srv/server.js"]\n`);
    const { client } = await startFlotilla();
    try {
      await client.createBackend('web', 'server', {
        replicaOptions: { runtimeEnv: { image: tag('used'), port: 8080, healthPath: '/healthz' } },
      });
      const pruned = await flotilla('prune', '--label', label);
      expect(pruned).toMatchObject({ code: 0, stdout: expect.stringContaining(`removed ${tag('unused')}`) });
      expect(pruned.stdout).toMatch(/removed 1 image; kept 2 in use/);
      expect([hasImage(tag('used')), hasImage(tag('base')), hasImage(tag('unused'))]).toEqual([true, true, false]);
    } finally {
      await client.shutdown();
      execFileSync('docker', ['rmi', '-f', tag('used'), tag('base'), tag('unused')], { stdio: 'ignore' });
    }
  });
});

describe('flotilla prune on an engine shared by instances', () => {
  /** Runs flotilla prune as an instance with its own state dir. */
  async function pruneAs(owner: { instance: string; stateDir: string }, label: string) {
    const env = { ...userEnv(), FLOTILLA_INSTANCE: owner.instance, FLOTILLA_STATE_DIR: owner.stateDir };
    return run(process.execPath, [CLI, 'prune', '--label', label], { env });
  }

  it('keeps an image while another instance holds it, removes it with the last hold, and says so when a start finds it gone', async () => {
    const id = shortId(4);
    const label = `flotilla-test.prune=${id}`;
    const context = mkdtempSync(join(tmpdir(), 'flt-prune-'));
    // The label passes to the images Flotilla builds on this one, so that the prunes below touch only this test's images.
    writeFileSync(join(context, 'Dockerfile'), `ARG FLOTILLA_BASE_IMAGE\nFROM \${FLOTILLA_BASE_IMAGE}\nLABEL ${label}\n`);
    const options = { config: { numReplicas: 0 }, replicaOptions: { runtimeEnv: { context, dockerfile: 'Dockerfile' } } };
    const handler = () => 'held';
    const one = { instance: `pr1-${id}`, stateDir: mkdtempSync(join(tmpdir(), 'flt-')) };
    const two = { instance: `pr2-${id}`, stateDir: mkdtempSync(join(tmpdir(), 'flt-')) };
    const first = await startFlotilla(one);
    const second = await startFlotilla(two);
    const images = () =>
      execFileSync('docker', ['image', 'ls', '--filter', `label=${label}`, '--format', '{{.Repository}}:{{.Tag}}'], { encoding: 'utf8' })
        .split('\n')
        .filter((tag) => tag.startsWith('flotilla/backend:'))
        .sort();
    try {
      await first.client.createBackend('held', handler, options);
      await second.client.createBackend('held', handler, options);
      const [image] = images();
      expect(images()).toEqual([image, `${image}-${one.instance}`, `${image}-${two.instance}`]);
      await first.client.deleteBackend('held');

      const released = await pruneAs(one, label);
      expect(released.stdout).toContain(`released ${image}-${one.instance}`);
      expect(images()).toEqual([image, `${image}-${two.instance}`]);
      await second.client.updateBackendConfig('held', { numReplicas: 1 });
      await second.client.createEndpoint('held', { backend: 'held' });
      expect(await second.client.getHandle('held').remote()).toBe('held');
      await second.client.deleteEndpoint('held');

      await second.client.deleteBackend('held');
      const removed = await pruneAs(two, label);
      expect(removed.stdout).toContain(`removed ${image}`);
      expect(images()).toEqual([]);

      await second.client.createBackend('held', handler, options);
      execFileSync('docker', ['rmi', '-f', image!], { stdio: 'ignore' });
      await expect(second.client.updateBackendConfig('held', { numReplicas: 1 })).rejects.toMatchObject({
        code: 'IMAGE_MISSING',
        message: expect.stringContaining(`image ${image} of backend 'held' is no longer on the Docker engine`),
      });
    } finally {
      await Promise.all([first.client.shutdown(), second.client.shutdown()]);
      const left = execFileSync('docker', ['image', 'ls', '-q', '--filter', `label=${label}`], { encoding: 'utf8' }).split('\n');
      await run('docker', ['rmi', '-f', ...new Set(left.filter((line) => line !== ''))]).catch(() => undefined);
    }
  });
});

describe('flotilla logs', () => {
  it('prints every line with its time, the replicas of a backend merged in time order', async () => {
    const adminPort = await freePort();
    const { client } = await startFlotilla({ admin: { host: '127.0.0.1', port: adminPort, auth: 'none' } });
    try {
      await client.createBackend(
        'talker',
        (request: Request) => {
          console.log(`served ${new URL(request.url).searchParams.get('n')}`);
          return 'ok';
        },
        { config: { numReplicas: 2 } },
      );
      await client.createEndpoint('talker', { backend: 'talker', route: '/talk' });
      for (let n = 1; n <= 8; n++) await fetch(`${client.httpUrl}/talk?n=${n}`);
      const { code, stdout } = await flotilla('logs', 'talker', '--address', `http://127.0.0.1:${adminPort}`);
      expect(code).toBe(0);
      const lines = stdout.trim().split('\n');
      const stamped = lines.map((line) => /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) \[([0-9a-f]{8})\] (.*)$/.exec(line));
      expect(stamped.every((match) => match !== null)).toBe(true);
      const times = stamped.map((match) => match![1]!);
      expect(times).toEqual([...times].sort());
      expect(new Set(stamped.map((match) => match![2])).size).toBe(2);
      const served = stamped.flatMap((match) =>
        /^served (\d+)$/.exec(match![3]!) ? [{ replica: match![2]!, n: Number(match![3]!.slice(7)) }] : [],
      );
      expect(served.map(({ n }) => n).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      const replicas = [...new Set(served.map(({ replica }) => replica))];
      expect(replicas).toHaveLength(2);
      // The engine stamps each replica's lines as it reads them, so only one replica's own lines keep their order for sure.
      for (const replica of replicas) {
        const own = served.filter((line) => line.replica === replica).map(({ n }) => n);
        expect(own).toEqual([...own].sort((a, b) => a - b));
      }
    } finally {
      await client.shutdown();
    }
  });
});

describe('what a user is told', () => {
  it('reports the front door at http.publicUrl, as flotilla status shows it', async () => {
    const adminPort = await freePort();
    const { client } = await startFlotilla({
      http: { host: '127.0.0.1', port: 0, publicUrl: 'http://127.0.0.1:18000/' },
      admin: { host: '127.0.0.1', port: adminPort, auth: 'none' },
    });
    try {
      expect(client.httpUrl).toBe('http://127.0.0.1:18000');
      const status = await flotilla('status', '--address', `http://127.0.0.1:${adminPort}`);
      expect(status).toMatchObject({ code: 0, stdout: expect.stringMatching(/^HTTP: http:\/\/127\.0\.0\.1:18000$/m) });
    } finally {
      await client.shutdown();
    }
  });

  it("shows a failed build step's output without terminal colour codes", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flt-colour-'));
    writeFileSync(
      join(dir, 'Dockerfile'),
      `ARG FLOTILLA_BASE_IMAGE\nFROM \${FLOTILLA_BASE_IMAGE}\nRUN printf '\\033[31mnpm ERR! red failure ${shortId(4)}\\033[0m\\n' && exit 3\n`,
    );
    const { client } = await startFlotilla();
    try {
      const error = await client
        .createBackend('colourful', () => 1, { replicaOptions: { runtimeEnv: { context: dir, dockerfile: 'Dockerfile' } } })
        .catch((e: unknown) => e as Error);
      expect(error).toMatchObject({ code: 'BUILD_FAILED', message: expect.stringContaining('npm ERR! red failure') });
      expect((error as Error).message).not.toContain('\u001b');
    } finally {
      await client.shutdown();
    }
  });
});
