import { describe, expect, it } from 'vitest';
import { RouteTable } from '../../src/dataplane/route-table.js';
import { routeShape } from '../../src/spec/routes.js';

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

  describe('with path parameters', () => {
    const variable = new RouteTable([
      { endpoint: 'user', route: '/api/{username}', methods: ['GET'] },
      { endpoint: 'admin', route: '/api/admin', methods: ['GET'] },
      { endpoint: 'item', route: '/api/{username}/items/{id}', methods: ['GET'] },
      { endpoint: 'api', route: '/api', methods: ['GET'] },
    ]);

    it('gives each parameter its segment, decoded', () => {
      expect(variable.match('/api/ada')).toMatchObject({ endpoint: 'user', params: { username: 'ada' } });
      expect(variable.match('/api/ada/more')).toMatchObject({ endpoint: 'user', params: { username: 'ada' } });
      expect(variable.match('/api/J%C3%BCrgen%20K')).toMatchObject({ params: { username: 'Jürgen K' } });
      expect(variable.match('/api/ada/items/7')).toMatchObject({ endpoint: 'item', params: { username: 'ada', id: '7' } });
      expect(variable.match('/api/%E0%A4%A')).toMatchObject({ params: { username: '%E0%A4%A' } });
    });

    it('prefers a literal segment, and needs a non-empty segment for a parameter', () => {
      expect(variable.match('/api/admin')).toMatchObject({ endpoint: 'admin', params: {} });
      expect(variable.match('/api')).toMatchObject({ endpoint: 'api', params: {} });
      expect(variable.match('/api/')?.endpoint).toBe('api');
      expect(variable.match('/apix/ada')).toBeUndefined();
    });

    it('knows routes of one shape', () => {
      expect(routeShape('/api/{a}/x')).toBe(routeShape('/api/{b}/x'));
      expect(routeShape('/api/{a}')).not.toBe(routeShape('/api/a'));
    });
  });
});
