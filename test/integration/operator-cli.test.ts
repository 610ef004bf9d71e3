import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { shortId } from '../../src/common/ids.js';
import { runningInstances } from '../../src/admin/instance-records.js';
import { containersOf, startFlotilla, deployEndpoint, freePort, CLI } from './harness.js';

const run = promisify(execFile);

/** A user's shell on this machine: a home of its own, no FLOTILLA_* variable naming an instance, address or state dir. */
function shellEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  for (const name of ['FLOTILLA_INSTANCE', 'FLOTILLA_STATE_DIR', 'FLOTILLA_ADMIN_HOST', 'FLOTILLA_ADMIN_PORT', 'FLOTILLA_ADMIN_TOKEN'])
    delete env[name];
  return env;
}

/** Runs the flotilla command in that shell; resolves with its exit code and output whether it succeeds or not. */
async function flotilla(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

const homes: string[] = [];
const instances: string[] = [];

afterEach(() => {
  for (const home of homes.splice(0))
    for (const record of runningInstances(join(home, '.flotilla'))) {
      try {
        process.kill(record.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  for (const instance of instances.splice(0)) {
    const ids = containersOf(instance);
    if (ids.length > 0) execFileSync('docker', ['rm', '-f', ...ids]);
    execFileSync('docker', ['volume', 'rm', '-f', `flotilla-instance-${instance}`], { stdio: 'ignore' });
  }
});

async function startDetached(env: NodeJS.ProcessEnv, instance: string) {
  instances.push(instance);
  const admin = await freePort();
  const http = await freePort();
  const options = { instance, admin: { port: admin }, http: { port: http }, cpuCapacity: 64, logLevel: 'warn' };
  const started = await flotilla(env, 'start', '--detached', '--options', JSON.stringify(options));
  return { ...started, admin, http };
}

describe('finding the instance', () => {
  it('a plain command reaches the last started instance, or the only one running; --instance picks another', async () => {
    const home = mkdtempSync(join(tmpdir(), 'flt-home-'));
    homes.push(home);
    const env = shellEnv(home);
    const none = await flotilla(env, 'status');
    expect(none).toMatchObject({ code: 1, stderr: expect.stringMatching(/ADMIN_UNREACHABLE.*\n.*no running control plane is recorded/) });

    const first = `nc2-${shortId(3)}`;
    const one = await startDetached(env, first);
    expect(one.code).toBe(0);
    expect(one.stdout).toContain(`(instance ${first}); HTTP on http://127.0.0.1:${one.http}, admin API on http://127.0.0.1:${one.admin}`);
    expect(one.stdout).toMatch(/later flotilla commands on this machine reach it without flags/);
    expect(await flotilla(env, 'status')).toMatchObject({ code: 0, stdout: expect.stringContaining(`HTTP: http://127.0.0.1:${one.http}`) });

    const second = `nc3-${shortId(3)}`;
    const two = await startDetached(env, second);
    expect(two.code).toBe(0);
    expect(await flotilla(env, 'status')).toMatchObject({ stdout: expect.stringContaining(`HTTP: http://127.0.0.1:${two.http}`) });
    expect(await flotilla(env, 'status', '--instance', first)).toMatchObject({
      stdout: expect.stringContaining(`HTTP: http://127.0.0.1:${one.http}`),
    });

    expect(await flotilla(env, 'shutdown')).toMatchObject({ code: 0 });
    await expect
      .poll(async () => (await flotilla(env, 'status')).stdout, { timeout: 30_000, interval: 500 })
      .toContain(`HTTP: http://127.0.0.1:${one.http}`);
    expect(await flotilla(env, 'shutdown')).toMatchObject({ code: 0 });
  });
});

const MODEL = `export class Model {
  async call(request) {
    const url = new URL(request.url);
    if (url.searchParams.get('missing') === '1') return new Response('nope', { status: 404 });
    if (url.searchParams.get('slow') === '1')
      return new Promise((_, reject) => request.signal.addEventListener('abort', () => reject(new Error('aborted by client'))));
    if (request.method !== 'POST') return 'ready';
    const body = await request.json();
    if (body.fail) throw new TypeError('bad input');
    return { method: request.method, query: url.search, flavour: request.headers.get('x-flavour'), body };
  }
  predict() {
    return 'predicted';
  }
}
`;

describe('flotilla call and flotilla logs', () => {
  it('show the HTTP status, exit 1 on a 4xx or 5xx, take a method, query and headers, and list what exists', async () => {
    const adminPort = await freePort();
    const address = `http://127.0.0.1:${adminPort}`;
    const { client } = await startFlotilla({ admin: { host: '127.0.0.1', port: adminPort, auth: 'none' } });
    const env = process.env;
    try {
      const dir = mkdtempSync(join(tmpdir(), 'flt-call-'));
      writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
      writeFileSync(join(dir, 'model.js'), MODEL);
      await deployEndpoint(
        client,
        'model',
        'model.js:Model',
        { replicaOptions: { runtimeEnv: { context: dir } } },
        { methods: ['GET', 'POST'] },
      );
      const call = (...args: string[]) => flotilla(env, 'call', ...args, '--address', address);

      expect(await call('model')).toMatchObject({ code: 0, stdout: 'ready', stderr: 'HTTP 200 OK\n' });
      const echoed = await call('model', '{"x":1}', '-X', 'post', '--query', 'lang=en', '-H', 'X-Flavour: vanilla');
      expect(echoed.code).toBe(0);
      expect(JSON.parse(echoed.stdout)).toEqual({ method: 'POST', query: '?lang=en', flavour: 'vanilla', body: { x: 1 } });
      expect(await call('model', '--query', 'missing=1')).toMatchObject({ code: 1, stdout: 'nope', stderr: 'HTTP 404 Not Found\n' });
      const failed = await call('model', '{"fail":true}', '-H', 'x-request-id: req-42');
      expect(failed).toMatchObject({ code: 1, stderr: 'HTTP 500 Internal Server Error\n' });
      expect(failed.stdout).toMatch(/HANDLER_ERROR.*bad input/);

      expect(await call('modle')).toMatchObject({
        code: 1,
        stderr: "flotilla: ENDPOINT_NOT_FOUND: no endpoint 'modle' (did you mean model?); endpoints: model\n",
      });
      expect(await call('model', '-X', 'POTS')).toMatchObject({
        code: 1,
        stderr: 'flotilla: METHOD_NOT_ALLOWED: endpoint model (/model) accepts GET, POST, not POTS (did you mean POST?)\n',
      });
      expect(await call('model', '--method', 'predict')).toMatchObject({ code: 0, stdout: 'predicted' });
      expect(await call('model', '--method', 'predcit')).toMatchObject({
        code: 1,
        stderr: expect.stringMatching(/HANDLER_ERROR: .*Model has no method 'predcit'; its methods: call, predict/),
      });

      const ready = await fetch(`${client.httpUrl}/model`);
      expect(ready.headers.get('server')).toBeNull();
      await expect(fetch(`${client.httpUrl}/model?slow=1`, { signal: AbortSignal.timeout(1000) })).rejects.toThrow();
      const failure = (await flotilla(env, 'call', 'model', '{"fail":true}', '-H', 'x-request-id: req-43', '--address', address)).code;
      expect(failure).toBe(1);
      await expect
        .poll(async () => (await flotilla(env, 'logs', 'model', '--address', address)).stdout, { timeout: 30_000, interval: 500 })
        .toMatch(/request\.id=req-43/);
      const lines = (await flotilla(env, 'logs', 'model', '--address', address)).stdout.split('\n');
      const head = lines.findIndex((line) => line.includes('request.id=req-42'));
      expect(lines[head]).toMatch(
        /^\d{4}-\d\d-\d\dT[\d:.]+Z \[[0-9a-f]{8}\] error handler_error TypeError: bad input {2}request\.method=POST request\.path=\/model request\.id=req-42$/,
      );
      expect(lines[head + 1]).toMatch(/^ {4}at Model\.call \(.*model\.js:\d+:\d+\)$/);
      expect(lines.filter((line) => line.includes('handler_error'))).toHaveLength(3); // req-42, --method predcit, req-43
      expect(lines.join('\n')).not.toMatch(/aborted by client/);
      const json = (await flotilla(env, 'logs', 'model', '--json', '--address', address)).stdout;
      const entry = JSON.parse(/\{.*"req-42".*\}/.exec(json)?.[0] ?? '{}') as Record<string, unknown>;
      expect(entry).toMatchObject({ level: 'error', event: 'handler_error', type: 'TypeError', stack: expect.stringMatching(/model\.js/) });
    } finally {
      await client.shutdown();
    }
  });
});

describe('flotilla validate', () => {
  it('checks capacity against this machine by default, says so, and says when it did not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flt-validate-'));
    const file = join(dir, 'app.yaml');
    writeFileSync(
      file,
      'backends:\n  big:\n    import: a.js:A\n    config: { numReplicas: 2 }\n    replicaOptions: { numCpus: 1000 }\nendpoints: {}\n',
    );
    const env = { ...process.env, FLOTILLA_CPUS: '4', FLOTILLA_MEMORY_MB: '8192', FLOTILLA_GPUS: 'none' };
    expect(await flotilla(env, 'validate', file)).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(
        /app\.yaml:2: backends\.big: replica 1 of 2 does not fit on the machine, even alone: .*\n\(capacity checked against this machine \(4 CPUs, 8192 MB and no GPUs\)\)/,
      ),
    });
    expect(await flotilla(env, 'validate', file, '--no-capacity')).toMatchObject({
      code: 0,
      stdout: `${file}: valid (1 backend, 0 endpoints); capacity not checked (--no-capacity)\n`,
    });
    writeFileSync(file, 'backends:\n  small:\n    import: a.js:A\n    replicaOptions: { numCpus: 0.5 }\nendpoints: {}\n');
    expect(await flotilla(env, 'validate', file)).toMatchObject({
      code: 0,
      stdout: `${file}: valid (1 backend, 0 endpoints); fits this machine (4 CPUs, 8192 MB and no GPUs)\n`,
    });
  });
});

describe('flotilla dev', () => {
  it('rolls out an edited handler while requests flow: every request answered, the new code live', async () => {
    const adminPort = await freePort();
    const { client } = await startFlotilla({ admin: { host: '127.0.0.1', port: adminPort, auth: 'none' } });
    const dir = mkdtempSync(join(tmpdir(), 'flt-dev-'));
    const code = (answer: string) => `export default function hello() {\n  return '${answer}';\n}\n`;
    writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
    writeFileSync(join(dir, 'hello.js'), code('first'));
    writeFileSync(
      join(dir, 'app.yaml'),
      'backends:\n  hello:\n    import: hello.js\n    runtimeEnv: { context: . }\n    config: { numReplicas: 2 }\n    replicaOptions: { numCpus: 0.1 }\n' +
        'endpoints:\n  hello: { backend: hello, route: /hello }\n',
    );
    const dev = spawn(process.execPath, [CLI, 'dev', join(dir, 'app.yaml'), '--address', `http://127.0.0.1:${adminPort}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    dev.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    dev.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => dev.once('exit', resolve));
    try {
      await expect.poll(() => output, { timeout: 120_000, interval: 250 }).toMatch(/watching .*app\.yaml and 1 context directory/);
      expect(await (await fetch(`${client.httpUrl}/hello`)).text()).toBe('first');

      const answers: string[] = [];
      const failures: string[] = [];
      let flowing = true;
      const traffic = (async () => {
        while (flowing) {
          const response = await fetch(`${client.httpUrl}/hello`).catch((error: unknown) => error as Error);
          if (response instanceof Error) failures.push(response.message);
          else if (response.status !== 200) failures.push(`${response.status} ${await response.text()}`);
          else answers.push(await response.text());
        }
      })();
      writeFileSync(join(dir, 'hello.js'), code('second'));
      await expect.poll(() => answers.at(-1), { timeout: 120_000, interval: 100 }).toBe('second');
      flowing = false;
      await traffic;
      expect(failures).toEqual([]);
      expect(output).toMatch(/rolling out a new version of hello: files under .* changed/);
      expect(output).toMatch(/hello: version \S+ live, 2\/2 replicas ready/);

      writeFileSync(join(dir, 'app.yaml'), 'backends:\n  hello:\n    import: hello.js\n    config: { numReplica: 2 }\nendpoints: {}\n');
      await expect
        .poll(() => output, { timeout: 30_000, interval: 250 })
        .toMatch(/app\.yaml has problems; nothing was deployed.*\n.*numReplica: unknown key \(did you mean numReplicas\?\)/);
      dev.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(output).toMatch(/stopped watching; the instance keeps serving/);
      expect(await (await fetch(`${client.httpUrl}/hello`)).text()).toBe('second');
    } finally {
      dev.kill('SIGKILL');
      await client.shutdown();
    }
  });
});

describe('a failed build', () => {
  it("names the file to fix: the user's Dockerfile at the failing instruction's line", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flt-blame-'));
    writeFileSync(
      join(dir, 'Dockerfile'),
      `ARG FLOTILLA_BASE_IMAGE\nFROM \${FLOTILLA_BASE_IMAGE}\n\n# the mistake\nRUN echo ${shortId(4)} && exit 3\n`,
    );
    const { client } = await startFlotilla();
    try {
      const error = await client
        .createBackend('broken', () => 1, { replicaOptions: { runtimeEnv: { context: dir, dockerfile: 'Dockerfile' } } })
        .catch((e: unknown) => e as Error);
      expect(error).toMatchObject({
        code: 'BUILD_FAILED',
        message: expect.stringMatching(new RegExp(`^fix ${join(dir, 'Dockerfile')}:5: RUN echo \\w+ && exit 3\n`)),
      });
    } finally {
      await client.shutdown();
    }
  });
});
