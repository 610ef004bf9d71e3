import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../common/package-root.js';

const TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'dashboard.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
};

const cache = new Map<string, Buffer>();

/** A file of the dashboard page (the package's dashboard/ directory); '' is index.html. Undefined for any other name. */
export function dashboardAsset(name: string): { contentType: string; body: Buffer } | undefined {
  const file = name === '' ? 'index.html' : name;
  const contentType = TYPES[file];
  if (contentType === undefined) return undefined;
  let body = cache.get(file);
  if (body === undefined) cache.set(file, (body = readFileSync(join(packageRoot(), 'dashboard', file))));
  return { contentType, body };
}
