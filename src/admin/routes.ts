/** One admin API call: its method and path, `:name` standing for a path segment. */
export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
}

/** Every call of the admin API, as the server routes it and the remote client sends it. */
export const ROUTES = {
  health: { method: 'GET', path: '/api/health' },
  metrics: { method: 'GET', path: '/api/metrics' },
  listBackends: { method: 'GET', path: '/api/backends' },
  createBackend: { method: 'POST', path: '/api/backends' },
  getBackend: { method: 'GET', path: '/api/backends/:name' },
  updateBackend: { method: 'PUT', path: '/api/backends/:name' },
  updateBackendConfig: { method: 'PATCH', path: '/api/backends/:name/config' },
  deleteBackend: { method: 'DELETE', path: '/api/backends/:name' },
  listReplicas: { method: 'GET', path: '/api/backends/:name/replicas' },
  backendLogs: { method: 'GET', path: '/api/backends/:name/logs' },
  capacity: { method: 'GET', path: '/api/capacity' },
  builds: { method: 'GET', path: '/api/builds' },
  listEndpoints: { method: 'GET', path: '/api/endpoints' },
  createEndpoint: { method: 'POST', path: '/api/endpoints' },
  deleteEndpoint: { method: 'DELETE', path: '/api/endpoints/:name' },
  setTraffic: { method: 'PUT', path: '/api/endpoints/:name/traffic' },
  shadowTraffic: { method: 'PUT', path: '/api/endpoints/:name/shadows/:backend' },
  shadowStats: { method: 'GET', path: '/api/endpoints/:name/shadow-stats' },
  series: { method: 'GET', path: '/api/series' },
  dashboardCode: { method: 'POST', path: '/api/dashboard/codes' },
  dashboardSession: { method: 'POST', path: '/api/dashboard/sessions' },
  overview: { method: 'GET', path: '/api/overview' },
  events: { method: 'GET', path: '/api/events' },
  call: { method: 'POST', path: '/api/endpoints/:name/call' },
  stream: { method: 'POST', path: '/api/endpoints/:name/stream' },
  shutdown: { method: 'POST', path: '/api/shutdown' },
} as const satisfies Record<string, Route>;

export type RouteName = keyof typeof ROUTES;

/** The path of a call: each `:name` replaced, in order, by a value percent-encoded. */
export function pathOf(route: Route, ...params: string[]): string {
  let index = 0;
  return route.path.replace(/:[a-z]+/g, () => encodeURIComponent(params[index++] ?? ''));
}

/** A pattern matching the route's paths; each `:name` is a capture of one undecoded segment. */
export function patternOf(route: Route): RegExp {
  return new RegExp(`^${route.path.replace(/:[a-z]+/g, '([^/]+)')}$`);
}
