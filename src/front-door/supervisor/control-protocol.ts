import { join } from 'node:path';
import type { Socket } from 'node:net';
import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { RoutingSnapshot } from '../../dataplane/dispatcher.js';
import type { ShadowCounts } from '../../dataplane/shadow.js';
import type { FrontDoorSettings } from '../server.js';
import type { FromWorker, RenderedMetrics, ToWorker, WorkerCount } from '../workers/worker-protocol.js';

/**
 * The version of the control socket's protocol. A control plane and a front door that speak different versions do
 * not attach: the front door refuses the hello with both versions named and keeps serving its last snapshot.
 */
export const CONTROL_PROTOCOL = 1;

/** The longest control message accepted (a routing snapshot of many backends fits well within). */
export const MAX_LINE_BYTES = 64 * 1024 * 1024;

/** What the front-door process is started with (`main.js <json>`): its settings, never a secret. */
export interface FrontDoorLaunch {
  instance: string;
  stateDir: string;
  http: FrontDoorSettings & { host: string; port: number; workers: number };
  streamIdleTimeoutMs: number;
  maxResponseBytes: number;
  logLevel: string;
  logFormat: string;
}

/** The folder of an instance's front door: its control socket and its log. */
export function frontDoorDir(stateDir: string, instance: string): string {
  return join(stateDir, 'run', instance);
}

export function controlSocketPath(stateDir: string, instance: string): string {
  return join(frontDoorDir(stateDir, instance), 'front-door.sock');
}

/** The front door's process id, for an operator (and a test) to signal it. */
export function frontDoorPidPath(stateDir: string, instance: string): string {
  return join(frontDoorDir(stateDir, instance), 'front-door.pid');
}

/** What the control plane asks the front door, as `{ t: 'ask', id, ...question }`, answered by `{ t: 'answer', id, ... }`. */
export type ControlQuestion =
  { q: 'drained'; backend: string; replica: string } | { q: 'endpointIdle'; endpoint: string } | { q: 'shadowCounts'; endpoint: string };

/**
 * Control plane → front door, one JSON object a line. `hello` comes first; lease messages (want, cancel, return) are
 * the workers' (worker-protocol.ts): the control plane's ServeHandles hold one seat at the front door's lease desk.
 */
export type ToFrontDoor =
  | { t: 'hello'; protocol: number; pid: number }
  /** Instead of hello: replace this front door by the one `main` starts (another build's), handing it the port. */
  | { t: 'upgrade'; protocol: number; main: string }
  | { t: 'snapshot'; snapshot: RoutingSnapshot }
  | { t: 'cut'; target: ReplicaTarget }
  | ({ t: 'ask'; id: number } & ControlQuestion)
  /** The answer to the front door's render (a /-/metrics scrape). */
  | { t: 'rendered'; id: number; rendered?: RenderedMetrics; error?: string }
  /** Stop serving: let requests finish for up to graceMs, then exit. */
  | { t: 'stop'; graceMs: number }
  | Extract<FromWorker, { t: 'want' | 'cancel' | 'return' }>;

/** Front door → control plane. */
export type FromFrontDoor =
  | { t: 'welcome'; protocol: number; pid: number; address: { host: string; port: number } }
  | { t: 'rejected'; protocol: number; code: string; message: string }
  /** The front door that `upgrade` started serves the port; this one drains and exits. */
  | { t: 'upgraded'; pid: number }
  | { t: 'answer'; id: number; counts?: Array<Record<string, ShadowCounts>> }
  /** Sent every LOAD_PUSH_MS: each backend's requests queued and in flight, and how many workers serve. */
  | { t: 'load'; ongoing: Record<string, number>; workers: WorkerCount }
  | { t: 'failed'; backend: string; replica: string }
  | { t: 'demand'; backend: string }
  | Extract<FromWorker, { t: 'metrics' }>
  /** Asks the control plane for the metrics, for a /-/metrics scrape. */
  | { t: 'render'; id: number }
  | Extract<ToWorker, { t: 'lease' | 'refused' | 'contended' }>;

/** Over the IPC channel, from the front door being replaced to its successor (with the listening server), and back. */
export type Handover =
  { t: 'handover'; snapshot?: RoutingSnapshot; demanded: string[] } | { t: 'serving' } | { t: 'failed'; message: string };

/** How often the front door sends its load (the autoscaler's signal) to the control plane. */
export const LOAD_PUSH_MS = 200;

/** Reads JSON lines from the socket; a line over MAX_LINE_BYTES or one that is not JSON ends the connection. */
export function onLines<T>(socket: Socket, receive: (message: T) => void): void {
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    if (buffered.length > MAX_LINE_BYTES) {
      socket.destroy(new Error(`a control message over ${MAX_LINE_BYTES} bytes`));
      return;
    }
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line === '') continue;
      let message: T;
      try {
        message = JSON.parse(line) as T;
      } catch {
        socket.destroy(new Error('a control message that is not JSON'));
        return;
      }
      receive(message);
    }
  });
}

export function sendLine(socket: Socket, message: ToFrontDoor | FromFrontDoor): void {
  if (socket.writable) socket.write(`${JSON.stringify(message)}\n`);
}
