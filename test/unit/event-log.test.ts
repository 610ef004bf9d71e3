import { appendFileSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EventLog } from '../../src/controller/event-log.js';

const clock = { now: () => Date.parse('2026-12-01T10:00:00Z') };
const file = () => join(mkdtempSync(join(tmpdir(), 'flt-events-')), 'state', 'x.events.jsonl');
const lines = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line !== '');

describe('EventLog', () => {
  it('numbers events, keeps the newest `capacity` and pages forward from a seq', () => {
    const log = new EventLog(undefined, 10, clock);
    for (let i = 1; i <= 25; i++) log.record('backend.scaled', { backend: 'b' }, `step ${i}`);
    expect(log.list({ limit: 3 }).latest).toBe(25);
    expect(log.list({ limit: 3 }).events.map((e) => e.seq)).toEqual([23, 24, 25]);
    expect(log.list().events.map((e) => e.seq)).toEqual([16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
    expect(log.list({ since: 20, limit: 2 }).events.map((e) => e.message)).toEqual(['step 21', 'step 22']);
    expect(log.list({ since: 25 }).events).toEqual([]);
    expect(log.list({ since: 3 }).events[0]?.seq).toBe(16);
    expect(log.list({ limit: 1 }).events[0]).toEqual({
      seq: 25,
      time: '2026-12-01T10:00:00.000Z',
      kind: 'backend.scaled',
      backend: 'b',
      message: 'step 25',
    });
  });

  it('refuses a bad limit or since with INVALID_ARGUMENT', () => {
    const log = new EventLog(undefined, 10, clock);
    expect(() => log.list({ limit: 0 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('limit') }),
    );
    expect(() => log.list({ limit: 1001 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => log.list({ since: -1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('since') }),
    );
  });

  it('survives a restart, continues the numbering and skips a torn last line', () => {
    const path = file();
    const first = new EventLog(path, 10, clock);
    first.record('endpoint.created', { endpoint: 'e' }, 'one');
    first.record('traffic.set', { endpoint: 'e' }, 'two');
    appendFileSync(path, '{"seq": 3, "ti');
    const second = new EventLog(path, 10, clock);
    expect(second.list().events.map((e) => e.message)).toEqual(['one', 'two']);
    expect(second.record('endpoint.deleted', { endpoint: 'e' }, 'three').seq).toBe(3);
    expect(new EventLog(path, 10, clock).list().events.map((e) => e.seq)).toEqual([1, 2, 3]);
  });

  it('keeps its file bounded: rewritten with the newest events, no temporary file left', () => {
    const path = file();
    const log = new EventLog(path, 10, clock);
    for (let i = 1; i <= 55; i++) log.record('replica.started', { backend: 'b', replica: `r${i}` }, `r${i}`);
    expect(lines(path).length).toBeLessThanOrEqual(20);
    expect(readdirSync(join(path, '..'))).toEqual(['x.events.jsonl']);
    expect(new EventLog(path, 10, clock).list().events.map((e) => e.seq)).toEqual(log.list().events.map((e) => e.seq));
  });

  it('clear() forgets the events and removes the file', () => {
    const path = file();
    const log = new EventLog(path, 10, clock);
    log.record('backend.created', { backend: 'b' }, 'x');
    log.clear();
    expect(log.list().events).toEqual([]);
    expect(readdirSync(join(path, '..'))).toEqual([]);
  });
});
