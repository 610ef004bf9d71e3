import { start } from './client.js';

export const serve = { start };

export type {
  BackendConfig,
  BackendDefinition,
  Client,
  CreateBackendOptions,
  CreateEndpointOptions,
  EndpointInfo,
  HandleOptions,
  ReplicaOptions,
  RuntimeEnv,
  ServeHandle,
  StartOptions,
} from './api.js';
export { FlotillaError, isFlotillaError, type ErrorCode } from './common/errors.js';
