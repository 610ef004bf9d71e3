import { FlotillaError } from '../common/errors.js';

export interface Gpu {
  id: string;
  name?: string;
}

export interface Capacity {
  cpus: number;
  memoryMb: number;
  gpus: Gpu[];
}

export interface ResourceRequest {
  numCpus: number;
  memoryMb: number | null;
  numGpus: number;
  /** Cluster only: constraints on the node, as PLACEMENT_CONSTRAINT reads them. */
  placementConstraints?: string[];
}

/** Swarm's constraint syntax for the node attributes Flotilla knows: `node.hostname==a`, `node.labels.zone!=b`. */
export const PLACEMENT_CONSTRAINT = /^(node\.(?:hostname|id|role|labels\.[A-Za-z0-9_.-]+))\s*(==|!=)\s*([^\s=!]+)$/;

function holds(constraint: string, attributes: Record<string, string>): boolean {
  const [, key = '', operator, value] = PLACEMENT_CONSTRAINT.exec(constraint) ?? [];
  return (attributes[key] === value) === (operator === '==');
}

export interface Placement {
  cpus: number;
  memoryMb: number | null;
  gpuIds: string[];
  /** Share of each GPU in gpuIds this replica holds (1 for whole GPUs). */
  gpuShare: number;
  /** The cluster node the replica is placed on; absent on one machine. */
  node?: string;
}

/** A node of a cluster as the engine reports it: what it has, and whether it takes new replicas. */
export interface NodeCapacity {
  name: string;
  capacity: Capacity;
  ready: boolean;
  /** What placement constraints are checked against: node.hostname, node.id, node.role, node.labels.<name>. */
  attributes?: Record<string, string>;
}

const EPSILON = 1e-9;

/** '1 CPU', '0.5 CPU', '2 CPUs'. */
function plural(amount: number, unit: string): string {
  return `${amount} ${unit}${amount > 1 ? 's' : ''}`;
}

function round(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

type Free = { cpus: number; memoryMb: number; gpus: Record<string, number> };

/** One machine's books: its capacity, the placements on it and how much of each GPU is taken. */
class Book {
  readonly placements = new Map<string, Placement>();
  readonly gpuUse = new Map<string, number>();

  attributes: Record<string, string> = {};

  constructor(
    public capacity: Capacity,
    public ready = true,
  ) {
    for (const gpu of capacity.gpus) this.gpuUse.set(gpu.id, 0);
  }

  /** Updates the capacity (a node's inventory changed), keeping the use of GPUs that are still there. */
  resize(capacity: Capacity): void {
    this.capacity = capacity;
    for (const gpu of capacity.gpus) if (!this.gpuUse.has(gpu.id)) this.gpuUse.set(gpu.id, 0);
  }

  /** What this machine lacks for the request, or the GPUs it would give it. */
  fit(request: ResourceRequest): { shortOf: string[]; gpuIds: string[] } {
    const free = this.free();
    const shortOf: string[] = [];
    if (request.numCpus > free.cpus + EPSILON) {
      shortOf.push(`${plural(request.numCpus, 'CPU')}, ${free.cpus} of ${this.capacity.cpus} free`);
    }
    if (request.memoryMb !== null && request.memoryMb > free.memoryMb + EPSILON) {
      shortOf.push(`${request.memoryMb} MB of memory, ${free.memoryMb} of ${this.capacity.memoryMb} MB free`);
    }
    const gpuIds = request.numGpus > 0 ? this.pickGpus(request.numGpus) : [];
    if (gpuIds === undefined) shortOf.push(`${plural(request.numGpus, 'GPU')} (${this.describeFreeGpus()})`);
    return { shortOf, gpuIds: gpuIds ?? [] };
  }

  add(replicaId: string, placement: Placement): void {
    this.placements.set(replicaId, placement);
    for (const id of placement.gpuIds) this.gpuUse.set(id, round((this.gpuUse.get(id) ?? 0) + placement.gpuShare));
  }

  remove(replicaId: string): void {
    const placement = this.placements.get(replicaId);
    if (placement === undefined) return;
    this.placements.delete(replicaId);
    for (const id of placement.gpuIds) this.gpuUse.set(id, round((this.gpuUse.get(id) ?? 0) - placement.gpuShare));
  }

  free(): Free {
    let cpus = this.capacity.cpus;
    let memoryMb = this.capacity.memoryMb;
    for (const placement of this.placements.values()) {
      cpus -= placement.cpus;
      memoryMb -= placement.memoryMb ?? 0;
    }
    const gpus = Object.fromEntries([...this.gpuUse].map(([id, used]) => [id, round(1 - used)]));
    return { cpus: round(cpus), memoryMb: round(memoryMb), gpus };
  }

  private pickGpus(numGpus: number): string[] | undefined {
    if (numGpus >= 1) {
      const idle = [...this.gpuUse].filter(([, used]) => used < EPSILON).map(([id]) => id);
      return idle.length >= numGpus ? idle.slice(0, numGpus) : undefined;
    }
    const candidates = [...this.gpuUse].filter(([, used]) => used + numGpus <= 1 + EPSILON).sort((a, b) => b[1] - a[1]);
    const best = candidates[0];
    return best === undefined ? undefined : [best[0]];
  }

  private describeFreeGpus(): string {
    if (this.capacity.gpus.length === 0) return 'this machine has no GPUs in its inventory';
    return [...this.gpuUse].map(([id, used]) => `GPU ${id}: ${round(1 - used)} free`).join(', ');
  }
}

const ONE_MACHINE = '';

/**
 * Books CPU, memory and GPUs for replicas against the capacity of one machine or of each node of a cluster. Whole-GPU
 * requests take GPUs nobody uses; fractional ones are packed onto the fullest GPU they still fit on, so 0.5 + 0.5
 * share one device and a third 0.5 goes to the next. On a cluster a replica goes to the ready node with the most CPUs
 * free that fits it whole (so replicas spread), and GPUs are packed per node. A request that does not fit is refused
 * and changes nothing.
 */
export class Scheduler {
  private readonly books = new Map<string, Book>();
  private readonly nodeOf = new Map<string, string>();

  constructor(capacity?: Capacity) {
    if (capacity !== undefined) this.books.set(ONE_MACHINE, new Book(capacity));
  }

  /** A scheduler for a cluster; setNodes keeps it up to date. */
  static ofNodes(nodes: NodeCapacity[]): Scheduler {
    const scheduler = new Scheduler();
    scheduler.setNodes(nodes);
    return scheduler;
  }

  /** Nodes that are gone or not ready take no new replicas; the placements on them stay booked until released. */
  setNodes(nodes: NodeCapacity[]): void {
    const seen = new Set<string>();
    for (const node of nodes) {
      seen.add(node.name);
      const book = this.books.get(node.name);
      const kept = book ?? new Book(node.capacity, node.ready);
      kept.resize(node.capacity);
      kept.ready = node.ready;
      kept.attributes = { 'node.hostname': node.name, ...node.attributes };
      this.books.set(node.name, kept);
    }
    for (const [name, book] of this.books) if (!seen.has(name)) book.ready = false;
  }

  /** On a cluster, `avoid` names a node to use only when no other fits (where the replica being replaced failed). */
  reserve(replicaId: string, request: ResourceRequest, avoid?: string): Placement {
    const one = this.books.get(ONE_MACHINE);
    const constraints = request.placementConstraints ?? [];
    if (one !== undefined) {
      if (constraints.length > 0) {
        throw new FlotillaError(
          'INVALID_ARGUMENT',
          'replicaOptions.placementConstraints place replicas on the nodes of a cluster; this control plane runs them on one engine (runtime docker): remove them, or use runtime swarm',
        );
      }
      const { shortOf, gpuIds } = one.fit(request);
      if (shortOf.length > 0) {
        throw new FlotillaError('INSUFFICIENT_RESOURCES', `not enough resources: a replica needs ${shortOf.join(' and ')}`, {
          asked: request,
          free: this.free(),
        });
      }
      return this.book(replicaId, ONE_MACHINE, request, gpuIds);
    }
    const eligible = [...this.books].filter(([, book]) => book.ready && constraints.every((c) => holds(c, book.attributes)));
    if (eligible.length === 0 && constraints.length > 0) {
      throw new FlotillaError(
        'INSUFFICIENT_RESOURCES',
        `not enough resources: no ready node meets the placement constraints ${constraints.join(', ')}`,
        { asked: request },
      );
    }
    const candidates = eligible
      .map(([name, book]) => ({ name, book, ...book.fit(request) }))
      .filter((candidate) => candidate.shortOf.length === 0)
      .sort(
        (a, b) =>
          Number(a.name === avoid) - Number(b.name === avoid) || b.book.free().cpus - a.book.free().cpus || a.name.localeCompare(b.name),
      );
    const best = candidates[0];
    if (best === undefined) throw this.fitsNowhere(request, new Set(eligible.map(([name]) => name)));
    return this.book(replicaId, best.name, request, best.gpuIds);
  }

  /** Records a placement made earlier (a replica adopted after a restart). */
  adopt(replicaId: string, placement: Placement): void {
    this.release(replicaId);
    const name = placement.node ?? ONE_MACHINE;
    let book = this.books.get(name);
    if (book === undefined) {
      book = new Book({ cpus: 0, memoryMb: 0, gpus: [] }, false);
      this.books.set(name, book);
    }
    book.add(replicaId, placement);
    this.nodeOf.set(replicaId, name);
  }

  release(replicaId: string): void {
    const name = this.nodeOf.get(replicaId);
    if (name === undefined) return;
    this.nodeOf.delete(replicaId);
    this.books.get(name)?.remove(replicaId);
  }

  /** How many more replicas of `request` fit now, up to `limit`, and the refusal that stopped the count short; books nothing. */
  room(request: ResourceRequest, limit: number): { fits: number; refusal: FlotillaError | undefined } {
    const ids: string[] = [];
    try {
      while (ids.length < limit) {
        const id = `room:${ids.length}`;
        this.reserve(id, request);
        ids.push(id);
      }
      return { fits: ids.length, refusal: undefined };
    } catch (error) {
      if (!(error instanceof FlotillaError)) throw error;
      return { fits: ids.length, refusal: error };
    } finally {
      ids.forEach((id) => this.release(id));
    }
  }

  /** What replicas may reserve in all; on a cluster, the sum over the ready nodes, with GPUs named node/id. */
  get capacity(): Capacity {
    const one = this.books.get(ONE_MACHINE);
    if (one !== undefined) return one.capacity;
    const total: Capacity = { cpus: 0, memoryMb: 0, gpus: [] };
    for (const [name, book] of this.books) {
      if (!book.ready) continue;
      total.cpus = round(total.cpus + book.capacity.cpus);
      total.memoryMb = round(total.memoryMb + book.capacity.memoryMb);
      total.gpus.push(...book.capacity.gpus.map((gpu) => ({ ...gpu, id: `${name}/${gpu.id}` })));
    }
    return total;
  }

  /** What is free in all; on a cluster, over the ready nodes, with GPUs named node/id. */
  free(): Free {
    const one = this.books.get(ONE_MACHINE);
    if (one !== undefined) return one.free();
    const total: Free = { cpus: 0, memoryMb: 0, gpus: {} };
    for (const [name, book] of this.books) {
      if (!book.ready) continue;
      const free = book.free();
      total.cpus = round(total.cpus + free.cpus);
      total.memoryMb = round(total.memoryMb + free.memoryMb);
      for (const [id, share] of Object.entries(free.gpus)) total.gpus[`${name}/${id}`] = share;
    }
    return total;
  }

  private book(replicaId: string, node: string, request: ResourceRequest, gpuIds: string[]): Placement {
    const placement: Placement = {
      cpus: request.numCpus,
      memoryMb: request.memoryMb,
      gpuIds,
      gpuShare: request.numGpus >= 1 ? 1 : request.numGpus,
      ...(node === ONE_MACHINE ? {} : { node }),
    };
    this.adopt(replicaId, placement);
    return placement;
  }

  /** No ready node fits: names the largest node (by CPUs, then memory) and what it lacks. */
  private fitsNowhere(request: ResourceRequest, eligible: Set<string>): FlotillaError {
    const ready = [...this.books].filter(([name]) => eligible.has(name));
    const largest = ready.sort(([, a], [, b]) => b.capacity.cpus - a.capacity.cpus || b.capacity.memoryMb - a.capacity.memoryMb)[0];
    if (largest === undefined) {
      return new FlotillaError('INSUFFICIENT_RESOURCES', 'not enough resources: the cluster has no ready node', { asked: request });
    }
    const [name, book] = largest;
    const { capacity } = book;
    const size = `${plural(capacity.cpus, 'CPU')}, ${capacity.memoryMb} MB and ${plural(capacity.gpus.length, 'GPU')}`;
    return new FlotillaError(
      'INSUFFICIENT_RESOURCES',
      `not enough resources on any of ${ready.length} ready node(s)${request.placementConstraints?.length ? ' that meet the placement constraints' : ''}: a replica needs ${book.fit(request).shortOf.join(' and ') || 'more than is free'} on the largest node, ${name} (${size})`,
      { asked: request, free: this.free(), largestNode: name },
    );
  }
}
