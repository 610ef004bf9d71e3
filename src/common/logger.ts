import winston from 'winston';

export interface LogFields {
  component?: string;
  backend?: string;
  replica?: string;
  container?: string;
  [key: string]: unknown;
}

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

class WinstonLogger implements Logger {
  constructor(private readonly inner: winston.Logger) {}

  debug(message: string, fields?: LogFields): void {
    this.inner.debug(message, fields);
  }
  info(message: string, fields?: LogFields): void {
    this.inner.info(message, fields);
  }
  warn(message: string, fields?: LogFields): void {
    this.inner.warn(message, fields);
  }
  error(message: string, fields?: LogFields): void {
    this.inner.error(message, fields);
  }
  child(fields: LogFields): Logger {
    return new WinstonLogger(this.inner.child(fields));
  }
}

export type LogFormat = 'auto' | 'json' | 'text';

const FIRST_FIELDS = ['component', 'backend', 'replica', 'container'];

function fieldValue(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

/** `2026-12-01T22:24:00.123Z info  image-builder  building image  backend=hello image=…`: one readable line per entry. */
const textLine = winston.format.printf((entry) => {
  const { timestamp, level, message, component, ...fields } = entry as Record<string, unknown>;
  const keys = Object.keys(fields).sort((a, b) => {
    const rank = (key: string) => (FIRST_FIELDS.includes(key) ? FIRST_FIELDS.indexOf(key) : FIRST_FIELDS.length);
    return rank(a) - rank(b);
  });
  const pairs = keys.filter((key) => fields[key] !== undefined).map((key) => `${key}=${fieldValue(fields[key])}`);
  const head = `${String(timestamp)} ${String(level).padEnd(5)} ${String(component ?? '-').padEnd(13)} ${String(message)}`;
  return pairs.length === 0 ? head : `${head}  ${pairs.join(' ')}`;
});

/**
 * Log entries on stderr, so that stdout stays free for a CLI's own output: readable lines (time, level, component,
 * message, fields) on a terminal, JSON lines otherwise; `json` or `text` choose one.
 */
export function createLogger(level: string, format: LogFormat = 'auto'): Logger {
  const text = format === 'text' || (format === 'auto' && process.stderr.isTTY === true);
  return new WinstonLogger(
    winston.createLogger({
      level,
      format: winston.format.combine(winston.format.timestamp(), text ? textLine : winston.format.json()),
      transports: [new winston.transports.Console({ stderrLevels: Object.keys(winston.config.npm.levels) })],
    }),
  );
}
