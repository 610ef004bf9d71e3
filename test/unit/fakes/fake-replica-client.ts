import { FlotillaError } from '../../../src/common/errors.js';
import type { ReplicaClient } from '../../../src/controller/launcher.js';
import type { LiveConfig } from '../../../src/replica/protocol.js';
import type { ReplicaStatus, ReplicaTarget } from '../../../src/runtime/container-runtime.js';

const keyOf = (target: ReplicaTarget): string => ('port' in target ? String(target.port) : target.socketPath);

/** Replicas' answers: each target is 'starting' (no answer) until the test marks it ready; pushes are recorded. */
export class FakeReplicaClient implements ReplicaClient {
  readonly health = new Map<string, number | undefined>();
  readonly pushes: Array<{ port: string; config: LiveConfig }> = [];
  /** Ports whose config pushes the replica refuses (its reconfigure threw). */
  readonly refuse = new Set<string>();
  /** Ports whose config pushes find nobody answering (the replica died). */
  readonly unreachable = new Set<string>();
  /** While set, pushes wait for it before they are answered. */
  pushGate: Promise<void> | undefined;

  setHealth(status: ReplicaStatus | { target?: ReplicaTarget }, code: number | undefined): void {
    this.health.set(keyOf(status.target!), code);
  }
  probeHealth(target: ReplicaTarget): Promise<number | undefined> {
    return Promise.resolve(this.health.get(keyOf(target)));
  }
  async pushConfig(target: ReplicaTarget, _controlSecret: string, config: LiveConfig): Promise<void> {
    const port = keyOf(target);
    this.pushes.push({ port, config });
    if (this.pushGate !== undefined) await this.pushGate;
    if (this.unreachable.has(port)) throw new FlotillaError('REPLICA_UNREACHABLE', 'could not reconfigure a replica: connection refused');
    if (this.refuse.has(port)) throw new Error('reconfigure threw');
  }
}
