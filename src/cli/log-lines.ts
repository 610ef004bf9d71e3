/** Where a line of `GET /api/backends/:name/logs` starts: its time (when Docker gave one) and replica. */
const PREFIX = /^((?:\d{4}-\d\d-\d\dT\S+ )?\[[^\]]+\] )(.*)$/;
const MULTILINE_FIELDS = ['stack', 'traceback'];

function flatten(value: unknown, key: string): string[] {
  if (typeof value === 'object' && value !== null && !Array.isArray(value))
    return Object.entries(value).flatMap(([child, item]) => flatten(item, `${key}.${child}`));
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return [`${key}=${/\s/.test(text) ? JSON.stringify(text) : text}`];
}

/** The lines of a stack or traceback without the first when it only repeats the error's type and message. */
function stackLines(stack: string, type: unknown, message: unknown): string[] {
  const lines = stack.replace(/\n+$/, '').split('\n');
  if (lines[0] === `${String(type)}: ${String(message)}` || lines[0] === String(type)) lines.shift();
  return lines.map((line) => (line.startsWith(' ') ? line : `    ${line}`));
}

/**
 * A replica's JSON log line as a person reads it on a terminal:
 * `TIME [replica] error handler_error TypeError: bad input  request.method=POST request.path=/echo request.id=abc`,
 * then the stack (or Python traceback) indented on the lines below. Lines that are not JSON objects stay as they are.
 */
export function readableLogLine(line: string): string {
  const match = PREFIX.exec(line);
  const prefix = match?.[1] ?? '';
  const text = match?.[2] ?? line;
  let entry: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return line;
    entry = parsed as Record<string, unknown>;
  } catch {
    return line;
  }
  const { level, event, type, message, ...rest } = entry;
  delete rest.component;
  const blocks = MULTILINE_FIELDS.flatMap((key) => (typeof rest[key] === 'string' ? [rest[key]] : []));
  for (const key of MULTILINE_FIELDS) delete rest[key];
  const what = [type, message].filter((part) => part !== undefined && part !== '').join(': ');
  const head = [level ?? 'info', event ?? '', what].filter((part) => part !== '').join(' ');
  const fields = Object.entries(rest).flatMap(([key, value]) => flatten(value, key));
  return [
    `${prefix}${head}${fields.length === 0 ? '' : `  ${fields.join(' ')}`}`,
    ...blocks.flatMap((block) => stackLines(block, type, message)),
  ].join('\n');
}

/** Splits a stream of text into whole lines, each made readable; a last partial line waits for the rest. */
export class ReadableLogs {
  private partial = '';
  private readonly decoder = new TextDecoder();

  constructor(private readonly write: (text: string) => void) {}

  push(chunk: Uint8Array): void {
    const lines = (this.partial + this.decoder.decode(chunk, { stream: true })).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.write(`${readableLogLine(line)}\n`);
  }

  end(): void {
    if (this.partial !== '') this.write(`${readableLogLine(this.partial)}\n`);
    this.partial = '';
  }
}
