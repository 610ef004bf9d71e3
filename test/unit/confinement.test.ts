import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { confinementOf } from '../../src/spec/confinement.js';
import { prepareReplicaFiles, readControlSecret } from '../../src/controller/replica-files.js';
import { validateBackendOptions } from '../../src/spec/validation.js';

const invalid = { code: 'INVALID_ARGUMENT' };
const web = { image: 'nginx:1.25', port: 80 };
const settings = { replicaUser: '1000:1000', replicaPidsLimit: 64, replicaNetwork: 'replicas', transport: 'unix' as const };
const resources = { numCpus: 1, memoryMb: null, numGpus: 0, env: {} };

describe('confinement options', () => {
  it('are kept only when given', () => {
    expect(validateBackendOptions({}).resources).toEqual(resources);
    expect(validateBackendOptions({ replicaOptions: { readOnlyRootfs: false, network: 'none' } }).resources).toMatchObject({
      readOnlyRootfs: false,
      network: 'none',
    });
    expect(validateBackendOptions({ replicaOptions: { runtimeEnv: web, runAsImageUser: true } }).resources.runAsImageUser).toBe(true);
  });

  it.each([
    [{ readOnlyRootfs: 'no' }, 'readOnlyRootfs', /^must be true or false/],
    [{ network: 'host' }, 'network', /^must be 'isolated' or 'none'/],
    [{ runAsImageUser: 1 }, 'runAsImageUser', /^must be true or false/],
    [{ runAsImageUser: true }, 'runAsImageUser', /^is for plain HTTP containers/],
    [{ network: 'none', runtimeEnv: web }, 'network', /plain HTTP container .* needs a network/],
  ])('refuse %j at replicaOptions.%s', (replicaOptions, key, message) => {
    expect(() => validateBackendOptions({ replicaOptions })).toThrow(
      expect.objectContaining({
        ...invalid,
        message: expect.stringMatching(`^replicaOptions.${key}: `),
        details: { issues: [{ path: ['replicaOptions', key], message: expect.stringMatching(message) }] },
      }),
    );
  });

  it('default to replicaUser, a read-only root and the isolated network', () => {
    expect(confinementOf('b', resources, settings, false)).toEqual({
      user: '1000:1000',
      capAdd: [],
      readOnlyRootfs: true,
      network: { kind: 'isolated', name: 'replicas' },
      pidsLimit: 64,
    });
    expect(confinementOf('b', resources, settings, true).user).toBe('1000:1000');
    expect(confinementOf('b', { ...resources, runAsImageUser: true }, settings, true)).toMatchObject({
      user: undefined,
      capAdd: ['CHOWN', 'SETUID', 'SETGID'],
    });
    expect(confinementOf('b', { ...resources, readOnlyRootfs: false, network: 'none' }, settings, false)).toMatchObject({
      readOnlyRootfs: false,
      network: { kind: 'none' },
    });
  });

  it('refuse no network over the tcp transport', () => {
    expect(() => confinementOf('b', { ...resources, network: 'none' }, { ...settings, transport: 'tcp' }, false)).toThrow(
      expect.objectContaining({ ...invalid, message: expect.stringMatching(/needs the unix transport/) }),
    );
  });
});

describe('replica files', () => {
  const entry = { module: '/app/x.js', exportName: 'X', initArgs: ['a'.repeat(300_000)], maxBatchSize: 1 };

  it('hold the entry and a fresh secret per replica, private to the replica user', () => {
    const root = mkdtempSync(join(tmpdir(), 'flt-files-'));
    const first = prepareReplicaFiles(join(root, 'r1'), entry, '1000:1000');
    const second = prepareReplicaFiles(join(root, 'r2'), entry, '1000:1000');
    expect(first).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(second).not.toBe(first);
    const written = JSON.parse(readFileSync(join(root, 'r1', 'entry.json'), 'utf8')) as Record<string, unknown>;
    expect(written).toEqual({ ...entry, controlSecret: first, handleToken: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    expect(written.handleToken).not.toBe(JSON.parse(readFileSync(join(root, 'r2', 'entry.json'), 'utf8')).handleToken);
    expect(readControlSecret(join(root, 'r1'))).toBe(first);
    expect(readControlSecret(join(root, 'gone'))).toBeUndefined();
    const dir = statSync(join(root, 'r1'));
    const file = statSync(join(root, 'r1', 'entry.json'));
    const own = process.getuid?.();
    if (own === 0) expect([dir.uid, dir.gid, file.uid, file.gid]).toEqual([1000, 1000, 1000, 1000]);
    const privateModes = own === 0 || own === 1000;
    expect([dir.mode & 0o777, file.mode & 0o777]).toEqual(privateModes ? [0o700, 0o600] : [0o733, 0o644]);
    expect(statSync(root).mode & 0o777).toBe(0o700);
  });
});
