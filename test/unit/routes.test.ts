import { describe, expect, it } from 'vitest';
import { ROUTES, pathOf, patternOf } from '../../src/admin/routes.js';

describe('the admin API routes table', () => {
  it('fills each :name with a percent-encoded value, and its pattern captures them undecoded', () => {
    const path = pathOf(ROUTES.shadowTraffic, 'a/b', 'c d');
    expect(path).toBe('/api/endpoints/a%2Fb/shadows/c%20d');
    expect(patternOf(ROUTES.shadowTraffic).exec(path)?.slice(1)).toEqual(['a%2Fb', 'c%20d']);
    expect(patternOf(ROUTES.getBackend).test('/api/backends/x/config')).toBe(false);
  });

  it('has one route per method and path', () => {
    const keys = Object.values(ROUTES).map(({ method, path }) => `${method} ${path}`);
    expect(new Set(keys).size).toBe(keys.length);
  });
});
