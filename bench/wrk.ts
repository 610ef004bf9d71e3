import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export interface WrkResult {
  requests: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000 };

function latencyMs(output: string, percent: string): number {
  const match = new RegExp(`^\\s+${percent}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(output);
  if (match === null) throw new Error(`wrk printed no ${percent}% latency:\n${output}`);
  return Number(match[1]) * (UNIT_MS[match[2]!] ?? NaN);
}

function count(output: string, pattern: RegExp): number {
  const match = pattern.exec(output);
  return match === null ? 0 : Number(match[1]);
}

/** Runs wrk (one thread, `connections` keep-alive connections) against the URL for `seconds` and reads its summary. */
export async function runWrk(url: string, connections: number, seconds: number, timeoutS: number): Promise<WrkResult> {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, `--timeout`, `${timeoutS}s`, '--latency', url];
  const { stdout } = await promisify(execFile)('wrk', args, { encoding: 'utf8' });
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  return {
    requests: count(stdout, /^\s*(\d+) requests in/m),
    seconds: count(stdout, /requests in ([\d.]+)s/),
    p50Ms: latencyMs(stdout, '50'),
    p99Ms: latencyMs(stdout, '99'),
    errors: count(stdout, /Non-2xx or 3xx responses: (\d+)/) + (socketErrors?.slice(1).reduce((n, v) => n + Number(v), 0) ?? 0),
  };
}
