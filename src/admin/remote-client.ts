import type {
  BackendConfig,
  BackendDefinition,
  BackendInfo,
  Client,
  ConnectOptions,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
  HandleOptions,
  ReplicaInfo,
  ServeHandle,
  ShadowStats,
} from '../api.js';
import { withAbsoluteContext } from '../client.js';
import { ERROR_STATUS, FlotillaError, errorMessage, type ErrorCode } from '../common/errors.js';
import { toShippable } from '../controller/definition.js';
import { fromWire, toWire, type WireValue } from './wire.js';

type Call = <T>(method: string, path: string, body?: unknown, timeoutMs?: number) => Promise<T>;

const HEALTH_TIMEOUT_MS = 5000;

function caller(address: string, token: string | undefined): Call {
  const base = address.replace(/\/+$/, '');
  return async <T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> => {
    const headers: Record<string, string> = {};
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(timeoutMs === undefined ? {} : { signal: AbortSignal.timeout(timeoutMs) }),
      });
    } catch (error) {
      throw new FlotillaError(
        'ENGINE_UNAVAILABLE',
        `no Flotilla admin API answers at ${base} (${errorMessage((error as Error).cause ?? error)}); is it running?`,
      );
    }
    const payload = (await response.json().catch(() => ({}))) as {
      error?: { code?: string; message?: string; details?: Record<string, unknown> };
    };
    if (!response.ok) {
      const code = (payload.error?.code ?? '') in ERROR_STATUS ? (payload.error?.code as ErrorCode) : 'INVALID_ARGUMENT';
      throw new FlotillaError(code, payload.error?.message ?? `admin API answered ${response.status}`, payload.error?.details);
    }
    return payload as T;
  };
}

class RemoteServeHandle implements ServeHandle {
  constructor(
    private readonly call: Call,
    readonly endpoint: string,
    private readonly handleOptions: HandleOptions,
  ) {}

  options(options: HandleOptions): ServeHandle {
    return new RemoteServeHandle(this.call, this.endpoint, { ...this.handleOptions, ...options });
  }

  async remote(body?: unknown): Promise<unknown> {
    const input = body === undefined ? undefined : toWire(body);
    const result = await this.call<WireValue>('POST', `/api/endpoints/${encodeURIComponent(this.endpoint)}/call`, {
      input,
      ...this.handleOptions,
    });
    return fromWire(result);
  }
}

/**
 * A client of a Flotilla running elsewhere, over its admin API: the same
 * interface as the in-process one, shipping functions and classes as source.
 * Context directories are made absolute here and must exist where the
 * control plane runs.
 */
class RemoteClient implements Client {
  constructor(
    readonly httpUrl: string,
    private readonly call: Call,
  ) {}

  async createBackend(name: string, definition: BackendDefinition, options?: CreateBackendOptions): Promise<void> {
    await this.call('POST', '/api/backends', { name, definition: toShippable(definition), options: withAbsoluteContext(options) });
  }
  listBackends(): Promise<Record<string, BackendInfo>> {
    return this.call('GET', '/api/backends');
  }
  getBackendConfig(name: string): Promise<BackendInfo> {
    return this.call('GET', `/api/backends/${encodeURIComponent(name)}`);
  }
  async updateBackendConfig(name: string, config: Partial<BackendConfig>): Promise<void> {
    await this.call('PATCH', `/api/backends/${encodeURIComponent(name)}/config`, config);
  }
  async deleteBackend(name: string, options: DeleteBackendOptions = {}): Promise<void> {
    await this.call('DELETE', `/api/backends/${encodeURIComponent(name)}${options.force === true ? '?force=true' : ''}`);
  }
  listReplicas(backend: string): Promise<ReplicaInfo[]> {
    return this.call('GET', `/api/backends/${encodeURIComponent(backend)}/replicas`);
  }
  async createEndpoint(name: string, options: CreateEndpointOptions): Promise<void> {
    await this.call('POST', '/api/endpoints', { name, ...options });
  }
  listEndpoints(): Promise<Record<string, EndpointInfo>> {
    return this.call('GET', '/api/endpoints');
  }
  async deleteEndpoint(name: string): Promise<void> {
    await this.call('DELETE', `/api/endpoints/${encodeURIComponent(name)}`);
  }
  async setTraffic(endpoint: string, weights: Record<string, number>): Promise<void> {
    await this.call('PUT', `/api/endpoints/${encodeURIComponent(endpoint)}/traffic`, { weights });
  }
  async shadowTraffic(endpoint: string, backend: string, proportion: number): Promise<void> {
    await this.call('PUT', `/api/endpoints/${encodeURIComponent(endpoint)}/shadows/${encodeURIComponent(backend)}`, { proportion });
  }
  getShadowStats(endpoint: string): Promise<Record<string, ShadowStats>> {
    return this.call('GET', `/api/endpoints/${encodeURIComponent(endpoint)}/shadow-stats`);
  }
  /** Unlike the in-process client, an unknown endpoint is reported by remote(), not here. */
  getHandle(endpoint: string): ServeHandle {
    return new RemoteServeHandle(this.call, endpoint, {});
  }
  async shutdown(): Promise<void> {
    await this.call('POST', '/api/shutdown');
  }
}

/** Connects to a running Flotilla's admin API. */
export async function connect(options: ConnectOptions): Promise<Client> {
  const call = caller(options.address, options.token);
  const { httpUrl } = await call<{ httpUrl: string }>('GET', '/api/health', undefined, HEALTH_TIMEOUT_MS);
  return new RemoteClient(httpUrl, call);
}
