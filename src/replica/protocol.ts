/**
 * The replica protocol (docs/protocol.md): what any image must speak to be a
 * Flotilla replica. Shared by the in-container runtime and the orchestrator,
 * so this file imports nothing.
 */
export const PROTOCOL = {
  healthPath: '/-/flotilla/health',
  methodHeader: 'x-flotilla-method',
  errorHeader: 'x-flotilla-error',
  socketDir: '/run/flotilla',
  socketName: 'replica.sock',
  tcpPort: 8000,
  env: {
    entry: 'FLOTILLA_ENTRY',
    socket: 'FLOTILLA_SOCKET',
    port: 'FLOTILLA_PORT',
  },
} as const;

/** What a replica loads: a module inside the image, one of its exports, and constructor arguments. */
export interface ReplicaEntry {
  module: string;
  exportName: string;
  initArgs: unknown[];
}

export interface HealthBody {
  state: 'starting' | 'ready' | 'draining';
}

export interface HandlerErrorBody {
  error: { code: 'HANDLER_ERROR'; type: string; message: string };
}
