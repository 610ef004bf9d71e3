import { appendFileSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { EventKind, EventPage, EventQuery, FlotillaEvent } from '../api.js';
import { invalid } from '../common/checks.js';
import type { Clock } from '../common/clock.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

export const DEFAULT_EVENT_LIMIT = 100;
export const MAX_EVENT_LIMIT = 1000;

/** What records events: the EventLog, or a test's list. */
export type EventRecorder = Pick<EventLog, 'record'>;

export type EventSubject = Pick<FlotillaEvent, 'backend' | 'endpoint' | 'replica'>;

/**
 * The control plane's event history: the newest `capacity` events in memory, and in a JSON Lines
 * file that each event is appended to. When the file holds twice the capacity it is rewritten
 * (temporary file, then rename) with the newest `capacity`, so it never grows without bound. A torn
 * last line (a crash mid-write) is skipped on load. A failed write is logged and never fails the
 * call that recorded the event.
 */
export class EventLog {
  private events: FlotillaEvent[] = [];
  private seq = 0;
  private linesOnDisk = 0;
  private warned = false;
  private torn = false;

  constructor(
    private readonly path: string | undefined,
    private readonly capacity: number,
    private readonly clock: Clock,
    private readonly logger?: Logger,
  ) {
    if (path === undefined) return;
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.failed(error);
    }
    this.torn = text !== '' && !text.endsWith('\n');
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      this.linesOnDisk++;
      try {
        const event = JSON.parse(line) as FlotillaEvent;
        if (typeof event.seq === 'number' && event.seq > this.seq) this.events.push(event);
        this.seq = Math.max(this.seq, event.seq);
      } catch {
        // a torn line: the rest is still good
      }
    }
    this.events = this.events.slice(-capacity);
  }

  record(kind: EventKind, subject: EventSubject, message: string): FlotillaEvent {
    const event: FlotillaEvent = { seq: ++this.seq, time: new Date(this.clock.now()).toISOString(), kind, ...subject, message };
    this.events.push(event);
    if (this.events.length > this.capacity) this.events.shift();
    this.persist(event);
    return event;
  }

  list(query: EventQuery = {}): EventPage {
    const limit = query.limit ?? DEFAULT_EVENT_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_EVENT_LIMIT)
      throw invalid(`limit must be a whole number from 1 to ${MAX_EVENT_LIMIT}, not ${limit}`);
    if (query.since !== undefined && (!Number.isInteger(query.since) || query.since < 0))
      throw invalid(`since must be an event seq (a whole number from 0), not ${query.since}`);
    const since = query.since;
    const events = since === undefined ? this.events.slice(-limit) : this.events.filter((e) => e.seq > since).slice(0, limit);
    return { events, latest: this.seq };
  }

  /** Forgets every event and removes the file (a shutdown). */
  clear(): void {
    this.events = [];
    if (this.path !== undefined) rmSync(this.path, { force: true });
    this.linesOnDisk = 0;
  }

  private persist(event: FlotillaEvent): void {
    if (this.path === undefined) return;
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
      if (this.linesOnDisk + 1 > 2 * this.capacity) this.rewrite();
      else {
        appendFileSync(this.path, `${this.torn ? '\n' : ''}${JSON.stringify(event)}\n`, { mode: 0o600 });
        this.torn = false;
        this.linesOnDisk++;
      }
    } catch (error) {
      this.failed(error);
    }
  }

  private rewrite(): void {
    const path = this.path as string;
    const temporary = `${path}.${process.pid}.tmp`;
    const fd = openSync(temporary, 'w', 0o600);
    try {
      writeSync(fd, this.events.map((e) => `${JSON.stringify(e)}\n`).join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
    this.torn = false;
    this.linesOnDisk = this.events.length;
  }

  private failed(error: unknown): void {
    if (this.warned) return;
    this.warned = true;
    this.logger?.warn('the event history cannot be written; events are kept in memory only', {
      component: 'events',
      path: this.path,
      error: errorMessage(error),
    });
  }
}
