import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BackendInfo, BuildInfo, Client, EndpointInfo } from '../../src/api.js';
import { parseAppFile, type AppSpec } from '../../src/cli/app-file.js';
import { applyPlan, describeStep, planDeploy } from '../../src/cli/deploy.js';
import type { CurrentState, DeployStep } from '../../src/cli/deploy-steps.js';
import { FlotillaError } from '../../src/common/errors.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

const APP = `backends:
  echo:
    import: handlers/echo.js:Echo
    runtimeEnv: { context: ./my-backend }
    initArgs: [hello]
    config: { numReplicas: 1, userConfig: { threshold: 0.5 } }
    replicaOptions: { numCpus: 0.5 }
endpoints:
  echo:
    backend: echo
    route: /echo
    methods: [GET, POST]
`;

function parse(text: string): AppSpec {
  return parseAppFile(text, { file: 'app.yaml', baseDir: FIXTURES });
}

/** What a Flotilla that has applied `spec` reports. */
function stateOf(spec: AppSpec): CurrentState {
  const backends: Record<string, BackendInfo> = {};
  for (const [name, backend] of Object.entries(spec.backends)) {
    backends[name] = {
      ...backend.config,
      definition: backend.definition,
      initArgs: backend.initArgs,
      runtimeEnv: backend.runtimeEnv,
      resources: backend.resources,
      version: 'v1',
      contextDigest: null,
      rollout: null,
      autoscalingStatus: null,
    };
  }
  const endpoints: Record<string, EndpointInfo> = {};
  for (const [name, endpoint] of Object.entries(spec.endpoints)) {
    const { allowCallMethod } = endpoint;
    endpoints[name] = {
      route: endpoint.route,
      methods: endpoint.methods,
      traffic: endpoint.traffic,
      shadows: endpoint.shadows,
      ...(allowCallMethod ? { allowCallMethod } : {}),
    };
  }
  return { backends, endpoints };
}

function ops(steps: DeployStep[]): string[] {
  return steps.map((step) => `${step.op} ${'endpoint' in step ? step.endpoint : step.backend}`);
}

const running = stateOf(parse(APP));

describe('planDeploy', () => {
  it('creates backends, then endpoints, on a fresh Flotilla', () => {
    const steps = planDeploy(parse(APP), { backends: {}, endpoints: {} });
    expect(ops(steps)).toEqual(['createBackend echo', 'createEndpoint echo']);
    expect(steps.map(describeStep)).toEqual([
      'creating backend echo (building image, starting 1 replica)…',
      'creating endpoint echo at GET,POST /echo → echo',
    ]);
  });

  it('creates an endpoint with its heaviest backend, then sets its traffic and shadows', () => {
    const text = `backends:\n  v1: { import: a.js }\n  v2: { import: b.js }\nendpoints:\n  api:\n    traffic: { v1: 0.2, v2: 0.8 }\n    shadows: { v1: 0.5 }\n`;
    const steps = planDeploy(parse(text), { backends: {}, endpoints: {} });
    expect(steps.slice(2)).toEqual([
      { op: 'createEndpoint', endpoint: 'api', backend: 'v2', route: null, methods: ['GET'] },
      { op: 'setTraffic', endpoint: 'api', traffic: { v1: 0.2, v2: 0.8 }, previous: { v2: 1 } },
      { op: 'shadowTraffic', endpoint: 'api', backend: 'v1', proportion: 0.5, previous: 0 },
    ]);
  });

  it('plans nothing for the file that is running', () => {
    expect(planDeploy(parse(APP), running)).toEqual([]);
  });

  it('compares contexts as absolute paths and methods as sets', () => {
    const echo = running.backends.echo as BackendInfo;
    const relative = join('test', 'fixtures', 'my-backend');
    const state: CurrentState = {
      backends: { echo: { ...echo, runtimeEnv: { context: relative } } },
      endpoints: { echo: { ...(running.endpoints.echo as EndpointInfo), methods: ['POST', 'GET'] } },
    };
    expect(planDeploy(parse(APP.replace('./my-backend', join(process.cwd(), relative))), state)).toEqual([]);
  });

  it('changes only the config keys that changed, without rebuilding', () => {
    const steps = planDeploy(parse(APP.replace('numReplicas: 1', 'numReplicas: 3')), running);
    expect(steps).toEqual([{ op: 'updateBackendConfig', backend: 'echo', changes: { numReplicas: 3 }, previous: { numReplicas: 1 } }]);
    expect(describeStep(steps[0] as DeployStep)).toBe('echo: numReplicas 1 → 3');
  });

  it("turns autoscaling on from an app file, and leaves an autoscaled backend's numReplicas to the autoscaler", () => {
    const autoscaled = APP.replace('numReplicas: 1', 'autoscaling: { minReplicas: 0, maxReplicas: 4 }');
    const spec = parse(autoscaled);
    expect(spec.backends.echo?.config).toMatchObject({
      numReplicas: 0,
      autoscaling: { minReplicas: 0, maxReplicas: 4, targetOngoingRequests: 2 },
    });
    const steps = planDeploy(spec, running);
    expect(steps).toEqual([
      {
        op: 'updateBackendConfig',
        backend: 'echo',
        changes: { autoscaling: spec.backends.echo?.config.autoscaling },
        previous: { autoscaling: null },
      },
    ]);
    const scaledByItself = stateOf(spec);
    (scaledByItself.backends.echo as BackendInfo).numReplicas = 3;
    expect(planDeploy(spec, scaledByItself)).toEqual([]);
  });

  it('refuses numReplicas beside autoscaling in an app file, at the line of each', () => {
    const both = APP.replace('numReplicas: 1,', 'numReplicas: 1, autoscaling: { maxReplicas: 2 },');
    const error = (() => {
      try {
        parse(both);
      } catch (caught) {
        return caught as FlotillaError;
      }
    })();
    expect(error?.details?.issues).toMatchObject([
      { line: 6, path: ['backends', 'echo', 'config', 'numReplicas'] },
      { line: 6, path: ['backends', 'echo', 'config', 'autoscaling'] },
    ]);
  });

  it('resets a config key the file no longer sets to its default', () => {
    const steps = planDeploy(parse(APP.replace(', userConfig: { threshold: 0.5 }', '')), running);
    expect(steps).toEqual([
      { op: 'updateBackendConfig', backend: 'echo', changes: { userConfig: null }, previous: { userConfig: { threshold: 0.5 } } },
    ]);
    expect(describeStep(steps[0] as DeployStep)).toBe('echo: userConfig {"threshold":0.5} → null');
  });

  it('creates a new backend before moving traffic to it', () => {
    const text = APP.replace(
      'endpoints:',
      '  echo-v2:\n    import: handlers/echo.js:Echo\n    runtimeEnv: { context: ./my-backend }\nendpoints:',
    );
    const steps = planDeploy(parse(`${text}    traffic: { echo: 0.9, echo-v2: 0.1 }\n`), running);
    expect(ops(steps)).toEqual(['createBackend echo-v2', 'setTraffic echo']);
    expect(describeStep(steps[1] as DeployStep)).toBe('echo: traffic echo 1 → echo 0.9, echo-v2 0.1');
  });

  it('scales a backend up before moving traffic to it, and down only after moving traffic away', () => {
    const text = `backends:\n  v1: { import: a.js, config: { numReplicas: 2 } }\n  v2: { import: b.js, config: { numReplicas: 1 } }\nendpoints:\n  api: { backend: v1 }\n`;
    const moved = text
      .replace('numReplicas: 2', 'numReplicas: 0')
      .replace('numReplicas: 1', 'numReplicas: 2')
      .replace('backend: v1', 'backend: v2');
    expect(ops(planDeploy(parse(moved), stateOf(parse(text))))).toEqual([
      'updateBackendConfig v2',
      'setTraffic api',
      'updateBackendConfig v1',
    ]);
  });

  it('deletes an endpoint that is no longer in the file, and keeps its backend if the file keeps it', () => {
    const text = APP.slice(0, APP.indexOf('endpoints:')) + 'endpoints: {}\n';
    expect(planDeploy(parse(text), running)).toEqual([{ op: 'deleteEndpoint', endpoint: 'echo', route: '/echo', recreate: false }]);
  });

  it('deletes a removed backend last, after the traffic and shadows that used it are gone', () => {
    const both = parse(
      `backends:\n  v1: { import: a.js }\n  v2: { import: b.js }\nendpoints:\n  api:\n    traffic: { v1: 0.5, v2: 0.5 }\n    shadows: { v1: 0.1 }\n  old: { backend: v1, route: /old }\n`,
    );
    const onlyV2 = parse(`backends:\n  v2: { import: b.js }\nendpoints:\n  api: { backend: v2 }\n`);
    const steps = planDeploy(onlyV2, stateOf(both));
    expect(ops(steps)).toEqual(['deleteEndpoint old', 'setTraffic api', 'shadowTraffic api', 'deleteBackend v1']);
    expect(steps[2]).toMatchObject({ backend: 'v1', proportion: 0 });
    expect(describeStep(steps[2] as DeployStep)).toBe('api: removing shadow v1');
  });

  it('recreates an endpoint whose route changed, freeing routes before taking them', () => {
    const before = parse(`backends:\n  b: { import: a.js }\nendpoints:\n  x: { backend: b, route: /x }\n  y: { backend: b, route: /y }\n`);
    const after = parse(`backends:\n  b: { import: a.js }\nendpoints:\n  x: { backend: b, route: /y }\n  y: { backend: b, route: /x }\n`);
    expect(ops(planDeploy(after, stateOf(before)))).toEqual([
      'deleteEndpoint x',
      'deleteEndpoint y',
      'createEndpoint x',
      'createEndpoint y',
    ]);
  });

  it('creates an endpoint with allowCallMethod, and recreates one whose allowCallMethod changed', () => {
    const closed = parse(`backends:\n  b: { import: a.js }\nendpoints:\n  x: { backend: b, route: /x }\n`);
    const open = parse(`backends:\n  b: { import: a.js }\nendpoints:\n  x: { backend: b, route: /x, allowCallMethod: true }\n`);
    expect(open.endpoints.x?.allowCallMethod).toBe(true);
    const steps = planDeploy(open, stateOf(closed));
    expect(ops(steps)).toEqual(['deleteEndpoint x', 'createEndpoint x']);
    expect(steps[1]).toMatchObject({ op: 'createEndpoint', allowCallMethod: true });
    expect(planDeploy(open, stateOf(open))).toEqual([]);
    expect(() => parse(`backends:\n  b: { import: a.js }\nendpoints:\n  x: { backend: b, allowCallMethod: yes please }\n`)).toThrow(
      /allowCallMethod/,
    );
  });

  it('restores traffic and shadows on a recreated endpoint', () => {
    const text = `backends:\n  v1: { import: a.js }\n  v2: { import: b.js }\nendpoints:\n  api:\n    route: /api\n    traffic: { v1: 0.5, v2: 0.5 }\n    shadows: { v2: 0.2 }\n`;
    const steps = planDeploy(parse(text.replace('/api', '/api2')), stateOf(parse(text)));
    expect(ops(steps)).toEqual(['deleteEndpoint api', 'createEndpoint api', 'setTraffic api', 'shadowTraffic api']);
  });

  it.each([
    ['import', APP.replace('handlers/echo.js:Echo', 'handlers/echo.js:Other'), 'import handlers/echo.js:Echo → handlers/echo.js:Other'],
    ['initArgs', APP.replace('[hello]', '[bye]'), 'initArgs ["hello"] → ["bye"]'],
    ['runtimeEnv', APP.replace('./my-backend', './env-ignored'), 'runtimeEnv {"context":'],
    ['replicaOptions', APP.replace('numCpus: 0.5', 'numCpus: 1'), 'replicaOptions.numCpus 0.5 → 1'],
  ])('rolls out a changed %s with its config in one updateBackend, before endpoint changes', (_what, text, change) => {
    const edited = parse(text.replace('numReplicas: 1', 'numReplicas: 2').replace('route: /echo', 'route: /echo2'));
    const steps = planDeploy(edited, running);
    expect(ops(steps)).toEqual(['updateBackend echo', 'deleteEndpoint echo', 'createEndpoint echo']);
    const [update] = steps;
    expect(update).toMatchObject({ op: 'updateBackend', spec: { config: { numReplicas: 2 } } });
    expect(describeStep(update!)).toContain(`rolling out a new version of echo: ${change}`);
  });

  it('rolls out when the files under a context changed, and not when they did not', () => {
    const echo = running.backends.echo as BackendInfo;
    const state = { ...running, backends: { echo: { ...echo, contextDigest: 'aaaa' } } };
    expect(planDeploy(parse(APP), state, { digests: { echo: 'aaaa' } })).toEqual([]);
    const steps = planDeploy(parse(APP), state, { digests: { echo: 'bbbb' } });
    expect(ops(steps)).toEqual(['updateBackend echo']);
    expect(describeStep(steps[0]!)).toMatch(/^rolling out a new version of echo: files under \/.*my-backend changed…$/);
  });

  it('compares every runtimeEnv key of an existing HTTP container backend', () => {
    const text = 'backends:\n  web:\n    import: server\n    runtimeEnv: { image: web:1, port: 8080 }\nendpoints: {}\n';
    const web = stateOf(parse(text));
    web.backends.web = { ...(web.backends.web as BackendInfo), runtimeEnv: { image: 'web:1', port: 8080, healthPath: '/' } };
    expect(planDeploy(parse(text), web)).toEqual([]);
    expect(describeStep(planDeploy(parse(text.replace('8080', '8081')), web)[0]!)).toBe(
      'rolling out a new version of web: runtimeEnv {"healthPath":"/","image":"web:1","port":8080,"runtime":"node"} → {"healthPath":"/","image":"web:1","port":8081,"runtime":"node"}…',
    );
  });

  it('rolls a backend that was created from shipped code over to the import path of the file', () => {
    const echo = running.backends.echo as BackendInfo;
    const state = { ...running, backends: { echo: { ...echo, definition: { kind: 'class' as const, name: 'Echo', sourceHash: 'abc' } } } };
    expect(describeStep(planDeploy(parse(APP), state)[0]!)).toContain('import a shipped class Echo → handlers/echo.js:Echo');
  });
});

describe('planDeploy on a machine of a given capacity', () => {
  const cpus = (count: number) => ({ cpus: count, memoryMb: 8192, gpus: [] });
  const pair = parse(`backends:\n  a: { import: a.js, config: { numReplicas: 2 } }\nendpoints:\n  api: { backend: a, route: /api }\n`);
  const swapped = parse(`backends:\n  b: { import: b.js, config: { numReplicas: 2 } }\nendpoints:\n  api: { backend: b, route: /api }\n`);

  it('keeps the plain order when every step fits', () => {
    expect(ops(planDeploy(swapped, stateOf(pair), { capacity: cpus(4) }))).toEqual([
      'createBackend b',
      'setTraffic api',
      'deleteBackend a',
    ]);
  });

  it('never starts an autoscaled successor at part of its initial count, which a later numReplicas would turn off', () => {
    const autoscaled = parse(
      `backends:\n  b: { import: b.js, config: { autoscaling: { initialReplicas: 2, maxReplicas: 4 } } }\nendpoints:\n  api: { backend: b, route: /api }\n`,
    );
    const steps = planDeploy(autoscaled, stateOf(pair), { capacity: cpus(2) });
    expect(steps.filter((step) => step.op === 'updateBackendConfig' && step.backend === 'b')).toEqual([]);
    expect(steps.find((step) => step.op === 'createBackend')).toMatchObject({ spec: { config: { numReplicas: 2 } } });
    expect(steps.find((step) => step.op === 'createBackend')).not.toHaveProperty('deferred');
  });

  it('replaces a backend with another on a full machine: shrinks the old one, starts what fits, moves the traffic, then the rest', () => {
    const steps = planDeploy(swapped, stateOf(pair), { capacity: cpus(2) });
    expect(ops(steps)).toEqual(['updateBackendConfig a', 'createBackend b', 'setTraffic api', 'deleteBackend a', 'updateBackendConfig b']);
    expect(steps[1]).toMatchObject({ spec: { config: { numReplicas: 1 } }, deferred: 1 });
    expect(steps.map(describeStep)).toEqual([
      'a: numReplicas 2 → 1 (to make room for b, keeping one replica serving until it is removed)',
      'creating backend b (building image, starting 1 replica; 1 more once there is room)…',
      'api: traffic a 1 → b 1',
      'deleting backend a (draining its replicas)…',
      'b: numReplicas 1 → 2 (the rest of its replicas, now that there is room)',
    ]);
  });

  it('deletes a backend that nothing routes to before a create that needs its room', () => {
    const before = parse(`backends:\n  idle: { import: a.js, config: { numReplicas: 2 } }\nendpoints: {}\n`);
    const after = parse(`backends:\n  fresh: { import: b.js, config: { numReplicas: 2 } }\nendpoints: {}\n`);
    expect(ops(planDeploy(after, stateOf(before), { capacity: cpus(2) }))).toEqual(['deleteBackend idle', 'createBackend fresh']);
  });

  it('scales down what the file scales down before a create that needs the room', () => {
    const before = parse(`backends:\n  a: { import: a.js, config: { numReplicas: 2 } }\nendpoints:\n  api: { backend: a }\n`);
    const after = parse(
      `backends:\n  a: { import: a.js, config: { numReplicas: 1 } }\n  c: { import: c.js }\nendpoints:\n  api: { backend: a }\n`,
    );
    expect(ops(planDeploy(after, stateOf(before), { capacity: cpus(4) }))).toEqual(['createBackend c', 'updateBackendConfig a']);
    const steps = planDeploy(after, stateOf(before), { capacity: cpus(2) });
    expect(ops(steps)).toEqual(['updateBackendConfig a', 'createBackend c']);
    expect(describeStep(steps[0]!)).toBe('a: numReplicas 2 → 1');
  });

  it('parks the old backend when not even one replica of its successor fits beside it, and says which endpoint answers 503', () => {
    const big = (name: string) =>
      `backends:\n  ${name}: { import: ${name}.js, replicaOptions: { numCpus: 2 } }\nendpoints:\n  api: { backend: ${name} }\n`;
    const steps = planDeploy(parse(big('b')), stateOf(parse(big('a'))), { capacity: cpus(2) });
    expect(ops(steps)).toEqual(['updateBackendConfig a', 'createBackend b', 'setTraffic api', 'deleteBackend a']);
    expect(describeStep(steps[0]!)).toBe(
      'a: numReplicas 1 → 0 (no room for b beside it: endpoint api answers 503 until b takes the traffic)',
    );
    // Shrinking a to one replica would not make room for b either: it makes way in one step.
    const fromTwo = planDeploy(parse(big('b')), stateOf(pair), { capacity: cpus(2) });
    expect(fromTwo.map(describeStep).slice(0, 2)).toEqual([
      'a: numReplicas 2 → 0 (no room for b beside it: endpoint api answers 503 until b takes the traffic)',
      'creating backend b (building image, starting 1 replica)…',
    ]);
  });

  it('says a rollout replaces in place when there is no room beside the old replicas', () => {
    const text = APP.replace('numReplicas: 1', 'numReplicas: 2').replace('numCpus: 0.5', 'numCpus: 1');
    const steps = planDeploy(parse(text.replace('[hello]', '[bye]')), stateOf(parse(text)), { capacity: cpus(2) });
    expect(steps).toEqual([expect.objectContaining({ op: 'updateBackend', inPlace: true })]);
    expect(describeStep(steps[0]!)).toBe(
      'rolling out a new version of echo: initArgs ["hello"] → ["bye"] (in place: no room for a new replica beside the old ones)…',
    );
    expect(planDeploy(parse(text.replace('[hello]', '[bye]')), stateOf(parse(text)), { capacity: cpus(3) })[0]).not.toHaveProperty(
      'inPlace',
    );
  });

  it('refuses a file that does not fit even once applied, naming the backend, what a replica asks and what is free', () => {
    const tooBig = parse(`backends:\n  b: { import: b.js, config: { numReplicas: 3 } }\nendpoints:\n  api: { backend: b, route: /api }\n`);
    expect(() => planDeploy(tooBig, stateOf(pair), { capacity: cpus(2) })).toThrow(
      expect.objectContaining({
        code: 'INSUFFICIENT_RESOURCES',
        message: expect.stringContaining(
          'the app file does not fit on this Flotilla even once applied: its replicas ask for 3 CPUs and no GPUs in all, ' +
            "and this Flotilla's replicas may reserve 2 CPUs, 8192 MB and no GPUs; nothing was changed:\n" +
            'app.yaml:2: backends.b: replica 3 of 3 does not fit on the machine, even alone: not enough resources: a replica needs 1 CPU, 0 of 2 free',
        ),
      }),
    );
  });
});

describe('applyPlan', () => {
  function fakeClient(failOn?: string, delayMs = 0, builds: BuildInfo[] = []): { client: Client; calls: string[] } {
    const calls: string[] = [];
    const call =
      (name: string) =>
      async (...args: unknown[]): Promise<void> => {
        calls.push(`${name} ${JSON.stringify(args)}`);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        if (name === failOn) throw new FlotillaError('ROUTE_TAKEN', "route '/echo' is already served by endpoint 'other'");
      };
    const client = {
      createBackend: call('createBackend'),
      updateBackendConfig: call('updateBackendConfig'),
      deleteBackend: call('deleteBackend'),
      createEndpoint: call('createEndpoint'),
      deleteEndpoint: call('deleteEndpoint'),
      setTraffic: call('setTraffic'),
      shadowTraffic: call('shadowTraffic'),
      listReplicas: async () => {
        throw new FlotillaError('BACKEND_NOT_FOUND', 'not yet');
      },
      listBuilds: async () => builds,
    } as unknown as Client;
    return { client, calls };
  }

  it('makes the calls of the plan in order and logs each', async () => {
    const { client, calls } = fakeClient();
    const lines: string[] = [];
    await applyPlan(client, planDeploy(parse(APP), { backends: {}, endpoints: {} }), (line) => lines.push(line));
    expect(calls[0]).toMatch(/^createBackend \["echo","handlers\/echo.js:Echo",\{"initArgs":\["hello"\],"config":\{"numReplicas":1,/);
    expect(calls[0]).toContain(
      `"replicaOptions":{"numCpus":0.5,"runtimeEnv":{"runtime":"node","context":"${join(FIXTURES, 'my-backend')}"}}`,
    );
    expect(calls[1]).toBe('createEndpoint ["echo",{"backend":"echo","methods":["GET","POST"],"route":"/echo"}]');
    expect(lines).toEqual([
      'creating backend echo (building image, starting 1 replica)…',
      'creating endpoint echo at GET,POST /echo → echo',
      'deployed: 2 changes',
    ]);
  });

  it('creates an existing HTTP container backend with its image, port and health path', async () => {
    const { client, calls } = fakeClient();
    const text =
      'backends:\n  web:\n    import: server\n    runtimeEnv: { image: web:1, port: 8080, healthPath: /healthz }\nendpoints: {}\n';
    await applyPlan(client, planDeploy(parse(text), { backends: {}, endpoints: {} }), () => undefined);
    expect(calls[0]).toContain('"replicaOptions":{"runtimeEnv":{"runtime":"node","image":"web:1","port":8080,"healthPath":"/healthz"}}');
  });

  it('creates an autoscaled backend with its autoscaling block and no numReplicas, which would exclude it', async () => {
    const { client, calls } = fakeClient();
    const text = APP.replace('numReplicas: 1', 'autoscaling: { minReplicas: 0, maxReplicas: 3 }');
    await applyPlan(client, planDeploy(parse(text), { backends: {}, endpoints: {} }), () => undefined);
    const options = (JSON.parse(calls[0]!.slice('createBackend '.length)) as unknown[])[2] as { config: Record<string, unknown> };
    expect(options.config).not.toHaveProperty('numReplicas');
    expect(options.config.autoscaling).toMatchObject({ minReplicas: 0, maxReplicas: 3 });
  });

  it('says so when there is nothing to change', async () => {
    const lines: string[] = [];
    await applyPlan(fakeClient().client, [], (line) => lines.push(line));
    expect(lines).toEqual(['nothing to change']);
  });

  it('logs progress while a long step runs', async () => {
    const lines: string[] = [];
    await applyPlan(
      fakeClient(undefined, 120).client,
      planDeploy(parse(APP), { backends: {}, endpoints: {} }).slice(0, 1),
      (line) => lines.push(line),
      {
        progressIntervalMs: 30,
      },
    );
    expect(lines).toContain('  echo: building image (0s)');
  });

  it('logs the step an image build is at', async () => {
    const lines: string[] = [];
    const build = { backend: 'echo', image: 'flotilla/backend:1', step: 'Step 3/7 : RUN npm ci', startedAt: new Date().toISOString() };
    await applyPlan(
      fakeClient(undefined, 120, [build]).client,
      planDeploy(parse(APP), { backends: {}, endpoints: {} }).slice(0, 1),
      (line) => lines.push(line),
      { progressIntervalMs: 30 },
    );
    expect(lines).toContain('  echo: building image, Step 3/7 : RUN npm ci (0s)');
  });

  it('stops at a failed step, keeping its code and saying what was applied', async () => {
    const { client, calls } = fakeClient('createEndpoint');
    const plan = planDeploy(parse(APP), { backends: {}, endpoints: {} });
    await expect(applyPlan(client, plan, () => undefined)).rejects.toThrow(
      expect.objectContaining({
        code: 'ROUTE_TAKEN',
        message: expect.stringMatching(/^creating endpoint echo at GET,POST \/echo → echo failed: route .*\n1 of 2 changes were applied/),
      }),
    );
    expect(calls).toHaveLength(2);
  });
});
