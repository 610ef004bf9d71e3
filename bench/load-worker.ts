import { parentPort, workerData } from 'node:worker_threads';
import { generateLoad, type LoadOptions } from './load-generator.js';

/** Runs one load in a worker thread, so the generator never shares an event loop with the proxy it measures. */
const result = await generateLoad(workerData as LoadOptions);
parentPort?.postMessage(result);
