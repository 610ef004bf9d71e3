import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imagesOfDesiredState, pruneImages } from '../../src/cli/prune.js';
import { StateStore } from '../../src/controller/state-store.js';
import type { ContainerRuntime, ImageSummary } from '../../src/runtime/container-runtime.js';

const image = (id: string, parentId: string, tags = [`flotilla/${id}:1`]): ImageSummary => ({ id, parentId, tags });

describe('pruneImages', () => {
  it('keeps what containers use and everything under it, and removes the other tagged images Flotilla built', async () => {
    const images = [
      image('base', ''),
      image('runtime', 'base'),
      image('layer', 'runtime', []),
      image('live', 'layer'),
      image('stale', 'runtime'),
    ];
    const foreign = image('foreign', '');
    const removed: string[] = [];
    const runtime = {
      listImages: (labels: Record<string, string>) => Promise.resolve(Object.keys(labels).length === 0 ? [...images, foreign] : images),
      imagesOfContainers: () => Promise.resolve(new Set(['live'])),
      removeImage: (id: string) => {
        removed.push(id);
        return Promise.resolve(true);
      },
    } as unknown as ContainerRuntime;
    const result = await pruneImages(runtime);
    expect(removed).toEqual(['stale']);
    expect(result.kept.map((i) => i.id).sort()).toEqual(['base', 'live', 'runtime']);
  });

  it('keeps the images the saved desired state names, e.g. of a backend scaled to zero', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'flt-prune-'));
    const backend = {
      name: 'b',
      image: 'flotilla/idle:1',
      definition: {},
      config: { numReplicas: 0 },
      resources: {},
      runtimeEnv: {},
      initArgs: [],
    };
    new StateStore(join(stateDir, 'state', 'one.json')).save({ version: 2, backends: [backend], endpoints: [] });
    const images = [image('base', ''), image('idle', 'base'), image('stale', 'base')];
    const removed: string[] = [];
    const runtime = {
      listImages: () => Promise.resolve(images),
      imagesOfContainers: () => Promise.resolve(new Set<string>()),
      removeImage: (id: string) => {
        removed.push(id);
        return Promise.resolve(true);
      },
    } as unknown as ContainerRuntime;
    const keep = imagesOfDesiredState(stateDir);
    expect([...keep]).toEqual(['flotilla/idle:1']);
    const result = await pruneImages(runtime, {}, keep);
    expect(removed).toEqual(['stale']);
    expect(result.kept.map((i) => i.id).sort()).toEqual(['base', 'idle']);
  });
});
