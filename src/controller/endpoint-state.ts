import type { EndpointInfo } from '../api.js';
import { FlotillaError } from '../common/errors.js';
import type { EndpointRecord } from '../spec/saved-state.js';
import { routeShape } from '../dataplane/route-table.js';

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
  usersOf(backend: string): string[] {
    return this.list()
      .filter((endpoint) => backend in endpoint.traffic || backend in endpoint.shadows)
      .map((endpoint) => endpoint.name);
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
