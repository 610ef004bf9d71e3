import { describe, expect, it } from 'vitest';
import {
  DEFAULT_AUTOSCALING_CONFIG,
  DEFAULT_BACKEND_CONFIG,
  validateBackendOptions,
  validateConfigPatch,
  validateEndpointOptions,
  validateMethods,
  validateName,
  validateProportion,
  validateResources,
  validateRoute,
  validateTraffic,
} from '../../src/spec/validation.js';
import { issuesOf, type Issue } from '../../src/common/issues.js';

const invalid = { code: 'INVALID_ARGUMENT' };

/** The issues a validator reports, or [] when it accepts. */
function issues(run: () => unknown): Issue[] {
  try {
    run();
    return [];
  } catch (error) {
    const found = issuesOf(error);
    if (found === undefined) throw error;
    return found;
  }
}

describe('names', () => {
  it('accepts letters, digits, _ and -', () => {
    expect(validateName('simple_backend-2', 'backend')).toBe('simple_backend-2');
  });
  it.each(['', '-x', 'a b', 'a/b', 'a.b', 'x'.repeat(64), 42, undefined])('refuses %j', (name) => {
    expect(() => validateName(name, 'backend')).toThrow(expect.objectContaining(invalid));
  });
});

describe('routes', () => {
  it('normalizes a trailing slash', () => {
    expect(validateRoute('/simple/')).toBe('/simple');
    expect(validateRoute('/')).toBe('/');
  });
  it('takes path parameters as whole segments', () => {
    expect(validateRoute('/api/{username}/')).toBe('/api/{username}');
    expect(validateRoute('/{a}/x/{b_2}')).toBe('/{a}/x/{b_2}');
  });

  it.each(['/api/{id:int}', '/api/a{x}', '/api/{}', '/api/{1x}', '/api/{x', '/{x}/{x}'])('refuses the path parameters of %j', (route) => {
    expect(() => validateRoute(route)).toThrow(expect.objectContaining(invalid));
  });

  it.each(['simple', '', '/a b', '/a?x=1', '/a#f', '//a', '/-/routes', '/-', 7])('refuses %j', (route) => {
    expect(() => validateRoute(route)).toThrow(expect.objectContaining(invalid));
  });
});

describe('methods', () => {
  it('defaults to GET and upper-cases', () => {
    expect(validateMethods(undefined)).toEqual(['GET']);
    expect(validateMethods(['get', 'POST', 'post'])).toEqual(['GET', 'POST']);
  });
  it.each([[[]], [['FETCH']], ['GET'], [[1]]])('refuses %j', (methods) => {
    expect(() => validateMethods(methods)).toThrow(expect.objectContaining(invalid));
  });
  it('says it got a string when given one method instead of a list', () => {
    expect(issues(() => validateMethods('get'))).toEqual([
      { path: [], message: 'must be a list of HTTP methods, e.g. [GET], not the string "get"' },
    ]);
    expect(() => validateMethods('GET')).toThrow('methods must be a list of HTTP methods, e.g. [GET], not the string "GET"');
  });
});

describe('backend config', () => {
  it('fills defaults', () => {
    expect(validateBackendOptions(undefined).config).toEqual(DEFAULT_BACKEND_CONFIG);
    expect(validateBackendOptions({ config: { numReplicas: 3 } }).config).toEqual({ ...DEFAULT_BACKEND_CONFIG, numReplicas: 3 });
    expect(DEFAULT_BACKEND_CONFIG).toEqual({
      numReplicas: 1,
      maxConcurrentQueries: 100,
      userConfig: null,
      maxBatchSize: 1,
      batchWaitTimeoutS: 0,
      maxQueuedRequests: 1000,
      requestTimeoutS: null,
      gracefulShutdownTimeoutS: 20,
      autoscaling: null,
    });
  });
  it('fills an autoscaling block with Ray Serve 2.x defaults and starts it at initialReplicas, else minReplicas', () => {
    const config = validateBackendOptions({ config: { autoscaling: { minReplicas: 0, maxReplicas: 4 } } }).config;
    expect(config.autoscaling).toEqual({ ...DEFAULT_AUTOSCALING_CONFIG, minReplicas: 0, maxReplicas: 4 });
    expect(config.numReplicas).toBe(0);
    expect(DEFAULT_AUTOSCALING_CONFIG).toMatchObject({ minReplicas: 1, maxReplicas: 1, targetOngoingRequests: 2, upscaleDelayS: 30 });
    expect(DEFAULT_AUTOSCALING_CONFIG).toMatchObject({ downscaleDelayS: 600, lookBackPeriodS: 30, smoothingFactor: 1 });
    const initial = validateBackendOptions({ config: { autoscaling: { minReplicas: 1, initialReplicas: 3, maxReplicas: 5 } } });
    expect(initial.config.numReplicas).toBe(3);
  });
  it('refuses numReplicas beside autoscaling, and bad autoscaling values, with the path of each', () => {
    const issues = (options: unknown) => {
      try {
        validateBackendOptions(options);
      } catch (error) {
        return issuesOf(error)?.map((issue) => issue.path.join('.'));
      }
      return [];
    };
    expect(issues({ config: { numReplicas: 2, autoscaling: { maxReplicas: 3 } } })).toEqual(['config.numReplicas', 'config.autoscaling']);
    expect(issues({ config: { autoscaling: { minReplicas: 3, maxReplicas: 2 } } })).toEqual(['config.autoscaling.maxReplicas']);
    expect(issues({ config: { autoscaling: { maxReplicas: 2, initialReplicas: 5 } } })).toEqual(['config.autoscaling.initialReplicas']);
    expect(issues({ config: { autoscaling: { targetOngoingRequests: 0, upscaleDelayS: -1, maxReplica: 2 } } })).toEqual([
      'config.autoscaling.maxReplica',
      'config.autoscaling.targetOngoingRequests',
      'config.autoscaling.upscaleDelayS',
    ]);
    expect(issues({ config: { autoscaling: 4 } })).toEqual(['config.autoscaling']);
    expect(() => validateConfigPatch({ numReplicas: 2, autoscaling: { maxReplicas: 2 } })).toThrow(
      'config.numReplicas: numReplicas and autoscaling exclude each other',
    );
    expect(validateConfigPatch({ numReplicas: 2, autoscaling: null })).toEqual({ numReplicas: 2, autoscaling: null });
  });
  it('keeps only the given keys of a patch', () => {
    expect(validateConfigPatch({ maxConcurrentQueries: 4 })).toEqual({ maxConcurrentQueries: 4 });
    expect(validateConfigPatch({ userConfig: { threshold: 0.99 }, requestTimeoutS: null })).toEqual({
      userConfig: { threshold: 0.99 },
      requestTimeoutS: null,
    });
  });
  it.each([
    [{ numReplicas: -1 }, ['numReplicas'], 'must be an integer from 0 to 1000, got -1'],
    [{ numReplicas: 1.5 }, ['numReplicas'], 'must be an integer from 0 to 1000, got 1.5'],
    [{ numReplicas: '2' }, ['numReplicas'], 'must be an integer from 0 to 1000, got "2"'],
    [{ maxConcurrentQueries: 0 }, ['maxConcurrentQueries'], 'must be an integer from 1 to 1000000, got 0'],
    [
      { replicas: 2 },
      ['replicas'],
      expect.stringMatching(/^unknown key \(did you mean numReplicas\?\); allowed: numReplicas, maxConcurrentQueries, /),
    ],
    [{ userConfig: { f: () => 1 } }, ['userConfig'], 'must be a JSON value (or null for none)'],
    [{ maxBatchSize: 0 }, ['maxBatchSize'], 'must be an integer from 1 to 10000, got 0'],
    [{ batchWaitTimeoutS: -0.1 }, ['batchWaitTimeoutS'], 'must be a number of seconds from 0 to 3600, got -0.1'],
    [{ maxQueuedRequests: -1 }, ['maxQueuedRequests'], 'must be an integer from 0 to 1000000, got -1'],
    [{ requestTimeoutS: 0 }, ['requestTimeoutS'], 'must be a number of seconds above 0 up to 86400, got 0'],
    [{ gracefulShutdownTimeoutS: Infinity }, ['gracefulShutdownTimeoutS'], 'must be a number of seconds from 0 to 3600, got Infinity'],
  ])('refuses %j, reporting the key as the path', (patch, path, message) => {
    expect(issues(() => validateConfigPatch(patch))).toEqual([{ path, message }]);
    expect(() => validateConfigPatch(patch)).toThrow(
      expect.objectContaining({ ...invalid, message: expect.stringMatching(`^config.${path[0]}: `) }),
    );
  });
  it('reports every problem of the options at once, each with its path from the options', () => {
    const options = {
      initArgz: [],
      initArgs: [() => 1],
      config: { numReplicas: -1, replicas: 2 },
      replicaOptions: { numCpus: 'two', env: { FLOTILLA_X: 'y', OK: 3 }, runtimeEnv: { port: 80, contxt: '.' } },
    };
    expect(issues(() => validateBackendOptions(options))).toEqual([
      { path: ['initArgz'], message: 'unknown key (did you mean initArgs?); allowed: initArgs, config, replicaOptions' },
      { path: ['initArgs'], message: expect.stringMatching(/^must be an array of JSON values/) },
      { path: ['config', 'replicas'], message: expect.stringMatching(/^unknown key/) },
      { path: ['config', 'numReplicas'], message: 'must be an integer from 0 to 1000, got -1' },
      {
        path: ['replicaOptions', 'runtimeEnv', 'contxt'],
        message: expect.stringMatching(/^unknown key \(did you mean context\?\); allowed: runtime, context, /),
      },
      { path: ['replicaOptions', 'runtimeEnv', 'port'], message: 'is the port of an existing HTTP container; set runtimeEnv.image too' },
      { path: ['replicaOptions', 'numCpus'], message: 'must be a number of CPUs from 0 to 1024 (fractions allowed), got "two"' },
      { path: ['replicaOptions', 'env', 'FLOTILLA_X'], message: "'FLOTILLA_X' is set by Flotilla and cannot be overridden" },
      { path: ['replicaOptions', 'env', 'OK'], message: 'must be a string, got 3' },
    ]);
    expect(() => validateBackendOptions(options)).toThrow(
      /^initArgz: unknown key \(did you mean initArgs\?\); .*; replicaOptions\.runtimeEnv\.port: is the port .*; replicaOptions\.env\.OK: must be a string, got 3$/,
    );
  });
  it('refuses options that are not an object, and a replicaOptions key it does not know', () => {
    expect(issues(() => validateBackendOptions('x'))).toEqual([
      { path: [], message: 'createBackend options must be an object with any of initArgs, config, replicaOptions' },
    ]);
    expect(issues(() => validateBackendOptions({ replicaOptions: { cpus: 1 } }))).toEqual([
      {
        path: ['replicaOptions', 'cpus'],
        message: expect.stringMatching(
          /^unknown key \(did you mean numCpus\?\); allowed: runtimeEnv, numCpus, cpuLimit, memoryMb, numGpus, env/,
        ),
      },
    ]);
  });
});

describe('placement constraints', () => {
  it("keeps Swarm's node constraints and refuses others, each at its index", () => {
    expect(validateResources({ placementConstraints: ['node.hostname==worker-1', 'node.labels.zone != a'] }).placementConstraints).toEqual([
      'node.hostname==worker-1',
      'node.labels.zone != a',
    ]);
    expect(issues(() => validateResources({ placementConstraints: ['engine.labels.x==1', 7] }))).toEqual([
      {
        path: ['placementConstraints', '0'],
        message: expect.stringMatching(/^must be node.hostname, .*got "engine.labels.x==1"$/),
      },
      { path: ['placementConstraints', '1'], message: expect.stringMatching(/got 7$/) },
    ]);
  });
});

describe('endpoint options', () => {
  it('normalizes and defaults', () => {
    expect(validateEndpointOptions({ backend: 'b', route: '/x/' })).toEqual({ backend: 'b', route: '/x', methods: ['GET'] });
    expect(validateEndpointOptions({ backend: 'b' }).route).toBeNull();
    expect(validateEndpointOptions({ backend: 'b', allowCallMethod: true }).allowCallMethod).toBe(true);
    expect(validateEndpointOptions({ backend: 'b', allowCallMethod: false })).not.toHaveProperty('allowCallMethod');
    expect(issues(() => validateEndpointOptions({ backend: 'b', allowCallMethod: 'yes' }))).toEqual([
      { path: ['allowCallMethod'], message: 'must be true or false, got "yes"' },
    ]);
  });
  it('refuses options that are not an object', () => {
    expect(issues(() => validateEndpointOptions(undefined))).toEqual([
      { path: [], message: 'createEndpoint options must be an object with any of backend, route, methods, allowCallMethod' },
    ]);
  });
  it('refuses unknown keys and a missing backend', () => {
    expect(issues(() => validateEndpointOptions({ backend: 'b', path: '/x' }))).toEqual([
      { path: ['path'], message: 'unknown key; allowed: backend, route, methods, allowCallMethod' },
    ]);
    expect(issues(() => validateEndpointOptions({ route: 'x', methods: ['GET', 'FETCH'] }))).toEqual([
      { path: ['backend'], message: 'is required: the name of the backend that serves the endpoint' },
      { path: ['route'], message: `"x" is invalid: a route is a path starting with '/'` },
      { path: ['methods', 1], message: expect.stringMatching(/^"FETCH" is not an HTTP method; use one of GET, /) },
    ]);
  });
});

describe('traffic', () => {
  it('accepts weights that sum to 1 within 1e-8', () => {
    expect(validateTraffic({ a: 0.1, b: 0.2, c: 0.7 })).toEqual({ a: 0.1, b: 0.2, c: 0.7 });
    expect(validateTraffic({ a: 1 / 3, b: 1 / 3, c: 1 / 3 })).toBeDefined();
    expect(validateTraffic({ a: 1, b: 0 })).toEqual({ a: 1, b: 0 });
  });
  it.each([[{}], [{ a: 0.5 }], [{ a: 1.1, b: -0.1 }], [{ a: '1' }], [{ 'bad name': 1 }], [[1]], [null]])('refuses %j', (weights) => {
    expect(() => validateTraffic(weights)).toThrow(expect.objectContaining(invalid));
  });
  it('reports a bad weight at its backend, and a bad sum at the weights', () => {
    expect(issues(() => validateTraffic({ a: 1.1, 'bad name': -0.1 }))).toEqual([
      { path: ['bad name'], message: expect.stringMatching(/^backend name "bad name" is invalid/) },
      { path: ['bad name'], message: 'must be a number >= 0, got -0.1' },
    ]);
    expect(issues(() => validateTraffic({ a: 0.5 }))).toEqual([{ path: [], message: 'weights must sum to 1, they sum to 0.5' }]);
    expect(() => validateTraffic({ a: -1 })).toThrow('traffic.a: must be a number >= 0, got -1');
    expect(() => validateTraffic({ a: 0.5 })).toThrow('traffic weights must sum to 1, they sum to 0.5');
  });
  it('checks shadow proportions', () => {
    expect(validateProportion(0)).toBe(0);
    expect(validateProportion(1)).toBe(1);
    expect(() => validateProportion(1.01)).toThrow(/from 0 to 1/);
    expect(() => validateProportion(Number.NaN)).toThrow(/from 0 to 1/);
  });
});

describe('replica resources', () => {
  it('keeps cpuLimit only when given, as a cap at or above numCpus', () => {
    expect(validateResources({ numCpus: 0.1 })).toEqual({ numCpus: 0.1, memoryMb: null, numGpus: 0, env: {} });
    expect(validateResources({ numCpus: 0.1, cpuLimit: 0.1 })).toMatchObject({ numCpus: 0.1, cpuLimit: 0.1 });
    expect(validateResources({ numCpus: 0, cpuLimit: 2 })).toMatchObject({ numCpus: 0, cpuLimit: 2 });
  });
  it.each([[{ cpuLimit: 0 }], [{ cpuLimit: '1' }], [{ cpuLimit: 2000 }], [{ numCpus: 1, cpuLimit: 0.5 }]])('refuses %j', (options) => {
    expect(() => validateResources(options)).toThrow(expect.objectContaining(invalid));
  });
});
