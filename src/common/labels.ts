/** Docker labels: the source of truth for what Flotilla runs. */
export const LABELS = {
  managed: 'dev.flotilla.managed',
  instance: 'dev.flotilla.instance',
  backend: 'dev.flotilla.backend',
  replica: 'dev.flotilla.replica',
  /** JSON of the replica's resource placement, so that a restarted controller can adopt it. */
  placement: 'dev.flotilla.placement',
  /** The replica's restart count and its predecessor's failure, kept across controller restarts. */
  restarts: 'dev.flotilla.restarts',
  lastError: 'dev.flotilla.last-error',
  /** Hashes of the image and of the live config the replica was started with, compared with the saved state on adoption. */
  imageHash: 'dev.flotilla.image-hash',
  configHash: 'dev.flotilla.config-hash',
  /** On an instance's marker volume: JSON of the control plane that serves the instance (InstanceOwner). */
  owner: 'dev.flotilla.owner',
} as const;
