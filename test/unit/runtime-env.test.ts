import { describe, expect, it } from 'vitest';
import { validateRuntimeEnv } from '../../src/controller/runtime-env.js';
import { validateBackendOptions } from '../../src/controller/validation.js';

describe('validateRuntimeEnv', () => {
  it('defaults to the node runtime with nothing to install', () => {
    expect(validateRuntimeEnv(undefined)).toEqual({
      runtime: 'node',
      context: undefined,
      packages: undefined,
      dockerfile: undefined,
      buildArgs: undefined,
    });
  });

  it('accepts each documented key', () => {
    expect(validateRuntimeEnv({ packages: { 'is-number': '^7.0.0', '@scope/pkg': '1.2.3' } }).packages).toEqual({
      'is-number': '^7.0.0',
      '@scope/pkg': '1.2.3',
    });
    expect(validateRuntimeEnv({ runtime: 'python', context: './model' })).toMatchObject({ runtime: 'python', context: './model' });
    expect(
      validateRuntimeEnv({ runtime: 'python', context: '.', dockerfile: './docker/Dockerfile', buildArgs: { BASE: 'debian:trixie-slim' } }),
    ).toMatchObject({ dockerfile: 'docker/Dockerfile', buildArgs: { BASE: 'debian:trixie-slim' } });
  });

  it('refuses unknown keys and bad values with INVALID_ARGUMENT', () => {
    const refuses = (value: unknown, message: RegExp) =>
      expect(() => validateRuntimeEnv(value)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(message) }),
      );
    refuses({ contxt: '.' }, /unknown key contxt; allowed: runtime, context, packages, dockerfile, buildArgs/);
    refuses({ runtime: 'ruby' }, /runtime must be one of node, python/);
    refuses({ context: '' }, /context must be a directory path/);
    refuses({ packages: [] }, /packages must be a non-empty object/);
    refuses({ packages: { 'Bad Name': '1' } }, /invalid name "Bad Name"/);
    refuses({ packages: { 'is-number': 7 } }, /packages.is-number must be a non-empty string/);
    refuses({ packages: { 'is-number': '7; rm -rf /' } }, /not an npm version/);
    refuses({ runtime: 'python', packages: { numpy: '1' } }, /node runtime only/);
    refuses({ dockerfile: 'Dockerfile' }, /needs a context/);
    refuses({ context: '.', dockerfile: '../Dockerfile' }, /must be a path inside the context/);
    refuses({ context: '.', dockerfile: '/etc/Dockerfile' }, /must be a path inside the context/);
    refuses({ context: '.', dockerfile: 'Dockerfile', packages: { a: '1' } }, /cannot be combined with a dockerfile/);
    refuses({ context: '.', buildArgs: { A: 'b' } }, /set replicaOptions.runtimeEnv.dockerfile too/);
    refuses({ context: '.', dockerfile: 'Dockerfile', buildArgs: { 'A-B': 'b' } }, /invalid name "A-B"/);
  });

  it('is what validateBackendOptions checks', () => {
    expect(() => validateBackendOptions({ replicaOptions: { runtimeEnv: { runtime: 'java' } } })).toThrow(/runtime must be one of/);
    expect(validateBackendOptions({ replicaOptions: { runtimeEnv: { runtime: 'python', context: 'm' } } })).toMatchObject({
      contextDir: 'm',
      runtimeEnv: { runtime: 'python', context: 'm' },
    });
  });
});

describe('prebuilt images and plain HTTP containers', () => {
  it('takes an image as it is, with a port and a health path defaulting to /', () => {
    expect(validateRuntimeEnv({ image: 'nginx:1.25', port: 80 })).toMatchObject({ image: 'nginx:1.25', port: 80, healthPath: '/' });
    expect(validateRuntimeEnv({ image: 'registry.example/app@sha256:abc' })).toMatchObject({ port: undefined, healthPath: undefined });
  });
  it.each([
    [{ port: 80 }, /set replicaOptions.runtimeEnv.image too/],
    [{ image: 'a', healthPath: '/h' }, /set replicaOptions.runtimeEnv.image and replicaOptions.runtimeEnv.port too/],
    [{ image: 'a', port: 70000 }, /must be a TCP port/],
    [{ image: 'a', port: 80, healthPath: 'h' }, /starting with '\//],
    [{ image: 'a b' }, /image name/],
    [{ image: 'a', context: '/tmp' }, /cannot be combined/],
  ])('refuses %j', (env, message) => {
    expect(() => validateRuntimeEnv(env)).toThrow(message);
  });
});
