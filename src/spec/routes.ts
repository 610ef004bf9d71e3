/** A whole path segment `{name}`: a path parameter. */
export const ROUTE_PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

export function segmentsOf(path: string): string[] {
  return path === '/' ? [] : path.split('/').slice(1);
}

/** The route with its parameters' names blanked: two routes of one shape serve the same paths ('/u/{a}' and '/u/{b}'). */
export function routeShape(route: string): string {
  return segmentsOf(route)
    .map((segment) => (ROUTE_PARAM.test(segment) ? '{}' : segment))
    .join('/');
}
