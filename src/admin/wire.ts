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

export function fromWire(wire: WireValue): unknown {
  if ('text' in wire) return wire.text;
  if ('bytes' in wire) return Buffer.from(wire.bytes, 'base64');
  return wire.json;
}
