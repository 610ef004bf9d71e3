import { FlotillaError } from '../common/errors.js';

/**
 * How handle call bodies and results travel over the admin API as JSON:
 * exactly one of json, text or bytes (base64).
 */
export type WireValue = { json: unknown } | { text: string } | { bytes: string };

export function toWire(value: unknown): WireValue {
  if (typeof value === 'string') return { text: value };
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString('base64') };
  if (value instanceof ArrayBuffer) return { bytes: Buffer.from(new Uint8Array(value)).toString('base64') };
  return { json: value ?? null };
}

/** Checks a value that arrived as JSON: an object with exactly one of json, text (a string) or bytes (base64). */
export function parseWire(value: unknown): WireValue {
  const keys = typeof value === 'object' && value !== null && !Array.isArray(value) ? Object.keys(value) : [];
  const wire = value as Record<string, unknown>;
  const valid =
    keys.length === 1 &&
    ((keys[0] === 'json' && 'json' in wire) ||
      (keys[0] === 'text' && typeof wire.text === 'string') ||
      (keys[0] === 'bytes' && typeof wire.bytes === 'string'));
  if (!valid) throw new FlotillaError('INVALID_ARGUMENT', 'input must be { json: value }, { text: string } or { bytes: base64 string }');
  return value as WireValue;
}

export function fromWire(wire: WireValue): unknown {
  if ('text' in wire) return wire.text;
  if ('bytes' in wire) return Buffer.from(wire.bytes, 'base64');
  return wire.json;
}
