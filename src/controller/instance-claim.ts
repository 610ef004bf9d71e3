import { FlotillaError } from '../common/errors.js';
import { shortId } from '../common/ids.js';
import type { ContainerRuntime, InstanceOwner } from '../runtime/container-runtime.js';

const PROBE_TIMEOUT_MS = 2000;

/** Whether the recorded owner still serves: its admin API answers, with the owner's front door (or asks for a token). */
async function ownerAnswers(owner: InstanceOwner, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  try {
    const response = await fetch(`${owner.adminUrl}/api/health`, { signal: AbortSignal.timeout(timeoutMs) });
    if (response.status === 401 || response.status === 403) return true;
    const body = (await response.json().catch(() => ({}))) as { httpUrl?: unknown };
    return response.ok && body.httpUrl === owner.httpUrl;
  } catch {
    return false;
  }
}

/**
 * One control plane per instance on an engine, whatever its state directory or host: a marker on the engine records the
 * owner's admin API; a start finds a live owner and is refused, or a dead owner's marker and takes it over.
 */
export class InstanceClaim {
  private readonly nonce = shortId(8);

  private constructor(
    private readonly runtime: ContainerRuntime,
    private readonly instance: string,
  ) {}

  /** Refuses with INSTANCE_RUNNING when another live control plane serves the instance on this engine. */
  static async check(runtime: ContainerRuntime, instance: string, answers = ownerAnswers): Promise<InstanceClaim> {
    const owner = await runtime.readInstanceOwner(instance);
    if (owner !== undefined && (await answers(owner))) {
      throw new FlotillaError(
        'INSTANCE_RUNNING',
        `instance '${instance}' is already run by process ${owner.pid} on this Docker engine (admin API ${owner.adminUrl}, ` +
          `HTTP ${owner.httpUrl}); stop it (flotilla shutdown --address ${owner.adminUrl}), or pick another instance name (FLOTILLA_INSTANCE)`,
        { owner: { adminUrl: owner.adminUrl, httpUrl: owner.httpUrl, pid: owner.pid } },
      );
    }
    return new InstanceClaim(runtime, instance);
  }

  /** Records this control plane, now listening, as the instance's owner. */
  take(adminUrl: string, httpUrl: string): Promise<void> {
    return this.runtime.writeInstanceOwner(this.instance, { adminUrl, httpUrl, pid: process.pid, nonce: this.nonce });
  }

  /** Gives the marker up, unless another control plane has taken it over since. */
  release(): Promise<void> {
    return this.runtime.removeInstanceOwner(this.instance, this.nonce).catch(() => undefined);
  }
}
