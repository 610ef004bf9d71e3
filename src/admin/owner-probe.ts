import { isFlotillaError } from '../common/errors.js';
import type { InstanceOwner } from '../runtime/container-runtime.js';
import { openRemote } from './remote-client.js';

/** Whether the recorded owner still serves: its admin API answers with the owner's front door, or asks for a token. */
export async function ownerServes(owner: InstanceOwner): Promise<boolean> {
  try {
    return (await openRemote({ address: owner.adminUrl, token: '' })).health.httpUrl === owner.httpUrl;
  } catch (error) {
    return isFlotillaError(error, 'UNAUTHORIZED') || isFlotillaError(error, 'FORBIDDEN');
  }
}
