import { PassThrough, type Readable } from 'node:stream';
import { errorMessage } from '../common/errors.js';
import type { ContainerRuntime } from '../runtime/container-runtime.js';

interface LogLine {
  /** Docker's RFC 3339 time with its fraction padded to 9 digits, so that strings sort by time; '' for a note of ours. */
  key: string;
  replica: string;
  text: string;
}

const STAMPED = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z (.*)$/;

function parse(line: string, replica: string): LogLine {
  const match = STAMPED.exec(line);
  if (match === null) return { key: '', replica, text: line };
  return { key: `${match[1]}.${(match[2] ?? '').padEnd(9, '0').slice(0, 9)}Z`, replica, text: match[3] ?? '' };
}

/** `2026-12-01T22:13:00.123Z [b3a20335] text`: milliseconds are enough to read, the order comes from the full time. */
function format(line: LogLine): string {
  return `${line.key === '' ? '' : `${line.key.slice(0, 23)}Z `}[${line.replica}] ${line.text}\n`;
}

/** Everything a finite stream gives, and the error it ended with, if any. */
function readAll(stream: Readable): Promise<{ text: string; error?: unknown }> {
  return new Promise((resolve) => {
    let text = '';
    stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    stream.on('end', () => resolve({ text }));
    stream.on('error', (error) => resolve({ text, error }));
  });
}

/**
 * The logs of replicas as one text stream, each line with its time and replica id: the last `tail` lines of each,
 * merged by time; with follow, then new lines as they come, until every replica's container stops or the stream is
 * destroyed. A replica whose log cannot be read gets one line `(no log: …)`, one whose stream fails `(log ended: …)`,
 * and the others go on.
 */
export async function replicaLogs(
  runtime: ContainerRuntime,
  replicas: Array<{ id: string; containerId: string }>,
  options: { follow: boolean; tail: number; onStreamError?: (replica: string, error: unknown) => void },
): Promise<Readable> {
  const since = Math.floor(Date.now() / 1000);
  const histories = await Promise.all(
    replicas.map(async (replica): Promise<{ lines: LogLine[]; failed: boolean }> => {
      const note = (what: string, error: unknown): LogLine => ({ key: '', replica: replica.id, text: `(${what}: ${errorMessage(error)})` });
      let stream: Readable;
      try {
        stream = await runtime.streamLogs(replica.containerId, { follow: false, tail: options.tail, timestamps: true });
      } catch (error) {
        return { lines: [note('no log', error)], failed: true };
      }
      const { text, error } = await readAll(stream);
      const lines = text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => parse(line, replica.id));
      if (error === undefined) return { lines, failed: false };
      options.onStreamError?.(replica.id, error);
      // Dated like the replica's last line, so that it sorts right after it.
      return { lines: [...lines, { ...note('log ended', error), key: lines.at(-1)?.key ?? '' }], failed: true };
    }),
  );
  const out = new PassThrough();
  const merged = histories.flatMap((history) => history.lines).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const line of merged) out.write(format(line));
  const following = replicas.filter((_, index) => histories[index]?.failed === false);
  if (!options.follow || following.length === 0) {
    out.end();
    return out;
  }
  let open = following.length;
  const streams: Readable[] = [];
  const partDone = () => {
    if (--open === 0) out.end();
  };
  for (const replica of following) {
    const seen = histories[replicas.indexOf(replica)]?.lines.at(-1)?.key ?? '';
    let partial = '';
    let ended = false;
    const emit = (raw: string) => {
      const line = parse(raw, replica.id);
      if (line.key === '' || line.key > seen) out.write(format(line));
    };
    const end = (error?: unknown) => {
      if (ended) return;
      ended = true;
      if (partial !== '') emit(partial);
      if (error !== undefined) out.write(format({ key: '', replica: replica.id, text: `(log ended: ${errorMessage(error)})` }));
      partDone();
    };
    try {
      const stream = await runtime.streamLogs(replica.containerId, { follow: true, tail: 'all', timestamps: true, since });
      streams.push(stream);
      stream.on('data', (chunk: Buffer) => {
        const parts = (partial + chunk.toString('utf8')).split('\n');
        partial = parts.pop() ?? '';
        parts.forEach(emit);
      });
      stream.on('error', (error) => {
        options.onStreamError?.(replica.id, error);
        end(error);
      });
      stream.on('end', () => end());
      stream.on('close', () => end());
    } catch (error) {
      end(error);
    }
  }
  out.once('close', () => streams.forEach((stream) => stream.destroy()));
  return out;
}
