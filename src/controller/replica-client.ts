import { FlotillaError, errorMessage, isFlotillaError } from '../common/errors.js';
import { PROTOCOL, type HandlerErrorBody, type LiveConfig } from '../replica/protocol.js';
import { replicaStatus, requestReplica } from '../dataplane/replica-request.js';
import type { ReplicaTarget } from '../runtime/container-runtime.js';

/** The most of a config push's answer read: a replica's OK or its reconfigure error. */
const CONFIG_REPLY_BYTES = 64 * 1024;

async function call(
  target: ReplicaTarget,
  method: string,
  path: string,
  timeoutMs: number,
  body?: string,
  extraHeaders: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  const headers = {
    ...extraHeaders,
    ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }),
  };
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const request = { method, path, headers, ...(body === undefined ? {} : { body }), agent: false as const, signal };
    const reply = await requestReplica(target, request, CONFIG_REPLY_BYTES, 'a config reply');
    return { status: reply.status, text: reply.body.toString('utf8') };
  } catch (error) {
    throw signal.aborted ? new Error(`no answer within ${timeoutMs} ms`) : error;
  }
}

/** The replica's health status code, or undefined when it cannot be reached within timeoutMs. */
export async function probeHealth(
  target: ReplicaTarget,
  timeoutMs: number,
  path: string = PROTOCOL.healthPath,
): Promise<number | undefined> {
  try {
    return await replicaStatus(target, { method: 'GET', path, agent: false, signal: AbortSignal.timeout(timeoutMs) });
  } catch {
    return undefined;
  }
}

/**
 * Applies live config to a running replica, presenting its control secret; a reconfigure that throws is
 * RECONFIGURE_FAILED, and so is a replica that refuses the secret (403).
 */
export async function pushConfig(target: ReplicaTarget, controlSecret: string, config: LiveConfig, timeoutMs: number): Promise<void> {
  let reply;
  try {
    const headers = { [PROTOCOL.controlSecretHeader]: controlSecret };
    reply = await call(target, 'PUT', PROTOCOL.configPath, timeoutMs, JSON.stringify(config), headers);
  } catch (error) {
    // A replica that answered with too much answered: a refusal of the config, not a replica that cannot be reached.
    const code = isFlotillaError(error, 'RESPONSE_TOO_LARGE') ? 'RECONFIGURE_FAILED' : 'REPLICA_UNREACHABLE';
    throw new FlotillaError(code, `could not reconfigure a replica: ${errorMessage(error)}`, undefined, { cause: error });
  }
  if (reply.status === 200) return;
  if (reply.status === 403) {
    throw new FlotillaError('RECONFIGURE_FAILED', `the replica refused Flotilla's control secret (${reply.text}); replace the replica`);
  }
  let detail: HandlerErrorBody['error'] | undefined;
  try {
    detail = (JSON.parse(reply.text) as HandlerErrorBody).error;
  } catch {
    detail = undefined;
  }
  const message = detail?.message ?? `replica answered ${reply.status}: ${reply.text}`;
  throw new FlotillaError(detail?.code === 'INVALID_CONFIG' ? 'INVALID_ARGUMENT' : 'RECONFIGURE_FAILED', message);
}
