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
  /** The version the replica runs (backend-state.ts versionOf) and the hash of the live config it was started with. */
  version: 'dev.flotilla.version',
  configHash: 'dev.flotilla.config-hash',
  /** On an instance's marker volume: JSON of the control plane that serves the instance (InstanceOwner). */
  owner: 'dev.flotilla.owner',
} as const;
