import { describe, expect, it } from 'vitest';
import type { Client, EventQuery, FlotillaEvent } from '../../src/api.js';
import { formatEvent, printEvents } from '../../src/cli/events.js';

const event = (seq: number): FlotillaEvent => ({
  seq,
  time: `2026-12-01T10:00:0${seq}.000Z`,
  kind: 'replica.ready',
  backend: 'b',
  replica: `r${seq}`,
  message: `replica r${seq} of b is ready`,
});

describe('flotilla events', () => {
  it('prints time, kind, subject and message on one line', () => {
    expect(formatEvent(event(1))).toBe('2026-12-01T10:00:01.000Z  replica.ready         backend=b replica=r1  replica r1 of b is ready');
    expect(formatEvent({ seq: 2, time: 't', kind: 'traffic.set', message: 'm' })).toBe('t  traffic.set           -  m');
  });

  it('passes --since and --limit through, and prints JSON lines with --json', async () => {
    const asked: EventQuery[] = [];
    const client = {
      listEvents: async (query: EventQuery) => {
        asked.push(query);
        return { events: [event(4), event(5)], latest: 5 };
      },
    } as unknown as Client;
    const lines: string[] = [];
    await printEvents(client, { since: 3, limit: 2, follow: false, json: true }, (line) => lines.push(line));
    expect(asked).toEqual([{ since: 3, limit: 2 }]);
    expect(lines.map((line) => JSON.parse(line).seq)).toEqual([4, 5]);
  });
});
