import type { ReplicaResources } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { FlotillaConfig } from '../config/config.js';
import type { ReplicaConfinement } from '../runtime/container-runtime.js';

/** What an image that starts as its own user (often root) needs to switch to a lesser one, as nginx's master does. */
const IMAGE_USER_CAPABILITIES = ['CHOWN', 'SETUID', 'SETGID'];

/**
 * How a backend's replicas are confined: replicaUser and no capabilities (a plain HTTP container keeps its image's USER,
 * with the capabilities to switch users, only when the backend asks), a read-only root filesystem unless the backend opts out, the shared isolated network or none, and the
 * pids limit. Options missing from an older checkpoint take their defaults.
 */
export function confinementOf(
  backend: string,
  resources: ReplicaResources,
  settings: Pick<FlotillaConfig, 'replicaUser' | 'replicaPidsLimit' | 'replicaNetwork' | 'transport'>,
  plainHttp: boolean,
): ReplicaConfinement {
  const noNetwork = resources.network === 'none';
  if (noNetwork && (plainHttp || settings.transport !== 'unix')) {
    throw new FlotillaError(
      'INVALID_ARGUMENT',
      `backend '${backend}' asks for replicaOptions.network 'none', which needs the unix transport and the replica protocol; ` +
        `this control plane uses the ${plainHttp ? 'tcp transport for a plain HTTP container' : `${settings.transport} transport`}: remove the option`,
    );
  }
  const imageUser = plainHttp && resources.runAsImageUser === true;
  return {
    user: imageUser ? undefined : settings.replicaUser,
    capAdd: imageUser ? IMAGE_USER_CAPABILITIES : [],
    readOnlyRootfs: resources.readOnlyRootfs !== false,
    network: noNetwork ? { kind: 'none' } : { kind: 'isolated', name: settings.replicaNetwork },
    pidsLimit: settings.replicaPidsLimit,
  };
}
