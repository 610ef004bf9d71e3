import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { LABELS } from '../../src/common/labels.js';
import { shortId } from '../../src/common/ids.js';
import { FIXTURES, containersOf, inspect, startFlotilla, deployEndpoint } from './harness.js';

const BASE = process.env.FLOTILLA_BASE_IMAGE ?? 'node:20-bookworm-slim';

const python = (context: string, extra: Record<string, unknown> = {}) => ({
  replicaOptions: { runtimeEnv: { runtime: 'python' as const, context: join(FIXTURES, context), ...extra } },
});

/** The offline Debian trixie made by scripts/base-image.sh, where the Python base is the offline bookworm. */
const TRIXIE_IMAGE = (process.env.FLOTILLA_PYTHON_BASE_IMAGE ?? '').startsWith('flotilla-local/')
  ? 'flotilla-local/trixie-minbase:latest'
  : 'debian:trixie-slim';

/** Shipped to a replica as source: resolves is-number from the image's /app/node_modules. */
function isNumberVersion() {
  const { createRequire } = process.getBuiltinModule('node:module');
  const require = createRequire('/app/');
  const isNumber = require('is-number') as (value: unknown) => boolean;
  return { version: (require('is-number/package.json') as { version: string }).version, fiveIsNumber: isNumber('5') };
}

function imageOf(instance: string, backend: string): { tag: string; id: string } {
  const [container] = containersOf(instance, backend);
  const info = inspect(container as string);
  return { tag: info.Config.Image as string, id: info.Image as string };
}

describe('dependency environments', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla());
  });
  afterAll(() => client.shutdown());

  const get = async (route: string, init?: RequestInit) => {
    const response = await fetch(`${client.httpUrl}${route}`, init);
    return { status: response.status, headers: response.headers, body: await response.text() };
  };
  const json = async (route: string, init?: RequestInit) => JSON.parse((await get(route, init)).body) as Record<string, unknown>;

  it('serves two major versions of one npm package side by side, neither installed in the caller', async () => {
    expect(() => createRequire(import.meta.url).resolve('is-number')).toThrow();
    await Promise.all([
      client.createBackend('isnum6', 'handler.js:version', {
        replicaOptions: { runtimeEnv: { context: join(FIXTURES, 'env-is-number-6') } },
      }),
      client.createBackend('isnum7', isNumberVersion, { replicaOptions: { runtimeEnv: { packages: { 'is-number': '7.0.0' } } } }),
    ]);
    await client.createEndpoint('isnum6', { backend: 'isnum6', route: '/isnum6' });
    await client.createEndpoint('isnum7', { backend: 'isnum7', route: '/isnum7' });
    const [six, seven] = await Promise.all([json('/isnum6'), json('/isnum7')]);
    expect(six).toEqual({ version: '6.0.0', fiveIsNumber: true });
    expect(seven).toEqual({ version: '7.0.0', fiveIsNumber: true });
    expect(imageOf(instance, 'isnum6').tag).not.toBe(imageOf(instance, 'isnum7').tag);
  });

  it('serves a Python class backend: init args, reconfigure, numpy, return kinds, errors, methods', async () => {
    await client.createBackend('predictor', 'model.py:Predictor', {
      initArgs: [0.5],
      config: { userConfig: { weights: [1, 2, 3] } },
      ...python('env-python'),
    });
    await client.createEndpoint('predictor', { backend: 'predictor', route: '/predict', methods: ['GET', 'POST'] });
    const predict = (features: number[]) => json('/predict', { method: 'POST', body: JSON.stringify({ features }) });
    expect(await predict([1, 1, 1])).toMatchObject({ score: 6.5, numpy: expect.stringMatching(/^1\./) });

    await client.updateBackendConfig('predictor', { userConfig: { weights: [0, 0, 1] } });
    expect((await predict([1, 1, 1])).score).toBe(1.5);
    await expect(client.updateBackendConfig('predictor', { userConfig: { weights: 'heavy' } })).rejects.toMatchObject({
      code: 'RECONFIGURE_FAILED',
      message: expect.stringMatching(/weights must be a list of 3 numbers/),
    });
    expect((await predict([1, 1, 1])).score).toBe(1.5);
    await expect(client.getHandle('predictor').options({ methodName: 'describe' }).remote()).resolves.toEqual({
      bias: 0.5,
      weights: [0, 0, 1],
    });

    const text = await get('/predict?kind=text');
    expect([text.status, text.headers.get('content-type'), text.body]).toEqual([200, 'text/plain; charset=utf-8', 'plain text']);
    const bytes = await fetch(`${client.httpUrl}/predict?kind=bytes`);
    expect(bytes.headers.get('content-type')).toBe('application/octet-stream');
    expect([...new Uint8Array(await bytes.arrayBuffer())]).toEqual([0, 1, 2]);
    const teapot = await get('/predict?kind=response');
    expect([teapot.status, teapot.headers.get('x-custom'), teapot.body]).toEqual([418, 'yes', 'teapot']);
    const thrown = await get('/predict?kind=throw');
    expect(thrown.status).toBe(500);
    expect(JSON.parse(thrown.body).error).toEqual({ code: 'HANDLER_ERROR', type: 'TypeError', message: 'kind must not be throw' });
    await expect(client.getHandle('predictor').options({ methodName: 'missing' }).remote()).rejects.toMatchObject({
      code: 'HANDLER_ERROR',
      message: expect.stringMatching(/Predictor has no method 'missing'/),
    });
  });

  it('batches a Python function marked with accept_batch, from the same image', async () => {
    await client.createBackend('pybatch', 'model.py:batch_sum', {
      config: { maxBatchSize: 4, batchWaitTimeoutS: 0.5 },
      ...python('env-python'),
    });
    expect(imageOf(instance, 'pybatch').tag).toBe(imageOf(instance, 'predictor').tag);
    await client.createEndpoint('pybatch', { backend: 'pybatch', route: '/pybatch', methods: ['POST'] });
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => json('/pybatch', { method: 'POST', body: String(i) })));
    expect(answers.map((a) => a.value)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(Math.max(...answers.map((a) => a.batch as number))).toBe(4);
  });

  it('serves two numpy major versions side by side (bookworm 1.x, trixie 2.x from a user Dockerfile)', async () => {
    await Promise.all([
      client.createBackend('numpy1', 'model.py:versions', python('env-python')),
      client.createBackend(
        'numpy2',
        'model.py:versions',
        python('env-python-trixie', { dockerfile: 'Dockerfile', buildArgs: { TRIXIE_IMAGE } }),
      ),
    ]);
    await client.createEndpoint('numpy1', { backend: 'numpy1', route: '/numpy1' });
    await client.createEndpoint('numpy2', { backend: 'numpy2', route: '/numpy2' });
    const [one, two] = await Promise.all([json('/numpy1'), json('/numpy2')]);
    expect(one.numpy).toMatch(/^1\./);
    expect(one.python).toMatch(/^3\.11\./);
    expect(two.numpy).toMatch(/^2\./);
    expect(two.python).toMatch(/^3\.13\./);
  });

  it('does not rebuild an unchanged backend, and rebuilds one whose files changed', async () => {
    const context = mkdtempSync(join(tmpdir(), 'flt-env-'));
    cpSync(join(FIXTURES, 'env-is-number-6'), context, { recursive: true });
    writeFileSync(join(context, 'marker.txt'), `${Date.now()}\n`);
    const options = { replicaOptions: { runtimeEnv: { context } } };
    const create = async () => {
      const started = performance.now();
      await client.createBackend('cached', 'handler.js:version', options);
      const ms = performance.now() - started;
      const image = imageOf(instance, 'cached');
      await client.deleteBackend('cached', { force: true });
      return { ms, image };
    };
    const built = await create();
    const again = await create();
    expect(again.image).toEqual(built.image);
    writeFileSync(join(context, 'marker.txt'), 'changed\n');
    const changed = await create();
    expect(changed.image.tag).not.toBe(built.image.tag);
    rmSync(context, { recursive: true, force: true });
    const line = [built, again, changed].map((c) => `${c.ms.toFixed(0)} ms`).join(', ');
    console.log(`environments: create with a new file, unchanged, one file changed: ${line}`);
  });

  it('fails a failing build with BUILD_FAILED and the end of its log', async () => {
    await expect(
      client.createBackend('broken', 'handler.js:version', {
        replicaOptions: { runtimeEnv: { context: join(FIXTURES, 'env-failing'), dockerfile: 'Dockerfile' } },
      }),
    ).rejects.toMatchObject({
      code: 'BUILD_FAILED',
      message: expect.stringMatching(/non-zero code: 3[\s\S]*flotilla-test: about to fail/),
    });
    expect(containersOf(instance, 'broken')).toEqual([]);
  });

  it('honours .dockerignore: ignored files never reach the image', async () => {
    await client.createBackend('ignored', 'handler.js:files', {
      replicaOptions: { runtimeEnv: { context: join(FIXTURES, 'env-ignored') } },
    });
    await client.createEndpoint('ignored', { backend: 'ignored', route: '/ignored' });
    expect(await json('/ignored')).toEqual({
      'handler.js': true,
      'secret.env': false,
      'cache/data.bin': false,
      'old.bak': false,
      'keep.bak': true,
      'notes/a.tmp': false,
      'notes/b.txt': true,
    });
  });
});

describe('builds without a CA setting', () => {
  let client: Client;

  beforeAll(async () => {
    ({ client } = await startFlotilla({ buildCaFile: '' }));
  });
  afterAll(() => client.shutdown());

  it('fails an npm install behind the TLS-intercepting proxy with BUILD_FAILED naming FLOTILLA_BUILD_CA_FILE', async () => {
    await expect(
      client.createBackend('noca', isNumberVersion, { replicaOptions: { runtimeEnv: { packages: { 'is-number': '7.0.0' } } } }),
    ).rejects.toMatchObject({ code: 'BUILD_FAILED', message: expect.stringMatching(/FLOTILLA_BUILD_CA_FILE[\s\S]*CERT/) });
  });
});

describe('builds with a registry that needs credentials', () => {
  const instance = `test-${shortId(3)}`;
  let client: Client;
  let registry: string;

  beforeAll(async () => {
    // A registry stand-in on the engine's default bridge that reports each request's credentials and refuses them.
    const answer = `require('http').createServer((q, s) => { console.log('auth', q.headers.authorization); s.writeHead(401); s.end(); }).listen(4873)`;
    registry = execFileSync('docker', ['run', '-d', '--label', `${LABELS.instance}=${instance}`, BASE, 'node', '-e', answer], {
      encoding: 'utf8',
    }).trim();
    const address = execFileSync('docker', ['inspect', '-f', '{{.NetworkSettings.IPAddress}}', registry], { encoding: 'utf8' }).trim();
    ({ client } = await startFlotilla({ instance, npmRegistry: `http://builder:s3cr3t@${address}:4873/` }));
  });
  afterAll(() => client.shutdown());

  it('hands npm the credentials, and keeps them out of the BUILD_FAILED error and its log', async () => {
    const failure = await client
      .createBackend('private', isNumberVersion, { replicaOptions: { runtimeEnv: { packages: { 'is-number': '7.0.0' } } } })
      .then(
        () => undefined,
        (error: unknown) => error as { code: string; message: string; details: { log: string[] } },
      );
    expect(failure).toMatchObject({ code: 'BUILD_FAILED', message: expect.stringMatching(/401|E401|auth/i) });
    expect(JSON.stringify(failure?.details)).toMatch(/builder:\*\*\*@|npmrc/);
    expect(`${failure?.message}\n${JSON.stringify(failure?.details)}`).not.toContain('s3cr3t');
    const seen = execFileSync('docker', ['logs', registry], { encoding: 'utf8' });
    expect(seen).toContain(`auth Basic ${Buffer.from('builder:s3cr3t').toString('base64')}`);
  });
});

describe('build context limits', () => {
  let client: Client;
  let instance: string;

  beforeAll(async () => {
    ({ client, instance } = await startFlotilla({ maxContextMb: 1 }));
  });
  afterAll(() => client.shutdown());

  it('refuses a context larger than FLOTILLA_MAX_CONTEXT_MB, and counts only what .dockerignore lets through', async () => {
    const context = mkdtempSync(join(tmpdir(), 'flt-big-'));
    cpSync(join(FIXTURES, 'my-backend'), context, { recursive: true });
    writeFileSync(join(context, 'weights.bin'), Buffer.alloc(2 * 1024 * 1024, 7));
    const options = { replicaOptions: { runtimeEnv: { context } } };
    await expect(client.createBackend('big', 'handlers/echo.js:Echo', options)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(
        /^the build context of backend 'big' is larger than FLOTILLA_MAX_CONTEXT_MB \(option maxContextMb, 1 MB\)/,
      ),
      details: { issues: [{ path: ['replicaOptions', 'runtimeEnv', 'context'], message: expect.any(String) }] },
    });
    expect(await client.listBackends()).toEqual({});
    expect(containersOf(instance)).toEqual([]);

    writeFileSync(join(context, '.dockerignore'), 'weights.bin\n');
    await deployEndpoint(client, 'big', 'handlers/echo.js:Echo', { ...options, initArgs: ['small'] });
    expect(await (await fetch(`${client.httpUrl}/big`)).json()).toMatchObject({ arg: 'small' });
    rmSync(context, { recursive: true, force: true });
  });

  it('builds a context holding a dangling symlink that its .dockerignore rules, with an exception, match', async () => {
    const context = mkdtempSync(join(tmpdir(), 'flt-lock-'));
    cpSync(join(FIXTURES, 'my-backend'), context, { recursive: true });
    writeFileSync(join(context, '.dockerignore'), '*.log\n!keep.log\n');
    symlinkSync('/nonexistent/editor@host.4242', join(context, '.#echo.js.log'));
    await deployEndpoint(client, 'locked', 'handlers/echo.js:Echo', { replicaOptions: { runtimeEnv: { context } }, initArgs: ['lock'] });
    expect(await (await fetch(`${client.httpUrl}/locked`)).json()).toMatchObject({ arg: 'lock' });
    rmSync(context, { recursive: true, force: true });
  });

  it('refuses the filesystem root as a context', async () => {
    await expect(client.createBackend('root', 'x.js', { replicaOptions: { runtimeEnv: { context: '/' } } })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/'\/' is the filesystem root/),
      details: { issues: [{ path: ['replicaOptions', 'runtimeEnv', 'context'], message: expect.any(String) }] },
    });
    expect(Object.keys(await client.listBackends()).sort()).toEqual(['big', 'locked']);
  });
});
