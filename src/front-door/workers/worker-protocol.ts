import type { ReplicaTarget } from '../../runtime/container-runtime.js';
import type { RoutingSnapshot } from '../../dataplane/dispatcher.js';
import type { FrontDoorSettings } from '../server.js';
import type { RoutedReplica } from '../../dataplane/replica-router.js';
import type { ShadowOutcome } from '../../dataplane/serving-metrics.js';
import type { ShadowCounts } from '../../dataplane/shadow.js';

/**
 * The messages between the control plane (the primary) and its front-door
 * worker processes, over the child-process IPC channel. Slots are leased: a
 * lease is one of a replica's maxConcurrentQueries slots, taken from the
 * primary's ReplicaRouter for a worker, which keeps it for its next requests
 * until it is returned (see leased-router.ts and lease-desk.ts).
 */
export type ToWorker =
  | { t: 'init'; settings: FrontDoorSettings; logLevel: string; logFormat: string; streamIdleTimeoutMs: number }
  | { t: 'snapshot'; snapshot: RoutingSnapshot }
  /** The want is granted: lease `lease` on the replica. */
  | { t: 'lease'; want: number; lease: number; replica: RoutedReplica<ReplicaTarget> }
  | { t: 'refused'; want: number; code: string; message: string }
  /** Requests wait for the backend: return every idle lease now and each lease when its request ends, until `contended` is false. */
  | { t: 'contended'; backend: string; contended: boolean }
  | { t: 'cut'; target: ReplicaTarget }
  | { t: 'rendered'; id: number; contentType: string; body: string }
  /** Answered with done once no request for the endpoint is in flight in the worker. */
  | { t: 'endpointIdle'; id: number; endpoint: string }
  /** Answered with done once the worker has sent what it served so far. */
  | { t: 'flush'; id: number }
  | { t: 'shadowCounts'; id: number; endpoint: string }
  | { t: 'close'; graceMs: number }
  /** Comes with a client socket handle. */
  | { t: 'connection' };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'want'; want: number; backend: string; exclude: string[] }
  | { t: 'cancel'; want: number }
  /** `ack`: the answer to a contended message, sent even when no lease was idle. */
  | { t: 'return'; leases: number[]; ack?: string }
  | { t: 'failed'; backend: string; replica: string }
  | { t: 'metrics'; requests: Array<[string, string, number, number]>; shadows: Array<[string, string, ShadowOutcome]> }
  | { t: 'render'; id: number }
  | { t: 'done'; id: number }
  | { t: 'shadowCounts'; id: number; counts: Record<string, ShadowCounts> }
  | { t: 'disconnected' };
