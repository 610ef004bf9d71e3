import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LABELS } from '../common/labels.js';
import { parseCheckpoint } from '../spec/saved-state.js';
import { StateStore } from '../controller/state-store.js';
import type { ContainerRuntime, ImageSummary } from '../runtime/container-runtime.js';
import { holderOf } from '../runtime/image-holds.js';

export interface PruneResult {
  removed: ImageSummary[];
  kept: ImageSummary[];
  /** This instance's holds taken off images it no longer uses (image-holds.ts). */
  released: string[];
}

/**
 * The images the desired state of every instance saved under `stateDir` names (a backend's, and the one a rollout
 * rolls back to), so that a backend with no container now (scaled to zero, numReplicas 0) keeps its image.
 */
export function imagesOfDesiredState(stateDir: string): Set<string> {
  const dir = join(stateDir, 'state');
  let files: string[];
  try {
    files = readdirSync(dir).filter((file) => file.endsWith('.json'));
  } catch {
    return new Set();
  }
  const images = new Set<string>();
  for (const file of files) {
    const path = join(dir, file);
    const saved = parseCheckpoint(path, new StateStore(path).load());
    for (const backend of saved?.backends ?? []) {
      images.add(backend.image);
      if (backend.rollout?.previous !== undefined) images.add(backend.rollout.previous.image);
    }
  }
  return images;
}

/**
 * Releases `instance`'s holds on the images it no longer needs, then removes the tagged images Flotilla built (and that
 * extra labels select) that no container, running or stopped, uses, nor the instance's desired state names (`keep`: tags
 * or ids), nor any instance still holds, nor any image under one of those: every backend of every instance keeps its
 * image and the layers it was built on, whether it has replicas or not. Untagged layers that only removed images used go
 * with them.
 */
export async function pruneImages(
  runtime: ContainerRuntime,
  instance: string,
  labels: Record<string, string> = {},
  keep: ReadonlySet<string> = new Set(),
): Promise<PruneResult> {
  const inContainers = await runtime.imagesOfContainers();
  const needed = (image: ImageSummary): boolean =>
    inContainers.has(image.id) || keep.has(image.id) || image.tags.some((tag) => keep.has(tag));
  const released: string[] = [];
  const selected = await runtime.listImages({ [LABELS.managed]: 'true', ...labels });
  for (const tag of selected
    .filter((image) => !needed(image))
    .flatMap((image) => image.tags.filter((candidate) => holderOf(candidate) === instance))) {
    if (await runtime.removeTag(tag)) released.push(tag);
  }
  const all = await runtime.listImages({});
  const parents = new Map(all.map((image) => [image.id, image.parentId]));
  const used = new Set<string>();
  const roots = all.filter((image) => needed(image) || image.tags.some((tag) => holderOf(tag) !== undefined)).map((image) => image.id);
  for (let id of roots) {
    while (id !== '' && !used.has(id)) {
      used.add(id);
      id = parents.get(id) ?? '';
    }
  }
  const selectedIds = new Set(selected.map((image) => image.id));
  const tagged = all.filter((image) => selectedIds.has(image.id) && image.tags.length > 0);
  const removed: ImageSummary[] = [];
  const kept: ImageSummary[] = tagged.filter((image) => used.has(image.id));
  for (const image of tagged.filter((candidate) => !used.has(candidate.id))) {
    ((await runtime.removeImage(image.id)) ? removed : kept).push(image);
  }
  return { removed, kept, released };
}
