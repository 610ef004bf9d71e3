import { connect } from './admin/remote-client.js';
import { start } from './control-plane.js';
import { acceptBatch } from './spec/definition.js';
import { sse } from './replica/sse.js';

export const serve = { start, connect, acceptBatch, sse };

export type {
  ServeRequest,
  AutoscalingConfig,
  AutoscalingDecision,
  AutoscalingStatus,
  BackendConfig,
  BackendConfigPatch,
  BackendDefinition,
  BackendInfo,
  CapacityInfo,
  Client,
  ConnectOptions,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
  EventKind,
  EventPage,
  EventQuery,
  FlotillaEvent,
  HandleOptions,
  LatencySummary,
  ReplicaInfo,
  ReplicaOptions,
  ReplicaPlacement,
  ReplicaResources,
  RuntimeEnv,
  ServeHandle,
  ShadowStats,
  StartOptions,
} from './api.js';
export { FlotillaError, UnknownRemoteError, isFlotillaError, type ErrorCode } from './common/errors.js';
