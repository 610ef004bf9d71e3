import { PassThrough, type Readable } from 'node:stream';
import { errorMessage } from '../common/errors.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';

/** What one log request may hold in the control plane's memory. */
export const LOG_LIMITS = {
  /** Past lines per replica a request may ask for. */
  maxTail: 10_000,
  /** Bytes of history kept per replica (the newest lines); older ones are left out with a note. */
  historyBytes: 2 * 1024 * 1024,
  /** Bytes a follower may fall behind, read from the engine but not yet taken by its reader, before it is cut. */
  followerBytes: 1024 * 1024,
  /** Bytes of a line without its end kept before it is passed on as a line of its own. */
  lineBytes: 64 * 1024,
  /** Histories read from the engine at once. */
  readsAtOnce: 2,
};

interface LogLine {
  /** Docker's RFC 3339 time with its fraction padded to 9 digits, so that strings sort by time; '' for a note of ours. */
  key: string;
  replica: string;
  text: string;
}

const STAMPED = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z (.*)$/s;
const BEHIND_CHECK_MS = 250;

function parse(line: string, replica: string): LogLine {
  const match = STAMPED.exec(line);
  if (match === null) return { key: '', replica, text: line };
  return { key: `${match[1]}.${(match[2] ?? '').padEnd(9, '0').slice(0, 9)}Z`, replica, text: match[3] ?? '' };
}

/** `2026-12-01T22:13:00.123Z [b3a20335] text`: milliseconds are enough to read, the order comes from the full time. */
function format(line: LogLine): string {
  return `${line.key === '' ? '' : `${line.key.slice(0, 23)}Z `}[${line.replica}] ${line.text}\n`;
}

/** Splits a stream's text into lines as it comes; a line longer than `lineBytes` is passed on in parts. */
function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; flush(): void } {
  let partial = '';
  return {
    push(chunk) {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      parts.forEach(onLine);
      while (partial.length > LOG_LIMITS.lineBytes) {
        onLine(partial.slice(0, LOG_LIMITS.lineBytes));
        partial = partial.slice(LOG_LIMITS.lineBytes);
      }
    },
    flush() {
      if (partial !== '') onLine(partial);
      partial = '';
    },
  };
}

/** The newest lines of a finite stream within `historyBytes`, how many older ones were left out, and the error it ended with. */
function readHistory(stream: Readable, replica: string): Promise<{ lines: LogLine[]; dropped: number; error?: unknown }> {
  return new Promise((resolve) => {
    const lines: LogLine[] = [];
    const sizes: number[] = [];
    let bytes = 0;
    let dropped = 0;
    const splitter = lineSplitter((raw) => {
      if (raw === '') return;
      lines.push(parse(raw, replica));
      sizes.push(raw.length);
      bytes += raw.length;
      while (bytes > LOG_LIMITS.historyBytes && lines.length > 1) {
        lines.shift();
        bytes -= sizes.shift() ?? 0;
        dropped++;
      }
    });
    stream.on('data', (chunk: Buffer) => splitter.push(chunk));
    stream.on('end', () => {
      splitter.flush();
      resolve({ lines, dropped });
    });
    stream.on('error', (error) => {
      splitter.flush();
      resolve({ lines, dropped, error });
    });
  });
}

/** Bytes a stream holds unread; a runtime's PassThrough also holds what was written to it past its buffer. */
function held(stream: Readable | PassThrough): number {
  return stream.readableLength + ('writableLength' in stream ? stream.writableLength : 0);
}

/** Runs `work` on every item, at most `limit` at once, keeping the order of the results. */
async function mapLimited<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * The logs of replicas as one text stream, each line with its time and replica id: the last `tail` lines of each
 * (at most `historyBytes` of them), merged by time; with follow, then new lines as they come, until every replica's
 * container stops or the stream is destroyed. A follower is served at the pace it reads: the engine streams pause
 * while it is behind, and one that falls more than `followerBytes` behind is cut with a note. A replica whose log
 * cannot be read gets one line `(no log: …)`, one whose stream fails `(log ended: …)`, and the others go on.
 */
export async function replicaLogs(
  runtime: ContainerRuntime,
  replicas: Array<{ id: string; containerId: string }>,
  options: { follow: boolean; tail: number; onStreamError?: (replica: string, error: unknown) => void },
): Promise<Readable> {
  const since = Math.floor(Date.now() / 1000);
  const histories = await mapLimited(replicas, LOG_LIMITS.readsAtOnce, async (replica): Promise<{ lines: LogLine[]; failed: boolean }> => {
    const note = (text: string, key = ''): LogLine => ({ key, replica: replica.id, text: `(${text})` });
    let stream: Readable;
    try {
      stream = await runtime.streamLogs(replica.containerId, { follow: false, tail: options.tail, timestamps: true });
    } catch (error) {
      return { lines: [note(`no log: ${errorMessage(error)}`)], failed: true };
    }
    const { lines, dropped, error } = await readHistory(stream, replica.id);
    // Notes are dated like the line next to them, so that they sort beside it.
    if (dropped > 0) lines.unshift(note(`${dropped} earlier lines left out: over ${LOG_LIMITS.historyBytes} bytes`, lines[0]?.key ?? ''));
    if (error === undefined) return { lines, failed: false };
    options.onStreamError?.(replica.id, error);
    return { lines: [...lines, note(`log ended: ${errorMessage(error)}`, lines.at(-1)?.key ?? '')], failed: true };
  });
  const out = new PassThrough();
  const merged = histories.flatMap((history) => history.lines).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const line of merged) out.write(format(line));
  const following = replicas.filter((_, index) => histories[index]?.failed === false);
  if (!options.follow || following.length === 0) {
    out.end();
    return out;
  }
  follow(runtime, following, histories, since, out, options.onStreamError);
  return out;
}

/** New lines of each replica after its history, written to `out` at the pace its reader takes them. */
function follow(
  runtime: ContainerRuntime,
  following: Array<{ id: string; containerId: string }>,
  histories: Array<{ lines: LogLine[] }>,
  since: number,
  out: PassThrough,
  onStreamError?: (replica: string, error: unknown) => void,
): void {
  const streams: Readable[] = [];
  let open = following.length;
  let watch: NodeJS.Timeout | undefined;
  const stopWatching = () => {
    clearInterval(watch);
    watch = undefined;
  };
  const resume = () => {
    stopWatching();
    streams.forEach((stream) => stream.resume());
  };
  /** Pauses the engine streams until `out` drains; what they still take in while paused is the follower's backlog. */
  const pause = () => {
    if (watch !== undefined) return;
    streams.forEach((stream) => stream.pause());
    out.once('drain', resume);
    watch = setInterval(() => {
      const behind = held(out) + streams.reduce((sum, stream) => sum + held(stream), 0);
      if (behind <= LOG_LIMITS.followerBytes) return;
      stopWatching();
      out.end(`(follow cut: the reader fell more than ${LOG_LIMITS.followerBytes} bytes behind)\n`);
      streams.forEach((stream) => stream.destroy());
    }, BEHIND_CHECK_MS);
  };
  const write = (text: string) => {
    if (!out.writableEnded && !out.write(text)) pause();
  };
  const partDone = () => {
    if (--open === 0 && !out.writableEnded) out.end();
  };
  for (const [index, replica] of following.entries()) {
    const seen = histories[index]?.lines.at(-1)?.key ?? '';
    let ended = false;
    const splitter = lineSplitter((raw) => {
      const line = parse(raw, replica.id);
      if (line.key === '' || line.key > seen) write(format(line));
    });
    const end = (error?: unknown) => {
      if (ended) return;
      ended = true;
      splitter.flush();
      if (error !== undefined) write(format({ key: '', replica: replica.id, text: `(log ended: ${errorMessage(error)})` }));
      partDone();
    };
    runtime
      .streamLogs(replica.containerId, { follow: true, tail: 'all', timestamps: true, since })
      .then((stream) => {
        if (out.destroyed) return stream.destroy();
        streams.push(stream);
        if (watch !== undefined) stream.pause();
        stream.on('data', (chunk: Buffer) => splitter.push(chunk));
        stream.on('error', (error) => {
          onStreamError?.(replica.id, error);
          end(error);
        });
        stream.on('end', () => end());
        stream.on('close', () => end());
      })
      .catch((error: unknown) => end(error));
  }
  out.once('close', () => {
    stopWatching();
    streams.forEach((stream) => stream.destroy());
  });
}
