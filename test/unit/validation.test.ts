import { describe, expect, it } from 'vitest';
import {
  DEFAULT_BACKEND_CONFIG,
  validateBackendOptions,
  validateConfigPatch,
  validateEndpointOptions,
  validateMethods,
  validateName,
  validateProportion,
  validateRoute,
  validateTraffic,
} from '../../src/controller/validation.js';

const invalid = { code: 'INVALID_ARGUMENT' };

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
    });
  });
  it('keeps only the given keys of a patch', () => {
    expect(validateConfigPatch({ maxConcurrentQueries: 4 })).toEqual({ maxConcurrentQueries: 4 });
    expect(validateConfigPatch({ userConfig: { threshold: 0.99 }, requestTimeoutS: null })).toEqual({
      userConfig: { threshold: 0.99 },
      requestTimeoutS: null,
    });
  });
  it.each([
    [{ numReplicas: -1 }, /numReplicas/],
    [{ numReplicas: 1.5 }, /numReplicas/],
    [{ numReplicas: '2' }, /numReplicas/],
    [{ maxConcurrentQueries: 0 }, /maxConcurrentQueries/],
    [{ replicas: 2 }, /unknown key replicas/],
    [{ userConfig: { f: () => 1 } }, /userConfig must be a JSON value/],
    [{ maxBatchSize: 0 }, /maxBatchSize/],
    [{ batchWaitTimeoutS: -0.1 }, /batchWaitTimeoutS/],
    [{ maxQueuedRequests: -1 }, /maxQueuedRequests/],
    [{ requestTimeoutS: 0 }, /requestTimeoutS must be a number of seconds above 0/],
    [{ gracefulShutdownTimeoutS: Infinity }, /gracefulShutdownTimeoutS/],
  ])('refuses %j', (patch, message) => {
    expect(() => validateConfigPatch(patch)).toThrow(message);
  });
  it('refuses unknown options and non-JSON init args', () => {
    expect(() => validateBackendOptions({ initArgz: [] })).toThrow(/unknown key initArgz/);
    expect(() => validateBackendOptions({ initArgs: [() => 1] })).toThrow(/JSON values/);
    expect(() => validateBackendOptions({ initArgs: 'x' })).toThrow(/array/);
    expect(() => validateBackendOptions({ replicaOptions: { runtimeEnv: { contxt: '.' } } })).toThrow(/unknown key contxt/);
  });
});

describe('endpoint options', () => {
  it('normalizes and defaults', () => {
    expect(validateEndpointOptions({ backend: 'b', route: '/x/' })).toEqual({ backend: 'b', route: '/x', methods: ['GET'] });
    expect(validateEndpointOptions({ backend: 'b' }).route).toBeNull();
  });
  it('refuses unknown keys and a missing backend', () => {
    expect(() => validateEndpointOptions({ backend: 'b', path: '/x' })).toThrow(/unknown key path/);
    expect(() => validateEndpointOptions({ route: '/x' })).toThrow(/backend name/);
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
  it('checks shadow proportions', () => {
    expect(validateProportion(0)).toBe(0);
    expect(validateProportion(1)).toBe(1);
    expect(() => validateProportion(1.01)).toThrow(/from 0 to 1/);
    expect(() => validateProportion(Number.NaN)).toThrow(/from 0 to 1/);
  });
});
