/** Docker labels: the source of truth for what Flotilla runs. */
export const LABELS = {
  managed: 'dev.flotilla.managed',
  instance: 'dev.flotilla.instance',
  backend: 'dev.flotilla.backend',
  replica: 'dev.flotilla.replica',
} as const;
