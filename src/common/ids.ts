import { randomBytes } from 'node:crypto';

export function shortId(bytes = 4): string {
  return randomBytes(bytes).toString('hex');
}
