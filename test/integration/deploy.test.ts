import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/index.js';
import { deployAppFile } from '../../src/cli/deploy.js';
import { containersOf, FIXTURES, inspect, startFlotilla } from './harness.js';
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
