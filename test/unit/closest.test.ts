import { describe, expect, it } from 'vitest';
import { closest, didYouMean } from '../../src/common/closest.js';

describe('closest', () => {
  it('finds a typo, a swapped pair, another case and a part of the name', () => {
    expect(closest('numReplica', ['numReplicas', 'maxBatchSize'])).toBe('numReplicas');
    expect(closest('POTS', ['GET', 'POST'])).toBe('POST');
    expect(closest('echo', ['Echo', 'greet'])).toBe('Echo');
    expect(closest('replicas', ['numReplicas', 'userConfig'])).toBe('numReplicas');
  });

  it('suggests nothing when no candidate is near', () => {
    expect(closest('path', ['backend', 'route', 'methods'])).toBeUndefined();
    expect(didYouMean('cpuShares', ['numCpus', 'memoryMb'])).toBe('');
    expect(didYouMean('imagee', ['image', 'port'])).toBe(' (did you mean image?)');
  });
});
