import type { EndpointInfo } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { EndpointRecord } from '../spec/saved-state.js';
import { routeShape } from '../spec/routes.js';
import { validateEndpointOptions, validateName, validateProportion, validateTraffic } from '../spec/validation.js';

/** Whether a backend exists and is not being deleted. */
type IsLive = (backend: string) => boolean;

/** Endpoints: their routes, traffic and shadows, and which backends they use. Changed only by the controller after a save. */
export class EndpointState {
  private readonly endpoints = new Map<string, EndpointRecord>();

  constructor(saved: EndpointRecord[] = []) {
    for (const endpoint of saved) this.endpoints.set(endpoint.name, endpoint);
  }

  get size(): number {
    return this.endpoints.size;
  }

  has(name: string): boolean {
    return this.endpoints.has(name);
  }

  get(name: string): EndpointRecord {
    const record = this.endpoints.get(name);
    if (record === undefined) throw new FlotillaError('ENDPOINT_NOT_FOUND', `endpoint '${name}' does not exist`);
    return record;
  }

  list(): EndpointRecord[] {
    return [...this.endpoints.values()];
  }

  /** The endpoints as they would be with `record` set (or `name` removed), for saving before memory changes. */
  with(record: EndpointRecord): EndpointRecord[] {
    const next = new Map(this.endpoints);
    next.set(record.name, record);
    return [...next.values()];
  }

  without(name: string): EndpointRecord[] {
    return this.list().filter((endpoint) => endpoint.name !== name);
  }

  /** A new endpoint, checked against these and the live backends: to save, then set. */
  creating(name: string, options: unknown, isLive: IsLive): EndpointRecord {
    validateName(name, 'endpoint');
    const { backend, route, methods, allowCallMethod } = validateEndpointOptions(options);
    if (this.has(name)) throw new FlotillaError('ENDPOINT_EXISTS', `endpoint '${name}' already exists; delete it or choose another name`);
    if (!isLive(backend)) {
      throw new FlotillaError('BACKEND_NOT_FOUND', `endpoint '${name}' names backend '${backend}', which does not exist; create it first`);
    }
    const owner = this.routeOwner(route);
    if (owner !== undefined) throw new FlotillaError('ROUTE_TAKEN', `route '${route}' is already served by endpoint '${owner}'`);
    return { name, route, methods, traffic: { [backend]: 1 }, shadows: {}, ...(allowCallMethod ? { allowCallMethod } : {}) };
  }

  /** The endpoint with new traffic weights, checked: to save, then set. */
  withTraffic(name: string, weights: unknown, isLive: IsLive): EndpointRecord {
    validateName(name, 'endpoint');
    const traffic = validateTraffic(weights);
    const endpoint = this.get(name);
    const missing = Object.keys(traffic).filter((backend) => !isLive(backend));
    if (missing.length > 0) {
      throw new FlotillaError(
        'BACKEND_NOT_FOUND',
        `traffic of endpoint '${name}' names backend ${missing.map((m) => `'${m}'`).join(', ')}, which does not exist`,
      );
    }
    return { ...endpoint, traffic };
  }

  /** The endpoint with a shadow's proportion set (0 removes it), checked: to save, then set. */
  withShadow(name: string, backend: string, proportion: unknown, isLive: IsLive): EndpointRecord {
    validateName(name, 'endpoint');
    validateName(backend, 'backend');
    const share = validateProportion(proportion);
    const endpoint = this.get(name);
    if (!isLive(backend)) throw new FlotillaError('BACKEND_NOT_FOUND', `shadow backend '${backend}' does not exist`);
    const shadows = { ...endpoint.shadows };
    if (share === 0) delete shadows[backend];
    else shadows[backend] = share;
    return { ...endpoint, shadows };
  }

  set(record: EndpointRecord): void {
    this.endpoints.set(record.name, record);
  }

  delete(name: string): void {
    this.endpoints.delete(name);
  }

  clear(): void {
    this.endpoints.clear();
  }

  /** Names of the endpoints that send traffic or shadow traffic to `backend`. */
  private usersOf(backend: string): string[] {
    return this.list()
      .filter((endpoint) => backend in endpoint.traffic || backend in endpoint.shadows)
      .map((endpoint) => endpoint.name);
  }

  /** Throws BACKEND_IN_USE while an endpoint sends traffic or shadow traffic to `backend`. */
  checkUnused(backend: string): void {
    const users = this.usersOf(backend);
    if (users.length === 0) return;
    throw new FlotillaError(
      'BACKEND_IN_USE',
      `backend '${backend}' is used by endpoint ${users.map((u) => `'${u}'`).join(', ')}; delete the endpoint or move its traffic first`,
      { endpoints: users },
    );
  }

  routeOwner(route: string | null): string | undefined {
    return route === null
      ? undefined
      : this.list().find((endpoint) => endpoint.route !== null && routeShape(endpoint.route) === routeShape(route))?.name;
  }

  info(): Record<string, EndpointInfo> {
    return Object.fromEntries(
      this.list().map(({ name, ...e }) => [name, { ...e, methods: [...e.methods], traffic: { ...e.traffic }, shadows: { ...e.shadows } }]),
    );
  }

  routing(): EndpointRecord[] {
    return this.list().map((e) => ({ ...e }));
  }
}
