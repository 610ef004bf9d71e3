import { describe, expect, it } from 'vitest';
import type { AutoscalingConfig } from '../../src/api.js';
import { decide, IDLE, type PolicyDecision, type PolicyInput, type PolicyState } from '../../src/controller/autoscaling-policy.js';
import { DEFAULT_AUTOSCALING_CONFIG } from '../../src/spec/validation.js';
import { ManualClock } from './fakes/manual-clock.js';

/**
 * A backend as the policy sees it, stepped like the reconciler steps it: each tick asks the policy with the
 * clock's time and the synthetic load, applies the decision to the target, and lets the replicas follow at once.
 */
function backend(overrides: Partial<AutoscalingConfig>, start: { target: number; running?: number }) {
  const clock = new ManualClock();
  const config = { ...DEFAULT_AUTOSCALING_CONFIG, ...overrides };
  let state: PolicyState = IDLE;
  let target = start.target;
  let running = start.running ?? start.target;
  let last: PolicyDecision | undefined;
  const tick = (load: { ongoing: number; waiting?: boolean; reachable?: number }, follow = true): PolicyDecision => {
    const input: PolicyInput = {
      now: clock.now(),
      config,
      target,
      running,
      ongoing: load.ongoing,
      waiting: load.waiting ?? false,
      capacity: { reachable: load.reachable ?? 1000, shortOf: 'not enough resources: a replica needs 1 CPU, 0 of 2 free' },
    };
    last = decide(input, state);
    state = last.state;
    target = last.target;
    if (follow) running = target;
    return last;
  };
  /** Ticks every 100 ms for `seconds` under the same load. */
  const hold = (seconds: number, load: Parameters<typeof tick>[0]): PolicyDecision => {
    for (let t = 0; t < Math.round(seconds * 10); t++) {
      clock.advance(100);
      tick(load);
    }
    return last!;
  };
  return { clock, tick, hold, target: () => target, running: () => running };
}

describe('the autoscaling policy', () => {
  it('scales up to ongoing / targetOngoingRequests only after upscaleDelayS of that load', () => {
    const b = backend({ minReplicas: 1, maxReplicas: 10, targetOngoingRequests: 1, upscaleDelayS: 2 }, { target: 1 });
    const waiting = b.tick({ ongoing: 4 });
    expect(waiting).toMatchObject({ target: 1, wanted: 4, heldBack: { by: 'upscale-delay' } });
    b.hold(1.9, { ongoing: 4 });
    expect(b.target()).toBe(1);
    const decided = b.hold(0.1, { ongoing: 4 });
    expect(decided).toMatchObject({ target: 4, wanted: 4, heldBack: null });
    expect(decided.reason).toContain('4 ongoing requests');
  });

  it('restarts the delay when the load stops calling for more before it ran out', () => {
    const b = backend({ maxReplicas: 10, targetOngoingRequests: 1, upscaleDelayS: 1 }, { target: 1 });
    b.hold(0.8, { ongoing: 3 });
    b.hold(0.1, { ongoing: 1 });
    b.hold(0.8, { ongoing: 3 });
    expect(b.target()).toBe(1);
    b.hold(0.3, { ongoing: 3 });
    expect(b.target()).toBe(3);
  });

  it('scales down after downscaleDelayS, and to zero only from one replica, after downscaleToZeroDelayS', () => {
    const b = backend(
      { minReplicas: 0, maxReplicas: 10, targetOngoingRequests: 1, downscaleDelayS: 5, downscaleToZeroDelayS: 1 },
      { target: 4 },
    );
    b.tick({ ongoing: 0 });
    expect(b.hold(4.9, { ongoing: 0 })).toMatchObject({ target: 4, wanted: 0, heldBack: { by: 'downscale-delay' } });
    expect(b.hold(0.1, { ongoing: 0 }).target).toBe(1);
    expect(b.hold(1, { ongoing: 0 }).target).toBe(1);
    expect(b.hold(0.1, { ongoing: 0 }).target).toBe(0);
  });

  it('uses downscaleDelayS for 1 → 0 when downscaleToZeroDelayS is not set', () => {
    const b = backend({ minReplicas: 0, maxReplicas: 2, downscaleDelayS: 3 }, { target: 1 });
    b.tick({ ongoing: 0 });
    expect(b.hold(2.9, { ongoing: 0 }).target).toBe(1);
    expect(b.hold(0.1, { ongoing: 0 }).target).toBe(0);
  });

  it('keeps the count between minReplicas and maxReplicas', () => {
    const b = backend({ minReplicas: 2, maxReplicas: 5, targetOngoingRequests: 1, upscaleDelayS: 0, downscaleDelayS: 0 }, { target: 2 });
    expect(b.tick({ ongoing: 50 })).toMatchObject({ target: 5, wanted: 5 });
    b.clock.advance(100);
    expect(b.tick({ ongoing: 0 })).toMatchObject({ target: 2, wanted: 2 });
  });

  it('brings a target outside the bounds inside them at once, as after a config change', () => {
    expect(backend({ minReplicas: 3, maxReplicas: 5 }, { target: 1 }).tick({ ongoing: 0 })).toMatchObject({ target: 3 });
    expect(backend({ minReplicas: 1, maxReplicas: 2 }, { target: 6 }).tick({ ongoing: 100 })).toMatchObject({ target: 2 });
  });

  it('scales each step by upscalingFactor and downscalingFactor, removing at least one replica on the way down', () => {
    const up = backend({ maxReplicas: 20, targetOngoingRequests: 1, upscaleDelayS: 0, upscalingFactor: 0.5 }, { target: 2 });
    expect(up.tick({ ongoing: 10 }).target).toBe(6);
    const down = backend({ maxReplicas: 20, targetOngoingRequests: 1, downscaleDelayS: 0, downscalingFactor: 0.1 }, { target: 4 });
    expect(down.tick({ ongoing: 3 }).target).toBe(3);
    const smooth = backend({ maxReplicas: 20, targetOngoingRequests: 1, upscaleDelayS: 0, smoothingFactor: 0.25 }, { target: 2 });
    expect(smooth.tick({ ongoing: 10 }).target).toBe(4);
  });

  it('starts a replica at once when a request waits at zero running replicas, bypassing upscaleDelayS', () => {
    const b = backend({ minReplicas: 0, maxReplicas: 3, upscaleDelayS: 600 }, { target: 0 });
    expect(b.tick({ ongoing: 0 })).toMatchObject({ target: 0, wanted: 0, heldBack: null });
    const cold = b.tick({ ongoing: 0, waiting: true });
    expect(cold).toMatchObject({ target: 1, wanted: 1 });
    expect(cold.reason).toContain('cold start');
    const faster = backend({ minReplicas: 0, maxReplicas: 3, upscalingFactor: 2 }, { target: 0 });
    expect(faster.tick({ ongoing: 1 }).target).toBe(2);
  });

  it('leaves the target alone while its replicas start', () => {
    const b = backend({ maxReplicas: 4, targetOngoingRequests: 1 }, { target: 3, running: 0 });
    expect(b.tick({ ongoing: 2, waiting: true }, false)).toMatchObject({ target: 3, heldBack: null });
  });

  it('caps a scale-up at what the machine has room for, says why, and goes ahead as soon as room appears', () => {
    const b = backend({ maxReplicas: 8, targetOngoingRequests: 1, upscaleDelayS: 1 }, { target: 1 });
    b.tick({ ongoing: 6, reachable: 3 });
    const capped = b.hold(1, { ongoing: 6, reachable: 3 });
    expect(capped).toMatchObject({ target: 3, wanted: 6, heldBack: { by: 'capacity' } });
    expect(capped.heldBack?.message).toBe(
      'wanted 6 replicas, the machine has room for 3: not enough resources: a replica needs 1 CPU, 0 of 2 free',
    );
    b.clock.advance(100);
    expect(b.tick({ ongoing: 6, reachable: 5 })).toMatchObject({ target: 5, wanted: 6, heldBack: { by: 'capacity' } });
    b.clock.advance(100);
    expect(b.tick({ ongoing: 6 })).toMatchObject({ target: 6, heldBack: null });
  });

  it('never lowers the target for capacity, and a cold start without room stays at zero with the reason', () => {
    const b = backend({ maxReplicas: 8, targetOngoingRequests: 1, upscaleDelayS: 0 }, { target: 4 });
    expect(b.tick({ ongoing: 8, reachable: 2 })).toMatchObject({ target: 4, wanted: 8, heldBack: { by: 'capacity' } });
    const zero = backend({ minReplicas: 0, maxReplicas: 2 }, { target: 0 });
    expect(zero.tick({ ongoing: 1, waiting: true, reachable: 0 })).toMatchObject({ target: 0, wanted: 1, heldBack: { by: 'capacity' } });
  });
});
