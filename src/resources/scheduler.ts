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
}

export interface Placement {
  cpus: number;
  memoryMb: number | null;
  gpuIds: string[];
  /** Share of each GPU in gpuIds this replica holds (1 for whole GPUs). */
  gpuShare: number;
}

const EPSILON = 1e-9;

/** '1 CPU', '0.5 CPU', '2 CPUs'. */
function plural(amount: number, unit: string): string {
  return `${amount} ${unit}${amount > 1 ? 's' : ''}`;
}

function round(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

/**
 * Books CPU, memory and GPUs for replicas against a fixed capacity. Whole-GPU
 * requests take GPUs nobody uses; fractional ones are packed onto the fullest
 * GPU they still fit on, so 0.5 + 0.5 share one device and a third 0.5 goes to
 * the next. A request that does not fit is refused and changes nothing.
 */
export class Scheduler {
  private readonly placements = new Map<string, Placement>();
  private readonly gpuUse = new Map<string, number>();

  constructor(readonly capacity: Capacity) {
    for (const gpu of capacity.gpus) this.gpuUse.set(gpu.id, 0);
  }

  reserve(replicaId: string, request: ResourceRequest): Placement {
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
    if (shortOf.length > 0) {
      throw new FlotillaError('INSUFFICIENT_RESOURCES', `not enough resources: a replica needs ${shortOf.join(' and ')}`, {
        asked: request,
        free,
      });
    }
    const placement: Placement = {
      cpus: request.numCpus,
      memoryMb: request.memoryMb,
      gpuIds: gpuIds ?? [],
      gpuShare: request.numGpus >= 1 ? 1 : request.numGpus,
    };
    this.adopt(replicaId, placement);
    return placement;
  }

  /** Records a placement made earlier (a replica adopted after a restart). */
  adopt(replicaId: string, placement: Placement): void {
    this.release(replicaId);
    this.placements.set(replicaId, placement);
    for (const id of placement.gpuIds) this.gpuUse.set(id, round((this.gpuUse.get(id) ?? 0) + placement.gpuShare));
  }

  release(replicaId: string): void {
    const placement = this.placements.get(replicaId);
    if (placement === undefined) return;
    this.placements.delete(replicaId);
    for (const id of placement.gpuIds) this.gpuUse.set(id, round((this.gpuUse.get(id) ?? 0) - placement.gpuShare));
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

  free(): { cpus: number; memoryMb: number; gpus: Record<string, number> } {
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
