import { describe, expect, it } from 'vitest';
import { parseAppFile } from '../../src/cli/app-file.js';
import { capacityIssues, offlinePlan } from '../../src/cli/offline-check.js';

const APP = parseAppFile(
  `backends:
  small:
    import: a.js:A
    config: { numReplicas: 2 }
    replicaOptions: { numCpus: 0.5, memoryMb: 512 }
  big:
    import: b.js:B
    config: { numReplicas: 2 }
    replicaOptions: { numCpus: 1, numGpus: 1 }
endpoints:
  small: { backend: small, route: /small }
`,
  { file: 'app.yaml' },
);

describe('offline capacity checks', () => {
  it('passes a file whose replicas all fit, checking only the resources given', () => {
    expect(capacityIssues(APP, { cpus: 3, memoryMb: 1024 })).toEqual([]);
    expect(capacityIssues(APP, { memoryMb: 1024 })).toEqual([]);
  });

  it('names the backend, its line and the replica that does not fit', () => {
    expect(capacityIssues(APP, { cpus: 1 })).toEqual([
      {
        file: 'app.yaml',
        line: 6,
        path: ['backends', 'big'],
        message: expect.stringMatching(/^replica 2 of 2 does not fit on the machine, even alone: .*1 CPU, 0 of 1 free/),
      },
    ]);
    expect(capacityIssues(APP, { memoryMb: 1000 })).toMatchObject([{ path: ['backends', 'small'], message: /replica 2 of 2/ }]);
    expect(capacityIssues(APP, { gpus: 1 })).toMatchObject([{ path: ['backends', 'big'], message: /GPU/ }]);
  });

  it('does not flag a backend that fits alone: the file is flagged, with what it asks and what the machine has', () => {
    expect(capacityIssues(APP, { cpus: 2 })).toEqual([
      {
        file: 'app.yaml',
        line: 1,
        path: ['backends'],
        message: expect.stringMatching(
          /^each backend fits alone, but not all together: their replicas ask for 3 CPUs in all, and the machine has 2 CPUs \(not enough resources: /,
        ),
      },
    ]);
  });

  it('plans a deploy to an empty instance', () => {
    expect(offlinePlan(APP)).toEqual([
      'would: creating backend small (building image, starting 2 replicas)…',
      'would: creating backend big (building image, starting 2 replicas)…',
      'would: creating endpoint small at GET /small → small',
    ]);
  });
});
