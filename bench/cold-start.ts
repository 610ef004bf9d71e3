import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type Client, type CreateBackendOptions } from '../src/index.js';

/**
 * Cold starts (docs/autoscaling.md#cold-start-cost): the time from the first request to an autoscaled backend at
 * zero replicas to its answer, image cached, for a Node function backend and a Python one. Side by side, in
 * alternating order each round, the baseline: the same image started by hand (updateBackendConfig numReplicas
 * 0 → 1 on a twin backend, then one request), so the ratio is what holding the request and the autoscaler's
 * decision add to a replica start. Settings: BENCH_ROUNDS (default 5).
 */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

function hello() {
  return 'hello';
}

const AUTOSCALING = {
  minReplicas: 0,
  maxReplicas: 1,
  metricsIntervalS: 0.1,
  lookBackPeriodS: 0.3,
  upscaleDelayS: 0,
  downscaleDelayS: 0.3,
};

const RUNTIMES: Record<'node' | 'python', { definition: Parameters<Client['createBackend']>[1]; options: CreateBackendOptions }> = {
  node: { definition: hello, options: { replicaOptions: { numCpus: 0.5 } } },
  python: {
    definition: 'hello.py:hello',
    options: {
      replicaOptions: {
        numCpus: 0.5,
        runtimeEnv: { runtime: 'python', context: join(import.meta.dirname, '..', '..', 'bench', 'cold-start-python') },
      },
    },
  },
};

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} took over 120 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function answer(url: string): Promise<void> {
  const response = await fetch(url);
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${url} answered ${response.status}: ${text}`);
}

async function main(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'flt-bench-cold-'));
  let client: Client | undefined;
  try {
    client = await serve.start({
      instance: 'bench-cold',
      stateDir,
      http: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      logLevel: 'warn',
      coldStartTimeoutS: 120,
    });
    const c = client;
    const rows: string[] = [];
    for (const [runtime, { definition, options }] of Object.entries(RUNTIMES)) {
      const cold = `${runtime}-cold`;
      const byHand = `${runtime}-manual`;
      await c.createBackend(cold, definition, { ...options, config: { autoscaling: AUTOSCALING } });
      await c.createBackend(byHand, definition, { ...options, config: { numReplicas: 0 } });
      await c.createEndpoint(cold, { backend: cold, route: `/${cold}` });
      await c.createEndpoint(byHand, { backend: byHand, route: `/${byHand}` });
      const samples = { cold: [] as number[], manual: [] as number[] };
      const measureCold = async (): Promise<number> => {
        await until(async () => (await c.listReplicas(cold)).length === 0, `${cold} scaling to zero`);
        const started = performance.now();
        await answer(`${c.httpUrl}/${cold}`);
        return performance.now() - started;
      };
      const measureManual = async (): Promise<number> => {
        const started = performance.now();
        await c.updateBackendConfig(byHand, { numReplicas: 1 });
        await answer(`${c.httpUrl}/${byHand}`);
        const elapsed = performance.now() - started;
        await c.updateBackendConfig(byHand, { numReplicas: 0 });
        return elapsed;
      };
      await measureCold();
      await measureManual();
      for (let round = 0; round < ROUNDS; round++) {
        if (round % 2 === 0) {
          samples.cold.push(await measureCold());
          samples.manual.push(await measureManual());
        } else {
          samples.manual.push(await measureManual());
          samples.cold.push(await measureCold());
        }
      }
      const coldMs = median(samples.cold);
      const manualMs = median(samples.manual);
      rows.push(
        `| ${runtime.padEnd(7)} | ${coldMs.toFixed(0).padStart(12)} | ${Math.min(...samples.cold).toFixed(0)}–${Math.max(...samples.cold).toFixed(0)} | ` +
          `${manualMs.toFixed(0).padStart(13)} | ${(coldMs / manualMs).toFixed(2)} |`,
      );
    }
    process.stdout.write(
      `cold starts, image cached, median of ${ROUNDS} rounds (ms)\n` +
        '| runtime | cold start | range | started by hand | ratio |\n| --- | --- | --- | --- | --- |\n' +
        `${rows.join('\n')}\n`,
    );
  } finally {
    await client?.shutdown();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

await main();
