import { describe, expect, it } from 'vitest';
import { validateRuntimeEnv } from '../../src/spec/runtime-env.js';
import { issuesOf } from '../../src/common/issues.js';
import { validateBackendOptions } from '../../src/spec/validation.js';

describe('validateRuntimeEnv', () => {
  it('defaults to the node runtime with nothing to install', () => {
    expect(validateRuntimeEnv(undefined)).toEqual({
      runtime: 'node',
      context: undefined,
      packages: undefined,
      dockerfile: undefined,
      buildArgs: undefined,
      image: undefined,
      port: undefined,
      healthPath: undefined,
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

  it('refuses unknown keys and bad values with INVALID_ARGUMENT, each at its path', () => {
    const refuses = (value: unknown, path: (string | number)[], message: RegExp) => {
      let thrown: unknown;
      try {
        validateRuntimeEnv(value);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(issuesOf(thrown)).toEqual([{ path, message: expect.stringMatching(message) }]);
    };
    refuses(
      { contxt: '.' },
      ['contxt'],
      /^unknown key; allowed: runtime, context, packages, dockerfile, buildArgs, image, port, healthPath, pip, apt$/,
    );
    refuses({ runtime: 'ruby' }, ['runtime'], /must be one of node, python/);
    refuses({ context: '' }, ['context'], /must be a directory path/);
    refuses({ packages: [] }, ['packages'], /must be a non-empty object/);
    refuses({ packages: { 'Bad Name': '1' } }, ['packages', 'Bad Name'], /invalid name "Bad Name"/);
    refuses({ packages: { 'is-number': 7 } }, ['packages', 'is-number'], /must be a non-empty string/);
    refuses({ packages: { 'is-number': '7; rm -rf /' } }, ['packages', 'is-number'], /not an npm version/);
    refuses({ runtime: 'python', packages: { numpy: '1' } }, ['packages'], /node runtime only/);
    refuses({ dockerfile: 'Dockerfile' }, ['dockerfile'], /needs a context/);
    refuses({ context: '.', dockerfile: '../Dockerfile' }, ['dockerfile'], /must be a path inside the context/);
    refuses({ context: '.', dockerfile: '/etc/Dockerfile' }, ['dockerfile'], /must be a path inside the context/);
    refuses({ context: '.', dockerfile: 'Dockerfile', packages: { a: '1' } }, ['packages'], /cannot be combined with a dockerfile/);
    refuses({ context: '.', buildArgs: { A: 'b' } }, ['buildArgs'], /set runtimeEnv.dockerfile too/);
    refuses({ context: '.', dockerfile: 'Dockerfile', buildArgs: { 'A-B': 'b' } }, ['buildArgs', 'A-B'], /invalid name "A-B"/);
    expect(() => validateRuntimeEnv({ runtime: 'ruby' })).toThrow(
      'replicaOptions.runtimeEnv.runtime: must be one of node, python, got "ruby"',
    );
  });

  it('takes pip requirements and Debian packages for Python backends only', () => {
    expect(validateRuntimeEnv({ runtime: 'python', pip: [' numpy==1.26.4 '], apt: ['python3-numpy'] })).toMatchObject({
      pip: ['numpy==1.26.4'],
      apt: ['python3-numpy'],
    });
    const issues = (value: unknown) => {
      try {
        validateRuntimeEnv(value);
      } catch (error) {
        return issuesOf(error);
      }
      return [];
    };
    expect(issues({ pip: ['numpy'] })).toEqual([{ path: ['pip'], message: expect.stringMatching(/python runtime only/) }]);
    expect(issues({ runtime: 'python', pip: [] })).toEqual([{ path: ['pip'], message: expect.stringMatching(/non-empty list/) }]);
    expect(issues({ runtime: 'python', pip: ['a\nb'] })).toEqual([{ path: ['pip'], message: expect.stringMatching(/non-empty list/) }]);
    expect(issues({ runtime: 'python', apt: ['python3-numpy; rm -rf /'] })).toEqual([
      { path: ['apt'], message: expect.stringMatching(/invalid Debian package names: python3-numpy; rm -rf \//) },
    ]);
    expect(issues({ runtime: 'python', context: '.', dockerfile: 'Dockerfile', apt: ['curl'] })).toEqual([
      { path: ['apt'], message: expect.stringMatching(/cannot be combined with a dockerfile/) },
    ]);
  });

  it('is what validateBackendOptions checks', () => {
    expect(() => validateBackendOptions({ replicaOptions: { runtimeEnv: { runtime: 'java' } } })).toThrow(
      expect.objectContaining({
        details: { issues: [{ path: ['replicaOptions', 'runtimeEnv', 'runtime'], message: expect.any(String) }] },
      }),
    );
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
    [{ port: 80 }, 'port', /set runtimeEnv.image too/],
    [{ image: 'a', healthPath: '/h' }, 'healthPath', /set runtimeEnv.image and runtimeEnv.port too/],
    [{ image: 'a', port: 70000 }, 'port', /must be a TCP port/],
    [{ image: 'a', port: 80, healthPath: 'h' }, 'healthPath', /starting with '\//],
    [{ image: 'a b' }, 'image', /image name/],
    [{ image: 'a', context: '/tmp' }, 'context', /cannot be combined with runtimeEnv.image/],
  ])('refuses %j at %s', (env, key, message) => {
    expect(() => validateRuntimeEnv(env)).toThrow(message);
    expect(() => validateRuntimeEnv(env)).toThrow(
      expect.objectContaining({ details: { issues: [{ path: [key], message: expect.any(String) }] } }),
    );
  });
});
