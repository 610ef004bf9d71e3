import { describe, expect, it } from 'vitest';
import { TrafficPolicy } from '../../src/dataplane/traffic-policy.js';

describe('TrafficPolicy', () => {
  it('always picks the only backend', () => {
    const policy = new TrafficPolicy({ only: 1 });
    expect(new Set(Array.from({ length: 50 }, () => policy.pick()))).toEqual(new Set(['only']));
  });

  it('splits by weight', () => {
    const policy = new TrafficPolicy({ a: 0.25, b: 0.75 });
    expect(policy.pick(undefined, () => 0.1)).toBe('a');
    expect(policy.pick(undefined, () => 0.3)).toBe('b');
    expect(policy.pick(undefined, () => 0.999)).toBe('b');
  });

  it('never picks a backend of weight zero', () => {
    const policy = new TrafficPolicy({ a: 0, b: 1 });
    expect(policy.pick(undefined, () => 0)).toBe('b');
  });

  it('sends one shard key to one backend', () => {
    const policy = new TrafficPolicy({ a: 0.5, b: 0.5 });
    for (const key of ['user-1', 'user-2', 'user-3']) {
      const first = policy.pick(key);
      expect(Array.from({ length: 20 }, () => policy.pick(key))).toEqual(Array(20).fill(first));
    }
  });

  it('picks nothing without weights', () => {
    expect(new TrafficPolicy({}).pick()).toBeUndefined();
  });
});
