import { describe, expect, it } from 'vitest';
import { RouteTable } from '../../src/dataplane/route-table.js';

const table = new RouteTable([
  { endpoint: 'root', route: '/', methods: ['GET'] },
  { endpoint: 'a', route: '/a', methods: ['GET'] },
  { endpoint: 'ab', route: '/a/b', methods: ['POST'] },
  { endpoint: 'api', route: '/api/v1', methods: ['GET'] },
]);

describe('RouteTable', () => {
  it('matches a route exactly and at sub-paths', () => {
    expect(table.match('/a')?.endpoint).toBe('a');
    expect(table.match('/a/x/y')?.endpoint).toBe('a');
  });

  it('prefers the longest route', () => {
    expect(table.match('/a/b')?.endpoint).toBe('ab');
    expect(table.match('/a/b/c')?.endpoint).toBe('ab');
  });

  it('matches only at a / boundary', () => {
    expect(table.match('/ab')?.endpoint).toBe('root');
    expect(table.match('/api/v10')?.endpoint).toBe('root');
    expect(table.match('/api/v1/x')?.endpoint).toBe('api');
  });

  it('finds nothing when no route and no root route match', () => {
    const noRoot = new RouteTable([{ endpoint: 'a', route: '/a', methods: ['GET'] }]);
    expect(noRoot.match('/b')).toBeUndefined();
    expect(noRoot.match('/')).toBeUndefined();
  });

  it('lists routes in path order', () => {
    expect(table.list().map((r) => r.route)).toEqual(['/', '/a', '/a/b', '/api/v1']);
  });
});
