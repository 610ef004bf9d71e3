import { LABELS } from '../common/labels.js';
import type { ContainerRuntime, ImageSummary } from '../runtime/container-runtime.js';

export interface PruneResult {
  removed: ImageSummary[];
  kept: ImageSummary[];
}

/**
 * Removes the tagged images Flotilla built (and that extra labels select) that no container, running or stopped, uses,
 * nor any image under one that a container uses: every backend with replicas keeps its image and the layers it was built
 * on. Untagged layers that only removed images used go with them.
 */
export async function pruneImages(runtime: ContainerRuntime, labels: Record<string, string> = {}): Promise<PruneResult> {
  const parents = new Map((await runtime.listImages({})).map((image) => [image.id, image.parentId]));
  const used = new Set<string>();
  for (let id of await runtime.imagesOfContainers()) {
    while (id !== '' && !used.has(id)) {
      used.add(id);
      id = parents.get(id) ?? '';
    }
  }
  const built = (await runtime.listImages({ [LABELS.managed]: 'true', ...labels })).filter((image) => image.tags.length > 0);
  const removed: ImageSummary[] = [];
  const kept: ImageSummary[] = built.filter((image) => used.has(image.id));
  for (const image of built.filter((candidate) => !used.has(candidate.id))) {
    ((await runtime.removeImage(image.id)) ? removed : kept).push(image);
  }
  return { removed, kept };
}
