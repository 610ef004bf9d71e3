export interface LoadResult {
  statuses: Map<number | string, number>;
  total: number;
}

/**
 * Closed-loop load: `workers` loops send `request()` one after another until
 * stop() is called (or maxSeconds pass). Counts every status; a network error
 * counts as its error name.
 */
export function startLoad(request: () => Promise<Response>, workers: number, maxSeconds = 120): { stop(): Promise<LoadResult> } {
  const statuses = new Map<number | string, number>();
  let running = true;
  const deadline = Date.now() + maxSeconds * 1000;
  const loops = Array.from({ length: workers }, async () => {
    while (running && Date.now() < deadline) {
      let key: number | string;
      try {
        const response = await request();
        await response.arrayBuffer();
        key = response.status;
      } catch (error) {
        key = (error as Error).name;
      }
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return { statuses, total: [...statuses.values()].reduce((a, b) => a + b, 0) };
    },
  };
}
