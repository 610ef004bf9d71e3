import type { AutoscalingConfig, AutoscalingStatus } from '../api.js';

/** What one decision of one backend starts from. Times are milliseconds of the controller's clock. */
export interface PolicyInput {
  now: number;
  config: AutoscalingConfig;
  /** The replica count the controller converges on now. */
  target: number;
  /** Replicas ready to serve. */
  running: number;
  /** Ongoing requests (queued and in flight), averaged over the look-back window. */
  ongoing: number;
  /** Requests are waiting right now: at zero running replicas, that starts one at once. */
  waiting: boolean;
  /** The most replicas the machine has room for (those the backend holds and what still fits), and what it is short of. */
  capacity: { reachable: number; shortOf: string };
}

/** The direction the load has called for without a break since `since` (null: neither). */
export interface PolicyState {
  direction: 'up' | 'down' | null;
  since: number;
}

export interface PolicyDecision {
  /** The new replica count (the input's target when nothing changes). */
  target: number;
  wanted: number;
  heldBack: AutoscalingStatus['heldBack'];
  /** Why `target` differs from the input's, for the log and the event. */
  reason: string;
  state: PolicyState;
}

/** `count` brought inside minReplicas..maxReplicas. */
export function withinBounds(config: Pick<AutoscalingConfig, 'minReplicas' | 'maxReplicas'>, count: number): number {
  return Math.min(config.maxReplicas, Math.max(config.minReplicas, count));
}

export const IDLE: PolicyState = { direction: null, since: 0 };

const round = (value: number): number => Math.round(value * 100) / 100;

/**
 * Ray Serve 2.x's default policy (replica_queue_length_autoscaling_policy with its scaling factors, bounds and
 * delays), made time-based: the desired count is ongoing / targetOngoingRequests; the step from the running count
 * toward it is scaled by upscalingFactor or downscalingFactor (a step down of less than one replica still removes
 * one); the result is bounded by minReplicas and maxReplicas; a change happens once the load has called for that
 * direction for upscaleDelayS or downscaleDelayS without a break (downscaleToZeroDelayS for 1 → 0, and never from
 * more than one straight to zero). At zero running replicas a waiting request scales up at once (the cold-start
 * path), and a target outside the bounds (after a config change) is brought inside them at once.
 *
 * Unlike Ray Serve, the machine's capacity is applied after the delay rather than before it: a scale-up capped
 * by capacity stays due, so it goes ahead as soon as room appears instead of waiting out upscaleDelayS again.
 */
export function decide(input: PolicyInput, state: PolicyState): PolicyDecision {
  const { config, target, running, ongoing, now, capacity } = input;
  const bounded = (count: number): number => withinBounds(config, count);
  const upscalingFactor = config.upscalingFactor ?? config.smoothingFactor;
  const downscalingFactor = config.downscalingFactor ?? config.smoothingFactor;

  const up = (wanted: number, reason: string, next: PolicyState): PolicyDecision => {
    const reachable = Math.max(target, Math.min(wanted, capacity.reachable));
    if (reachable >= wanted) return { target: wanted, wanted, heldBack: null, reason, state: next };
    const message = `wanted ${wanted} replicas, the machine has room for ${capacity.reachable}: ${capacity.shortOf}`;
    const heldBack = { by: 'capacity' as const, message };
    return { target: reachable, wanted, heldBack, reason: `${reason}; capped by capacity (${message})`, state };
  };
  const unchanged = (wanted: number, heldBack: PolicyDecision['heldBack'], next: PolicyState): PolicyDecision => ({
    target,
    wanted,
    heldBack,
    reason: '',
    state: next,
  });

  if (target < config.minReplicas || target > config.maxReplicas) {
    const wanted = bounded(target);
    const reason = `the target ${target} is outside minReplicas ${config.minReplicas} to maxReplicas ${config.maxReplicas}`;
    return wanted > target ? up(wanted, reason, IDLE) : { target: wanted, wanted, heldBack: null, reason, state: IDLE };
  }
  if (running === 0) {
    const demand = input.waiting || ongoing > 0;
    const wanted = demand ? bounded(Math.max(Math.ceil(upscalingFactor), target)) : target;
    if (wanted <= target) return unchanged(wanted, null, IDLE);
    return up(wanted, 'a request arrived while no replica runs (cold start)', IDLE);
  }

  const desired = ongoing / config.targetOngoingRequests;
  const delta = desired - running;
  let scaled = Math.ceil(running + (delta > 0 ? upscalingFactor : downscalingFactor) * delta);
  if (Math.ceil(desired) < running && scaled === running) scaled -= 1;
  const wanted = bounded(scaled);
  const load = `${round(ongoing)} ongoing requests over ${running} running replica(s), ${config.targetOngoingRequests} per replica wanted`;

  if (wanted > target) {
    const pending = state.direction === 'up' ? state : { direction: 'up' as const, since: now };
    if (now - pending.since >= config.upscaleDelayS * 1000) {
      const decision = up(wanted, load, IDLE);
      return decision.heldBack === null ? decision : { ...decision, state: pending };
    }
    const message = `wanted ${wanted} replicas; scaling up once the load lasts upscaleDelayS (${config.upscaleDelayS} s)`;
    return unchanged(wanted, { by: 'upscale-delay', message }, pending);
  }
  if (wanted < target) {
    const next = target > 1 ? Math.max(1, wanted) : wanted;
    const toZero = target === 1 && next === 0 && config.downscaleToZeroDelayS !== null;
    const delayS = toZero ? config.downscaleToZeroDelayS! : config.downscaleDelayS;
    const pending = state.direction === 'down' ? state : { direction: 'down' as const, since: now };
    if (now - pending.since >= delayS * 1000) return { target: next, wanted, heldBack: null, reason: load, state: IDLE };
    const setting = toZero ? 'downscaleToZeroDelayS' : 'downscaleDelayS';
    const message = `wanted ${wanted} replicas; scaling down to ${next} once the load stays low for ${setting} (${delayS} s)`;
    return unchanged(wanted, { by: 'downscale-delay', message }, pending);
  }
  return unchanged(wanted, null, IDLE);
}
