import { request, type RequestOptions } from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';

export interface StreamJob {
  target: RequestOptions;
  /** Bytes each stream must have, or it counts as failed. */
  expected: number;
  chunks: number;
  count: number;
}

export interface Sample {
  ttfbMs: number;
  chunksPerS: number;
}

/** One stream on a fresh connection: when its first byte came, and its chunks over the whole time. */
function measureOne({ target, expected, chunks }: StreamJob): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let first: number | undefined;
    let bytes = 0;
    request({ ...target, method: 'GET', agent: false }, (res) => {
      res.on('data', (chunk: Buffer) => {
        first ??= performance.now();
        bytes += chunk.length;
      });
      res.on('end', () => {
        if (bytes !== expected) return reject(new Error(`expected ${expected} bytes, got ${bytes}`));
        const ended = performance.now();
        resolve({ ttfbMs: (first ?? ended) - started, chunksPerS: chunks / ((ended - started) / 1000) });
      });
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

const job = workerData as StreamJob;
const samples: Sample[] = [];
for (let n = 0; n < job.count; n++) samples.push(await measureOne(job));
parentPort?.postMessage(samples);
