import type { Client, FlotillaEvent } from '../api.js';
import { sleep } from '../common/clock.js';

const FOLLOW_INTERVAL_MS = 1000;

/** One event as `flotilla events` prints it: time, kind, subject, message. */
export function formatEvent(event: FlotillaEvent): string {
  const subject = (['endpoint', 'backend', 'replica'] as const)
    .filter((key) => event[key] !== undefined)
    .map((key) => `${key}=${event[key]}`)
    .join(' ');
  return [event.time, event.kind.padEnd(20), subject || '-', event.message].join('  ');
}

/** Prints the newest `limit` events (or those after `since`); with `follow`, keeps printing new ones until interrupted. */
export async function printEvents(
  client: Client,
  options: { since?: number; limit: number; follow: boolean; json: boolean },
  write: (line: string) => void,
): Promise<void> {
  const print = (event: FlotillaEvent) => write(options.json ? JSON.stringify(event) : formatEvent(event));
  let page = await client.listEvents({ ...(options.since === undefined ? {} : { since: options.since }), limit: options.limit });
  page.events.forEach(print);
  let since = page.events.at(-1)?.seq ?? options.since ?? page.latest;
  while (options.follow) {
    await sleep(FOLLOW_INTERVAL_MS);
    page = await client.listEvents({ since, limit: 1000 });
    page.events.forEach(print);
    since = page.events.at(-1)?.seq ?? since;
  }
}
