import { start } from './client.js';
import { acceptBatch } from './controller/definition.js';

export const serve = { start, acceptBatch };

export type {
  BackendConfig,
  BackendDefinition,
  BackendInfo,
  Client,
  CreateBackendOptions,
  CreateEndpointOptions,
  DeleteBackendOptions,
  EndpointInfo,
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
export { FlotillaError, isFlotillaError, type ErrorCode } from './common/errors.js';
