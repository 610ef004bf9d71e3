import { describe, expect, it } from 'vitest';
import type { ContainerRuntime } from '../../src/runtime/container-runtime.js';
import { BaseImages } from '../../src/runtime/base-images.js';
import type { Logger } from '../../src/common/logger.js';

function engine(images: string[], pullable: string[] = []) {
  const pulls: string[] = [];
  const runtime = {
    imageExists: (tag: string) => Promise.resolve(images.includes(tag)),
    pullImage: (tag: string) => {
      pulls.push(tag);
      if (!pullable.includes(tag)) return Promise.reject(new Error('no such host'));
      images.push(tag);
      return Promise.resolve();
    },
  } as unknown as ContainerRuntime;
  return { runtime, pulls };
}

function logger(lines: string[]): Logger {
  const log: Logger = {
    debug: () => undefined,
    info: (message) => lines.push(message),
    warn: () => undefined,
    error: () => undefined,
    child: () => log,
  };
  return log;
}

describe('base images', () => {
  it('uses a configured image without looking at the engine', async () => {
    const { runtime, pulls } = engine([]);
    const bases = new BaseImages(runtime, { node: 'my/node:1', python: '' }, logger([]));
    expect(await bases.of('node')).toBe('my/node:1');
    expect(pulls).toEqual([]);
  });

  it('prefers the online image the engine has, then one it can pull', async () => {
    expect(await new BaseImages(engine(['node:20-bookworm-slim']).runtime, { node: '', python: '' }, logger([])).of('node')).toBe(
      'node:20-bookworm-slim',
    );
    const { runtime, pulls } = engine([], ['debian:bookworm-slim']);
    expect(await new BaseImages(runtime, { node: '', python: '' }, logger([])).of('python')).toBe('debian:bookworm-slim');
    expect(pulls).toEqual(['debian:bookworm-slim']);
  });

  it('falls back to the offline image, pulls once, and says which it uses', async () => {
    const lines: string[] = [];
    const { runtime, pulls } = engine(['flotilla-local/node:20-bookworm-slim', 'flotilla-local/bookworm-minbase:latest']);
    const bases = new BaseImages(runtime, { node: '', python: '' }, logger(lines));
    expect(await Promise.all([bases.of('node'), bases.of('node')])).toEqual([
      'flotilla-local/node:20-bookworm-slim',
      'flotilla-local/node:20-bookworm-slim',
    ]);
    expect(await bases.of('python')).toBe('flotilla-local/bookworm-minbase:latest');
    expect(pulls).toEqual(['node:20-bookworm-slim', 'debian:bookworm-slim']);
    expect(lines).toEqual([
      'node base image flotilla-local/node:20-bookworm-slim (node:20-bookworm-slim cannot be pulled)',
      'python base image flotilla-local/bookworm-minbase:latest (debian:bookworm-slim cannot be pulled)',
    ]);
  });

  it('names the setting and the script when no image is usable, and does not pull again', async () => {
    const { runtime, pulls } = engine([]);
    const bases = new BaseImages(runtime, { node: '', python: '' }, logger([]));
    const expected = {
      code: 'BUILD_FAILED',
      message: expect.stringMatching(/scripts\/base-image\.sh.*set baseImage \(FLOTILLA_BASE_IMAGE\)/),
    };
    await expect(bases.of('node')).rejects.toMatchObject(expected);
    await expect(bases.of('node')).rejects.toMatchObject(expected);
    expect(pulls).toEqual(['node:20-bookworm-slim']);
  });
});
