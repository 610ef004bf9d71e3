import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imagesOfDesiredState, pruneImages } from '../../src/cli/prune.js';
import { StateStore } from '../../src/controller/state-store.js';
import { holderOf, holdTag } from '../../src/runtime/image-holds.js';
import type { ContainerRuntime, ImageSummary } from '../../src/runtime/container-runtime.js';

const image = (id: string, parentId: string, tags = [`flotilla/${id}:1`]): ImageSummary => ({ id, parentId, tags });

/**
 * Images as the engine keeps them: a removed tag untags; the image goes with its last tag unless another is built on it,
 * and so do the untagged images under it that nothing else is built on.
 */
function engine(images: ImageSummary[], options: { foreign?: ImageSummary[]; inContainers?: string[] } = {}) {
  const store = new Map(images.map((entry) => [entry.id, { ...entry, tags: [...entry.tags] }]));
  const foreign = options.foreign ?? [];
  const removeIfBare = (id: string): void => {
    const entry = store.get(id);
    if (entry === undefined || entry.tags.length > 0 || [...store.values()].some((other) => other.parentId === id)) return;
    store.delete(id);
    removeIfBare(entry.parentId);
  };
  const runtime = {
    listImages: (labels: Record<string, string>) =>
      Promise.resolve([
        ...[...store.values()].map((entry) => ({ ...entry, tags: [...entry.tags] })),
        ...(Object.keys(labels).length === 0 ? foreign : []),
      ]),
    imagesOfContainers: () => Promise.resolve(new Set(options.inContainers ?? [])),
    removeTag: (tag: string) => {
      const entry = [...store.values()].find((candidate) => candidate.tags.includes(tag));
      if (entry !== undefined) {
        entry.tags = entry.tags.filter((other) => other !== tag);
        removeIfBare(entry.id);
      }
      return Promise.resolve(true);
    },
    removeImage: (id: string) => {
      const entry = store.get(id);
      if (entry !== undefined) entry.tags = [];
      removeIfBare(id);
      return Promise.resolve(true);
    },
    tagImage: (reference: string, tag: string) => {
      [...store.values()].find((entry) => entry.id === reference || entry.tags.includes(reference))?.tags.push(tag);
      return Promise.resolve();
    },
  };
  return {
    runtime: runtime as unknown as ContainerRuntime,
    ids: () => [...store.keys()].sort(),
    tagsOf: (id: string) => store.get(id)?.tags,
  };
}

function stateDirNaming(...images: string[]): string {
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-prune-'));
  const backends = images.map((name, index) => ({
    name: `b${index}`,
    image: name,
    definition: {},
    config: { numReplicas: 0 },
    resources: {},
    runtimeEnv: {},
    initArgs: [],
  }));
  new StateStore(join(stateDir, 'state', 'one.json')).save({ version: 2, backends, endpoints: [] });
  return stateDir;
}

describe('image holds', () => {
  it('name the instance after the content hash, and only holds do', () => {
    const tag = holdTag('flotilla/backend:0123456789abcdef', 'team-a');
    expect(tag).toBe('flotilla/backend:0123456789abcdef-team-a');
    expect(holderOf(tag)).toBe('team-a');
    expect(holderOf('flotilla/backend:0123456789abcdef')).toBeUndefined();
    expect(holderOf('localhost:5000/flotilla/backend:0123456789abcdef')).toBeUndefined();
  });
});

describe('pruneImages', () => {
  it('keeps what containers use and everything under it, and removes the other tagged images Flotilla built', async () => {
    const fake = engine(
      [image('base', ''), image('runtime', 'base'), image('layer', 'runtime', []), image('live', 'layer'), image('stale', 'runtime')],
      { foreign: [image('foreign', '')], inContainers: ['live'] },
    );
    const result = await pruneImages(fake.runtime, 'one');
    expect(result.removed.map((i) => i.id)).toEqual(['stale']);
    expect(result.kept.map((i) => i.id).sort()).toEqual(['base', 'live', 'runtime']);
    expect(fake.ids()).toEqual(['base', 'layer', 'live', 'runtime']);
  });

  it('keeps the images the saved desired state names, e.g. of a backend scaled to zero', async () => {
    const fake = engine([image('base', ''), image('idle', 'base'), image('stale', 'base')]);
    const keep = imagesOfDesiredState(stateDirNaming('flotilla/idle:1'));
    expect([...keep]).toEqual(['flotilla/idle:1']);
    const result = await pruneImages(fake.runtime, 'one', {}, keep);
    expect(result.removed.map((i) => i.id)).toEqual(['stale']);
    expect(result.kept.map((i) => i.id).sort()).toEqual(['base', 'idle']);
  });

  it("releases only this instance's holds: an image another instance holds stays, with what it was built on", async () => {
    const shared = 'flotilla/backend:0123456789abcdef';
    const fake = engine([
      image('runtime', '', ['flotilla/replica-node:00000000000000aa']),
      image('shared', 'runtime', [shared, holdTag(shared, 'one'), holdTag(shared, 'two')]),
    ]);
    const first = await pruneImages(fake.runtime, 'one', {}, imagesOfDesiredState(stateDirNaming()));
    expect(first.released).toEqual([holdTag(shared, 'one')]);
    expect(first.removed).toEqual([]);
    expect(fake.tagsOf('shared')).toEqual([shared, holdTag(shared, 'two')]);
    expect(fake.ids()).toEqual(['runtime', 'shared']);

    const kept = await pruneImages(fake.runtime, 'two', {}, imagesOfDesiredState(stateDirNaming(shared)));
    expect(kept.released).toEqual([]);
    expect(fake.ids()).toEqual(['runtime', 'shared']);

    const last = await pruneImages(fake.runtime, 'two', {}, imagesOfDesiredState(stateDirNaming()));
    expect(last.released).toEqual([holdTag(shared, 'two')]);
    expect(last.removed.map((i) => i.id).sort()).toEqual(['runtime', 'shared']);
    expect(fake.ids()).toEqual([]);
  });

  it('keeps the hold of an image this instance still names', async () => {
    const shared = 'flotilla/backend:0123456789abcdef';
    const fake = engine([image('shared', '', [shared, holdTag(shared, 'one')])]);
    const result = await pruneImages(fake.runtime, 'one', {}, imagesOfDesiredState(stateDirNaming(shared)));
    expect(result.released).toEqual([]);
    expect(fake.tagsOf('shared')).toEqual([shared, holdTag(shared, 'one')]);
  });
});
