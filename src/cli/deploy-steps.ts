import type { BackendConfig, BackendInfo, EndpointInfo } from '../api.js';
import type { BackendSpec } from './app-file.js';

/** One client call of a deploy, with what it changes (for messages). */
export type DeployStep =
  | {
      op: 'createBackend';
      backend: string;
      spec: BackendSpec;
      /** Replicas a later step adds, once there is room (orderForCapacity). */
      deferred?: number;
    }
  | {
      op: 'updateBackendConfig';
      backend: string;
      changes: Partial<BackendConfig>;
      previous: Partial<BackendConfig>;
      /** Why a step the file does not ask for as such runs (orderForCapacity). */
      reason?: string;
    }
  | {
      op: 'updateBackend';
      backend: string;
      spec: BackendSpec;
      changes: string[];
      deferred?: number;
      /** No room for a new replica beside the old ones: the rollout replaces them in place. */
      inPlace?: boolean;
    }
  | { op: 'deleteEndpoint'; endpoint: string; route: string | null; recreate: boolean }
  | { op: 'createEndpoint'; endpoint: string; backend: string; route: string | null; methods: string[]; allowCallMethod?: true }
  | { op: 'setTraffic'; endpoint: string; traffic: Record<string, number>; previous: Record<string, number> }
  | { op: 'shadowTraffic'; endpoint: string; backend: string; proportion: number; previous: number }
  | { op: 'deleteBackend'; backend: string };

export interface CurrentState {
  backends: Record<string, BackendInfo>;
  endpoints: Record<string, EndpointInfo>;
}
