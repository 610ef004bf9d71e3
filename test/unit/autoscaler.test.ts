import { describe, expect, it } from 'vitest';
import type { AutoscalingConfig } from '../../src/api.js';
import { Autoscaler } from '../../src/controller/autoscaler.js';
import type { BackendState } from '../../src/controller/backend-state.js';
import { DEFAULT_AUTOSCALING_CONFIG } from '../../src/spec/validation.js';
import { Scheduler } from '../../src/resources/scheduler.js';
import { ManualClock } from './fakes/manual-clock.js';

/** The parts of a backend the autoscaler reads: its name, target, resources and how many replicas are ready. */
function fakeBackend(config: AutoscalingConfig, replicas: number) {
  const backend = {
    name: 'b',
    ready: replicas,
    target: { config: { numReplicas: replicas, autoscaling: config }, resources: { numCpus: 1, memoryMb: null, numGpus: 0 } },
    count() {
      return backend.ready;
    },
    routable() {
      return Array.from({ length: backend.ready }, (_, i) => ({ id: `r${i}` }));
    },
    scaleTo(count: number) {
      backend.target = { ...backend.target, config: { ...backend.target.config, numReplicas: count } };
    },
  };
  return backend;
}

function setup(overrides: Partial<AutoscalingConfig>, replicas = 1, cpus = 16) {
  const clock = new ManualClock();
  const config = {
    ...DEFAULT_AUTOSCALING_CONFIG,
    maxReplicas: 10,
    targetOngoingRequests: 1,
    upscaleDelayS: 0,
    downscaleDelayS: 0,
    ...overrides,
  };
  let ongoing = 0;
  const autoscaler = new Autoscaler({ ongoingRequests: () => ongoing }, new Scheduler({ cpus, memoryMb: 1 << 20, gpus: [] }));
  const backend = fakeBackend(config, replicas);
  const state = backend as unknown as BackendState;
  /** One reconcile step after `ms`, with `load` ongoing requests; a change is applied and the replicas follow. */
  const step = (ms: number, load: number) => {
    clock.advance(ms);
    ongoing = load;
    const change = autoscaler.step(state, config, clock.now());
    if (change !== undefined) {
      backend.scaleTo(change.to);
      backend.ready = change.to;
    }
    return change;
  };
  return { clock, autoscaler, backend, state, step, config };
}

describe('the autoscaler', () => {
  it('takes one sample per metricsIntervalS, so a spike between samples is not seen', () => {
    const h = setup({ metricsIntervalS: 1, lookBackPeriodS: 10 });
    h.step(0, 0);
    expect(h.step(500, 50)).toBeUndefined();
    expect(h.autoscaler.status(h.state)).toMatchObject({ ongoingRequests: 0, wantedReplicas: 1 });
    expect(h.step(500, 4)?.to).toBe(2);
    expect(h.autoscaler.status(h.state)).toMatchObject({ ongoingRequests: 2, targetReplicas: 2 });
  });

  it('decides on the average over lookBackPeriodS, forgetting older samples', () => {
    const h = setup({ metricsIntervalS: 0.1, lookBackPeriodS: 1, downscaleDelayS: 600 });
    for (let i = 0; i < 10; i++) h.step(100, 8);
    expect(h.backend.target.config.numReplicas).toBe(8);
    h.step(100, 0);
    expect(h.autoscaler.status(h.state)?.ongoingRequests).toBeCloseTo(7.2);
    for (let i = 0; i < 10; i++) h.step(100, 0);
    expect(h.autoscaler.status(h.state)).toMatchObject({ ongoingRequests: 0, wantedReplicas: 1, heldBack: { by: 'downscale-delay' } });
  });

  it('caps a decision at the replicas that fit on the machine, and reports the last decision', () => {
    const h = setup({ metricsIntervalS: 0.1, lookBackPeriodS: 0.1 }, 1, 2);
    const change = h.step(100, 6);
    expect(change?.to).toBe(3);
    expect(change?.decision).toMatchObject({ from: 1, to: 3, direction: 'up' });
    expect(h.autoscaler.status(h.state)).toMatchObject({
      wantedReplicas: 6,
      targetReplicas: 3,
      heldBack: { by: 'capacity', message: expect.stringContaining('room for 3') as unknown },
      lastDecision: { from: 1, to: 3 },
    });
  });

  it('measures a cold start from the decision at zero to the first ready replica', () => {
    const h = setup({ minReplicas: 0, metricsIntervalS: 0.1, lookBackPeriodS: 0.1 }, 0);
    const change = h.step(100, 1);
    expect(change?.decision.reason).toContain('cold start');
    h.backend.ready = 0;
    h.clock.advance(1500);
    expect(h.autoscaler.coldStartsEnded(h.clock.now())).toEqual([]);
    h.backend.ready = 1;
    h.clock.advance(500);
    expect(h.autoscaler.coldStartsEnded(h.clock.now())).toEqual([{ backend: 'b', seconds: 2 }]);
    expect(h.autoscaler.coldStartsEnded(h.clock.now())).toEqual([]);
  });

  it('starts a replica for a request refused at zero (no queue), told as demand, and forgets the demand after one step', () => {
    const h = setup({ minReplicas: 0, metricsIntervalS: 0.1, lookBackPeriodS: 0.1 }, 0);
    h.autoscaler.demand('b');
    expect(h.step(100, 0)?.to).toBe(1);
    h.backend.scaleTo(0);
    h.backend.ready = 0;
    expect(h.step(100, 0)).toBeUndefined();
  });

  it('starts over when the autoscaling config changes, keeping the last decision', () => {
    const h = setup({ metricsIntervalS: 0.1, lookBackPeriodS: 10, upscaleDelayS: 1 });
    h.step(100, 5);
    h.step(900, 5);
    expect(h.step(100, 5)?.to).toBe(5);
    const changed = { ...h.config, upscaleDelayS: 1, targetOngoingRequests: 0.5 };
    expect(h.autoscaler.step(h.state, changed, h.clock.now())).toBeUndefined();
    expect(h.autoscaler.status(h.state)).toMatchObject({ ongoingRequests: 5, wantedReplicas: 10, lastDecision: { to: 5 } });
  });
});
