import { PassThrough, type Readable } from 'node:stream';
import type Docker from 'dockerode';
import { errorMessage } from '../../common/errors.js';
import type { LogOptions } from '../container-runtime.js';

/** One event of a build, pull or push progress stream. */
export interface ProgressEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

export function isNotFound(error: unknown): boolean {
  return (error as { statusCode?: number }).statusCode === 404;
}

/** What an inspection returns, or undefined when the engine does not know the object (404). */
export async function orUndefined<T>(inspection: Promise<T>): Promise<T | undefined> {
  try {
    return await inspection;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/** The engine's list filter for objects that carry all these labels. */
export function byLabels(labels: Record<string, string>): { label: string[] } {
  return { label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) };
}

/** Resolves when a pull or push stream ends without an error event; rejects with the first error. */
export function progressDone(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (error: Error | null, events: ProgressEvent[] = []) => {
      const failed = events.find((event) => event.error !== undefined);
      if (error ?? failed) reject(error ?? new Error(failed?.error));
      else resolve();
    });
  });
}

interface LogQuery {
  stdout: boolean;
  stderr: boolean;
  tail?: number;
  timestamps?: boolean;
  since?: number;
}

/** A replica's log output, read whole or followed. */
export interface LogSource {
  buffered(query: LogQuery): Promise<Buffer>;
  following(query: LogQuery): Promise<NodeJS.ReadableStream>;
}

/** A replica's stdout and stderr as one text stream, read whole or followed. */
export async function streamLogs(docker: Docker, source: LogSource, options: LogOptions): Promise<Readable> {
  const output = new PassThrough();
  const query = {
    stdout: true,
    stderr: true,
    ...(options.tail === 'all' ? {} : { tail: options.tail }),
    timestamps: options.timestamps === true,
    ...(options.since === undefined ? {} : { since: options.since }),
  };
  if (!options.follow) {
    output.end(demultiplex(await source.buffered(query)));
    return output;
  }
  const stream = await source.following(query);
  docker.modem.demuxStream(stream, output, output);
  // demuxStream writes without waiting: the engine's stream pauses while the output is full.
  stream.on('data', () => {
    if (output.writableNeedDrain) stream.pause();
  });
  output.on('drain', () => stream.resume());
  stream.on('end', () => output.end());
  stream.on('error', (error: Error) => output.destroy(error));
  output.on('close', () => (stream as unknown as { destroy(): void }).destroy());
  return output;
}

/** The last lines of a replica's output, or why they cannot be read. */
export async function logsTail(source: LogSource, lines: number): Promise<string> {
  try {
    return demultiplex(await source.buffered({ stdout: true, stderr: true, tail: lines }));
  } catch (error) {
    return `(logs unavailable: ${errorMessage(error)})`;
  }
}

/** Docker multiplexes stdout and stderr of non-TTY containers in 8-byte-headed frames. */
function demultiplex(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(offset + 4);
    parts.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}
