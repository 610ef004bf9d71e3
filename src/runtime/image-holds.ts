/**
 * Images are tagged by content hash (`repository:hash`), so instances that build the same backend share one image. Each
 * instance also holds the images it uses with a tag of its own, `repository:hash-instance`, and `flotilla prune` removes
 * only its own holds: an image leaves the engine once no instance holds it.
 */
const HOLD = /:[0-9a-f]{16}-([a-z0-9][a-z0-9-]*)$/;

/** The tag by which `instance` holds the image tagged `image` (`repository:hash`). */
export function holdTag(image: string, instance: string): string {
  return `${image}-${instance}`;
}

/** The instance a tag holds its image for, if it is a hold. */
export function holderOf(tag: string): string | undefined {
  return HOLD.exec(tag)?.[1];
}
