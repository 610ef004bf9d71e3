/** Docker labels: the source of truth for what Flotilla runs. */
export const LABELS = {
  managed: 'dev.flotilla.managed',
  instance: 'dev.flotilla.instance',
  backend: 'dev.flotilla.backend',
  replica: 'dev.flotilla.replica',
  /** JSON of the replica's resource placement, so that a restarted controller can adopt it. */
  placement: 'dev.flotilla.placement',
} as const;
