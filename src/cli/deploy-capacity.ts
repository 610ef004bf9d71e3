import type { BackendInfo, CapacityInfo, EndpointInfo, ReplicaResources } from '../api.js';
import { FlotillaError, isFlotillaError } from '../common/errors.js';
import { Scheduler, type Capacity } from '../resources/scheduler.js';
import { formatIssue, type AppFileIssue, type AppSpec } from './app-file.js';
import type { CurrentState, DeployStep } from './deploy-steps.js';

type Resources = Pick<ReplicaResources, 'numCpus' | 'memoryMb' | 'numGpus'>;

/** Replicas of one backend, all with the same resources. */
interface Booking {
  resources: Resources;
  count: number;
}

/** The capacity a control plane reports, as the scheduler takes it. */
export function capacityOf(info: CapacityInfo): Capacity {
  return { cpus: info.total.cpus, memoryMb: info.total.memoryMb, gpus: info.total.gpus.map((id) => ({ id })) };
}

function request(resources: Resources) {
  return { numCpus: resources.numCpus, memoryMb: resources.memoryMb ?? null, numGpus: resources.numGpus };
}

/**
 * Whether every replica of the file fits on `capacity`, placed as the scheduler would place them: an issue for the first
 * replica of each backend that does not (`gpus: false` leaves GPUs unchecked).
 */
export function fitIssues(spec: AppSpec, capacity: Capacity, options: { gpus: boolean } = { gpus: true }): AppFileIssue[] {
  const scheduler = new Scheduler(capacity);
  const issues: AppFileIssue[] = [];
  for (const [name, backend] of Object.entries(spec.backends)) {
    const asked = { ...request(backend.resources), numGpus: options.gpus ? backend.resources.numGpus : 0 };
    for (let replica = 0; replica < backend.config.numReplicas; replica++) {
      try {
        scheduler.reserve(`${name}#${replica}`, asked);
      } catch (error) {
        if (!isFlotillaError(error, 'INSUFFICIENT_RESOURCES')) throw error;
        issues.push({
          file: spec.file,
          line: spec.lines[`backends.${name}`] ?? 1,
          path: ['backends', name],
          message: `replica ${replica + 1} of ${backend.config.numReplicas} does not fit on the machine: ${error.message}`,
        });
        break;
      }
    }
  }
  return issues;
}

function describeCapacity(capacity: Capacity): string {
  const gpus = capacity.gpus.length === 0 ? 'no GPUs' : `${capacity.gpus.length} GPU${capacity.gpus.length === 1 ? '' : 's'}`;
  return `${capacity.cpus} CPUs, ${capacity.memoryMb} MB and ${gpus}`;
}

/** Throws INSUFFICIENT_RESOURCES, with an issue per backend that does not fit, unless the file fits once applied. */
export function checkFitsWhenApplied(spec: AppSpec, capacity: Capacity): void {
  const issues = fitIssues(spec, capacity);
  if (issues.length === 0) return;
  throw new FlotillaError(
    'INSUFFICIENT_RESOURCES',
    `the app file does not fit on this Flotilla even once applied (its replicas may reserve ${describeCapacity(capacity)} in all); nothing was changed:\n` +
      issues.map(formatIssue).join('\n'),
    { issues },
  );
}

/** What each backend reserves as the plan goes: its replicas' resources and count. */
class Books {
  private readonly books = new Map<string, Booking>();

  constructor(
    private readonly capacity: Capacity,
    backends: Record<string, BackendInfo>,
  ) {
    for (const [name, info] of Object.entries(backends)) this.books.set(name, { resources: info.resources, count: info.numReplicas });
  }

  count(backend: string): number {
    return this.books.get(backend)?.count ?? 0;
  }

  booking(backend: string): Booking {
    return this.books.get(backend) ?? { resources: { numCpus: 0, memoryMb: null, numGpus: 0 }, count: 0 };
  }

  set(backend: string, resources: Resources, count: number): void {
    this.books.set(backend, { resources, count });
  }

  setCount(backend: string, count: number): void {
    const booking = this.books.get(backend);
    if (booking !== undefined) this.books.set(backend, { ...booking, count });
  }

  delete(backend: string): void {
    this.books.delete(backend);
  }

  /** Whether every booking fits, with `backend`'s replaced by `instead`. */
  fits(backend: string, instead: Booking[]): boolean {
    const scheduler = new Scheduler(this.capacity);
    const all = [...[...this.books].filter(([name]) => name !== backend).map(([, booking]) => booking), ...instead];
    try {
      all.forEach((booking, index) => {
        for (let i = 0; i < booking.count; i++) scheduler.reserve(`${index}#${i}`, request(booking.resources));
      });
      return true;
    } catch (error) {
      if (isFlotillaError(error, 'INSUFFICIENT_RESOURCES')) return false;
      throw error;
    }
  }
}

/** Which backends the endpoints send requests (traffic weight above 0) or anything (any weight, a shadow) to, as the plan goes. */
class Routing {
  private readonly endpoints: Map<string, EndpointInfo>;

  constructor(endpoints: Record<string, EndpointInfo>) {
    this.endpoints = new Map(Object.entries(endpoints).map(([name, info]) => [name, structuredClone(info)]));
  }

  apply(step: DeployStep): void {
    if (step.op === 'deleteEndpoint') this.endpoints.delete(step.endpoint);
    if (step.op === 'createEndpoint')
      this.endpoints.set(step.endpoint, { route: step.route, methods: step.methods, traffic: { [step.backend]: 1 }, shadows: {} });
    const endpoint = 'endpoint' in step ? this.endpoints.get(step.endpoint) : undefined;
    if (endpoint === undefined) return;
    if (step.op === 'setTraffic') endpoint.traffic = { ...step.traffic };
    if (step.op === 'shadowTraffic') {
      if (step.proportion === 0) delete endpoint.shadows[step.backend];
      else endpoint.shadows[step.backend] = step.proportion;
    }
  }

  /** Endpoints whose requests the backend answers. */
  served(backend: string): string[] {
    return [...this.endpoints].filter(([, e]) => (e.traffic[backend] ?? 0) > 0).map(([name]) => name);
  }

  /** Whether an endpoint names the backend at all: deleteBackend refuses until none does. */
  references(backend: string): boolean {
    return [...this.endpoints.values()].some((e) => backend in e.traffic || backend in e.shadows);
  }
}

/** A step that adds replicas or replaces them: how many it asks for, of what, and how many fit given `count`. */
interface Growth {
  backend: string;
  to: number;
  /** The fewest replicas worth starting now; fewer and the step waits (a scale-up) or needs a gap (a new version). */
  least: number;
  fits(count: number): boolean;
}

function growthOf(step: DeployStep, books: Books): Growth | undefined {
  if (!('backend' in step) || step.op === 'createEndpoint' || step.op === 'shadowTraffic') return undefined;
  const backend = step.backend;
  // An autoscaled backend starts at its initial count or not at all: a later numReplicas would turn its autoscaling off.
  const least = (to: number, autoscaled: boolean): number => (autoscaled ? to : Math.min(1, to));
  if (step.op === 'createBackend') {
    const resources = step.spec.resources;
    const to = step.spec.config.numReplicas;
    const autoscaled = step.spec.config.autoscaling !== null;
    return { backend, to, least: least(to, autoscaled), fits: (count) => books.fits(backend, [{ resources, count }]) };
  }
  if (step.op === 'updateBackend') {
    const resources = step.spec.resources;
    const to = step.spec.config.numReplicas;
    const old = books.booking(backend);
    // The controller checks that the replicas it adds beyond the running ones fit beside them; the rollout then swaps them.
    return {
      backend,
      to,
      least: least(to, step.spec.config.autoscaling !== null),
      fits: (count) =>
        books.fits(backend, [{ resources, count }]) &&
        (count <= old.count || books.fits(backend, [old, { resources, count: count - old.count }])),
    };
  }
  if (step.op === 'updateBackendConfig' && step.changes.numReplicas !== undefined) {
    const { resources, count: from } = books.booking(backend);
    const to = step.changes.numReplicas;
    if (to <= from) return undefined;
    return { backend, to, least: from + 1, fits: (count) => books.fits(backend, [{ resources, count }]) };
  }
  return undefined;
}

/** The largest count from `to` down to `least` that fits, or undefined. */
function largestFit(growth: Growth): number | undefined {
  for (let count = growth.to; count >= growth.least; count--) if (growth.fits(count)) return count;
  return undefined;
}

/**
 * Reorders a plan (planDeploy's order, where nothing is removed while something uses it) so that every step fits the
 * capacity when it runs, given that the file fits once applied (checkFitsWhenApplied). Steps that fit stay where they
 * are. For one that does not, room is made, in this order, until it fits: deletions of backends nothing routes to and
 * scale-downs the file asks for run earlier; backends the file deletes or scales down that still serve are shrunk to one
 * replica first; then the step starts as many replicas as fit and a last step adds the rest once the deletions freed
 * room. Only when not even one replica fits are backends that go away scaled to 0 before their successor is up: their
 * endpoints get 503s meanwhile, which the step's reason says. A rollout with no room beside the old replicas is marked
 * in place. Throws INSUFFICIENT_RESOURCES when no order fits (e.g. GPUs too fragmented).
 */
export function orderForCapacity(steps: DeployStep[], current: CurrentState, capacity: Capacity): DeployStep[] {
  const books = new Books(capacity, current.backends);
  const routing = new Routing(current.endpoints);
  const pending = [...steps];
  const ordered: DeployStep[] = [];
  const rest: DeployStep[] = [];

  const emit = (step: DeployStep): void => {
    if (step.op === 'createBackend') books.set(step.backend, step.spec.resources, step.spec.config.numReplicas);
    if (step.op === 'updateBackend') books.set(step.backend, step.spec.resources, step.spec.config.numReplicas);
    if (step.op === 'deleteBackend') books.delete(step.backend);
    if (step.op === 'updateBackendConfig' && step.changes.numReplicas !== undefined) books.setCount(step.backend, step.changes.numReplicas);
    routing.apply(step);
    ordered.push(step);
  };
  /** A scale-down the plan still has, with its previous count as it now is; undefined when nothing is left of it. */
  const normalized = (step: DeployStep): DeployStep | undefined => {
    if (step.op !== 'updateBackendConfig' || step.changes.numReplicas === undefined) return step;
    const count = books.count(step.backend);
    const { numReplicas, ...changes } = step.changes;
    if (numReplicas === count) {
      const previous = Object.fromEntries(Object.entries(step.previous).filter(([key]) => key !== 'numReplicas'));
      return Object.keys(changes).length === 0 ? undefined : { ...step, changes, previous };
    }
    return { ...step, previous: { ...step.previous, numReplicas: count } };
  };
  const take = (step: DeployStep): void => {
    pending.splice(pending.indexOf(step), 1);
    const left = normalized(step);
    if (left !== undefined) emit(left);
  };
  const scaleTo = (backend: string, count: number, reason: string): void => {
    emit({ op: 'updateBackendConfig', backend, changes: { numReplicas: count }, previous: { numReplicas: books.count(backend) }, reason });
  };
  /** Backends the rest of the plan deletes or scales down, with the count each ends at. */
  const goingAway = (): Array<{ backend: string; step: DeployStep; to: number }> =>
    pending.flatMap((step): Array<{ backend: string; step: DeployStep; to: number }> => {
      if (step.op === 'deleteBackend') return [{ backend: step.backend, step, to: 0 }];
      if (step.op !== 'updateBackendConfig') return [];
      const to = step.changes.numReplicas;
      return to !== undefined && to < books.count(step.backend) ? [{ backend: step.backend, step, to }] : [];
    });

  /** Runs freeing steps early, least disruptive first, until `fits()`. */
  const makeRoom = (growth: Growth, fits: () => boolean): void => {
    for (const { backend, step, to } of goingAway()) {
      if (fits()) return;
      if (step.op === 'deleteBackend' && !routing.references(backend)) take(step);
      else if (step.op !== 'deleteBackend' && (to > 0 || routing.served(backend).length === 0)) take(step);
      else if (routing.served(backend).length === 0 && books.count(backend) > 0)
        scaleTo(backend, 0, `to make room for ${growth.backend}; it serves no endpoint's traffic`);
    }
    for (const { backend, to } of goingAway()) {
      if (fits()) return;
      const from = books.count(backend);
      let count = from;
      while (count > Math.max(1, to) && !fits()) books.setCount(backend, --count);
      // Shrinking is worth it only if the step can then start at least one replica; else the backend makes way entirely.
      const worth = largestFit(growth) !== undefined;
      books.setCount(backend, from);
      if (count < from && worth)
        scaleTo(backend, count, `to make room for ${growth.backend}, keeping one replica serving until it is removed`);
    }
  };

  while (pending.length > 0) {
    const step = pending.shift()!;
    const growth = growthOf(step, books);
    if (growth === undefined) {
      const left = normalized(step);
      if (left !== undefined) emit(left);
      continue;
    }
    makeRoom(growth, () => growth.fits(growth.to));
    let count = largestFit(growth);
    if (count === undefined && step.op !== 'updateBackendConfig') {
      for (const { backend } of goingAway()) {
        if (largestFit(growth) !== undefined) break;
        const endpoints = routing.served(backend);
        if (books.count(backend) === 0) continue;
        const gap = endpoints.map((e) => `endpoint ${e}`).join(', ');
        scaleTo(
          backend,
          0,
          endpoints.length === 0
            ? `to make room for ${growth.backend}`
            : `no room for ${growth.backend} beside it: ${gap} answer${endpoints.length === 1 ? 's' : ''} 503 until ${growth.backend} takes the traffic`,
        );
      }
      count = largestFit(growth);
    }
    if (count === undefined) {
      if (step.op === 'updateBackendConfig') {
        rest.push(step);
        continue;
      }
      throw new FlotillaError(
        'INSUFFICIENT_RESOURCES',
        `no order of the deploy's steps leaves room for a replica of ${growth.backend} (the file fits once applied, but not on the way there); scale down or delete what makes room in an earlier deploy`,
      );
    }
    const deferred = growth.to - count;
    if (step.op === 'updateBackendConfig') emit({ ...step, changes: { ...step.changes, numReplicas: count } });
    else if (step.op === 'createBackend' || step.op === 'updateBackend') {
      const spec = { ...step.spec, config: { ...step.spec.config, numReplicas: count } };
      const old = books.booking(step.backend);
      const inPlace =
        step.op === 'updateBackend' && old.count > 0 && !books.fits(step.backend, [old, { resources: spec.resources, count: 1 }]);
      emit({ ...step, spec, ...(deferred > 0 ? { deferred } : {}), ...(inPlace ? { inPlace } : {}) });
    }
    if (deferred > 0)
      rest.push({
        op: 'updateBackendConfig',
        backend: growth.backend,
        changes: { numReplicas: growth.to },
        previous: { numReplicas: count },
        reason: 'the rest of its replicas, now that there is room',
      });
  }
  for (const step of rest) {
    const growth = growthOf(step, books);
    if (growth !== undefined && !growth.fits(growth.to))
      throw new FlotillaError('INSUFFICIENT_RESOURCES', `no order of the deploy's steps leaves room for all replicas of ${growth.backend}`);
    const left = normalized(step);
    if (left !== undefined) emit(left);
  }
  return ordered;
}
