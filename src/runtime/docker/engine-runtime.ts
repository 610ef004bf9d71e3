import type { ContainerRuntime } from '../container-runtime.js';
import { DockerRuntime } from './docker-runtime.js';
import { SwarmRuntime } from './swarm-runtime.js';

/** The runtime the settings select: one engine, or the Swarm whose manager is the engine at the socket. */
export function engineRuntime(config: {
  runtime: 'docker' | 'swarm';
  dockerSocket: string;
  swarmRegistry: string;
  swarmNetwork: string;
  swarmEncrypted: boolean;
  replicaLogMaxMb: number;
  replicaLogFiles: number;
  replicaTmpMb: number;
}): ContainerRuntime {
  const bounds = { logMaxMb: config.replicaLogMaxMb, logFiles: config.replicaLogFiles, tmpMb: config.replicaTmpMb };
  return config.runtime === 'swarm'
    ? new SwarmRuntime(
        config.dockerSocket,
        { registry: config.swarmRegistry, network: config.swarmNetwork, encrypted: config.swarmEncrypted },
        bounds,
      )
    : new DockerRuntime(config.dockerSocket, bounds);
}
