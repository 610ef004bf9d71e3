import { execFileSync } from 'node:child_process';
import { availableParallelism, totalmem } from 'node:os';
import type { Capacity, Gpu } from './scheduler.js';

function parseGpuList(list: string): Gpu[] {
  return list.split(',').map((item) => {
    const [id = '', name] = item.split('=');
    return name === undefined ? { id } : { id, name };
  });
}

/** GPUs that nvidia-smi reports, or none when it is not installed or fails. */
function detectGpus(): Gpu[] {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=index,name', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10_000 });
    return out
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        const [id = '', ...name] = line.split(',');
        return { id: id.trim(), name: name.join(',').trim() };
      });
  } catch {
    return [];
  }
}

/** What replicas may reserve: configured values, or what this machine has. */
export function machineCapacity(settings: { cpuCapacity: number; memoryCapacityMb: number; gpus: string }): Capacity {
  return {
    cpus: settings.cpuCapacity > 0 ? settings.cpuCapacity : availableParallelism(),
    memoryMb: settings.memoryCapacityMb > 0 ? settings.memoryCapacityMb : Math.floor(totalmem() / (1024 * 1024)),
    gpus: settings.gpus === 'auto' ? detectGpus() : settings.gpus === 'none' ? [] : parseGpuList(settings.gpus),
  };
}
