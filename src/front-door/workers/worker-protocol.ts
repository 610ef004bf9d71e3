import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { RoutingSnapshot } from '../../dataplane/dispatcher.js';
import type { ControlPlaneState, FrontDoorSettings } from '../server.js';
import type { RoutedReplica } from '../../dataplane/replica-router.js';
import type { ShadowOutcome } from '../../dataplane/serving-metrics.js';
import type { ShadowCounts } from '../../dataplane/shadow.js';

/** What the primary asks a worker, as `{ t: 'ask', id, ...question }`; the worker answers `{ t: 'answer', id, ... }`. */
export type WorkerQuestion =
  /** Answered once no request for the endpoint is in flight in the worker. */
  | { q: 'endpointIdle'; endpoint: string }
  /** Answered once the worker has sent what it served so far. */
  | { q: 'flush' }
  /** Answered with `counts`. */
  | { q: 'shadowCounts'; endpoint: string }
  /** The heartbeat: answered at once by a worker whose event loop runs. */
  | { q: 'ping' };

/** How many workers serve, for the workers' /-/healthz. */
export interface WorkerCount {
  serving: number;
  configured: number;
}

export interface RenderedMetrics {
  contentType: string;
  body: string;
}

/**
 * The messages between the control plane (the primary) and its front-door
 * worker processes, over the child-process IPC channel. Questions on either
 * side go in one envelope, `{ t: 'ask', id, ... }`, answered by
 * `{ t: 'answer', id, ... }` (asks.ts keeps the waiting ones); a want is a
 * question whose id is `want`. Slots are leased: a lease is one of a
 * replica's maxConcurrentQueries slots, taken from the primary's
 * ReplicaRouter for a worker, which keeps it for its next requests until it
 * is returned (see leased-router.ts and lease-desk.ts).
 */
export type ToWorker =
  | { t: 'init'; settings: FrontDoorSettings; logLevel: string; logFormat: string; streamIdleTimeoutMs: number }
  | { t: 'snapshot'; snapshot: RoutingSnapshot }
  /** The want is granted: lease `lease` on the replica. */
  | { t: 'lease'; want: number; lease: number; replica: RoutedReplica<ReplicaTarget> }
  | { t: 'refused'; want: number; code: string; message: string }
  /** Requests wait for the backend: return every idle lease now (with `ack: reclaim`) and each lease when its request ends, until `contended` is false. */
  | { t: 'contended'; backend: string; contended: boolean; reclaim?: number }
  | { t: 'cut'; target: ReplicaTarget }
  /** `controlPlane`: in a front-door process, whether a control plane is attached. */
  | { t: 'workers'; count: WorkerCount; controlPlane?: ControlPlaneState }
  | ({ t: 'ask'; id: number } & WorkerQuestion)
  /** The answer to the worker's render: the metrics, or the error that kept them. */
  | { t: 'answer'; id: number; rendered?: RenderedMetrics; error?: string }
  /** `handover`: another front door serves the port; idle connections stay until their next request (server.ts). */
  | { t: 'close'; graceMs: number; handover?: boolean }
  /** Comes with a client socket handle. */
  | { t: 'connection' };

export type FromWorker =
  | { t: 'ready' }
  /** `spare`: the worker holds an idle lease it may use instead, so a want no free slot meets is refused NO_FREE_SLOT, not queued. */
  | { t: 'want'; want: number; backend: string; exclude: string[]; spare?: boolean }
  | { t: 'cancel'; want: number }
  /** `ack`: the answer to the contended message with that `reclaim` id, sent even when no lease was idle. */
  | { t: 'return'; leases: number[]; ack?: number }
  | { t: 'failed'; backend: string; replica: string }
  | { t: 'metrics'; requests: Array<[string, string, number, number]>; shadows: Array<[string, string, ShadowOutcome]> }
  /** Asks the primary for the metrics, for a /-/metrics scrape. */
  | { t: 'ask'; id: number; q: 'render' }
  | { t: 'answer'; id: number; counts?: Record<string, ShadowCounts> }
  | { t: 'disconnected' };
