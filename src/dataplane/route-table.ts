import { ROUTE_PARAM, segmentsOf } from '../spec/routes.js';

export interface RouteEntry {
  endpoint: string;
  route: string;
  methods: string[];
  /** HTTP callers may choose a class method with X-SERVE-CALL-METHOD. */
  allowCallMethod?: true;
}

/** A route that matched a path, with the values of its path parameters ('/api/{username}' on '/api/ada': { username: 'ada' }). */
export interface RouteMatch extends RouteEntry {
  params: Record<string, string>;
}

type Segment = { literal: string } | { param: string };

interface CompiledRoute {
  entry: RouteEntry;
  segments: Segment[];
}

function compile(entry: RouteEntry): CompiledRoute {
  const segments = segmentsOf(entry.route).map((segment): Segment => {
    const param = ROUTE_PARAM.exec(segment)?.[1];
    return param === undefined ? { literal: segment } : { param };
  });
  return { entry, segments };
}

/** More segments first; at equal length, the first segment where they differ decides: a literal before a parameter. */
function precedence(a: CompiledRoute, b: CompiledRoute): number {
  if (a.segments.length !== b.segments.length) return b.segments.length - a.segments.length;
  for (let i = 0; i < a.segments.length; i++) {
    const aParam = 'param' in a.segments[i]!;
    const bParam = 'param' in b.segments[i]!;
    if (aParam !== bParam) return aParam ? 1 : -1;
  }
  return 0;
}

function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * Longest-prefix route matching at '/' boundaries: '/a' matches '/a' and '/a/b', never '/ab'. A segment `{name}`
 * matches any one non-empty segment, whose decoded value is the parameter `name`; where routes of as many segments
 * match, the one with a literal segment earlier wins ('/api/admin' before '/api/{username}').
 */
export class RouteTable {
  private readonly routes: CompiledRoute[];

  constructor(entries: RouteEntry[]) {
    this.routes = entries.map(compile).sort(precedence);
  }

  match(path: string): RouteMatch | undefined {
    const parts = segmentsOf(path);
    for (const { entry, segments } of this.routes) {
      if (segments.length > parts.length) continue;
      const params: Record<string, string> = {};
      const matches = segments.every((segment, index) => {
        const part = parts[index]!;
        if ('literal' in segment) return segment.literal === part;
        if (part === '') return false;
        params[segment.param] = decoded(part);
        return true;
      });
      if (matches) return { ...entry, params };
    }
    return undefined;
  }

  list(): RouteEntry[] {
    return this.routes.map(({ entry }) => entry).sort((a, b) => a.route.localeCompare(b.route));
  }
}
