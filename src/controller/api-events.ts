import type { BackendInfo, EventKind } from '../api.js';

/** A value as JSON for an event's message, cut at 200 characters. */
function brief(value: unknown): string {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** The events of a config change that succeeded: scaled, reconfigured (userConfig), updated (the other keys that changed). */
export function configChangeEvents(name: string, patch: Record<string, unknown>, before: BackendInfo): Array<[EventKind, string]> {
  const { numReplicas, userConfig, ...rest } = patch;
  const events: Array<[EventKind, string]> = [];
  if (numReplicas !== undefined && numReplicas !== before.numReplicas)
    events.push(['backend.scaled', `backend ${name} scaled from ${before.numReplicas} to ${String(numReplicas)} replica(s)`]);
  if ('userConfig' in patch) events.push(['backend.reconfigured', `backend ${name} reconfigured: userConfig ${brief(userConfig)}`]);
  const was = before as unknown as Record<string, unknown>;
  const changed = Object.keys(rest).filter((key) => JSON.stringify(rest[key]) !== JSON.stringify(was[key]));
  if (changed.length > 0)
    events.push(['backend.updated', `backend ${name} updated: ${changed.map((key) => `${key} ${brief(rest[key])}`).join(', ')}`]);
  return events;
}
