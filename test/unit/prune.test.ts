import { describe, expect, it } from 'vitest';
import { pruneImages } from '../../src/cli/prune.js';
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
});
