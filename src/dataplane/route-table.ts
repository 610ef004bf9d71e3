export interface RouteEntry {
  endpoint: string;
  route: string;
  methods: string[];
}

/** Longest-prefix route matching at '/' boundaries: '/a' matches '/a' and '/a/b', never '/ab'. */
export class RouteTable {
  private readonly entries: RouteEntry[];

  constructor(entries: RouteEntry[]) {
    this.entries = [...entries].sort((a, b) => b.route.length - a.route.length);
  }

  match(path: string): RouteEntry | undefined {
    return this.entries.find(({ route }) => route === '/' || path === route || path.startsWith(`${route}/`));
  }

  list(): RouteEntry[] {
    return [...this.entries].sort((a, b) => a.route.localeCompare(b.route));
  }
}
