/**
 * The one file that imports dockerode. Everything Docker-specific in agent-vm goes through the
 * client made here, always from explicit settings (never from docker-modem's own env lookup).
 */
import Docker from 'dockerode';
import type { DockerConnection } from '../../config.js';
import { AgentVmError } from '../../errors.js';

export type DockerClient = Docker;
export type { Container, ContainerCreateOptions, ContainerInspectInfo } from 'dockerode';

export function connectDocker(conn: DockerConnection): DockerClient {
  return 'socketPath' in conn
    ? new Docker({ socketPath: conn.socketPath })
    : new Docker({ protocol: conn.protocol, host: conn.host, port: conn.port });
}

/** Docker answers "not found" with 404; dockerode surfaces it as `statusCode`. */
export function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { statusCode?: number }).statusCode === 404;
}

export function isConflict(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { statusCode?: number }).statusCode === 409;
}

export function isNotModified(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { statusCode?: number }).statusCode === 304;
}

/** Wraps "cannot connect to the engine" into an error that says what to do. */
export function engineError(err: unknown, conn: DockerConnection): AgentVmError {
  const where = 'socketPath' in conn ? conn.socketPath : `${conn.protocol}://${conn.host}:${conn.port}`;
  const code = (err as { code?: string } | undefined)?.code;
  if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EACCES') {
    return new AgentVmError(
      'engine_unreachable',
      `cannot reach the Docker engine at ${where} (${code}); start it with scripts/host-setup.sh or set DOCKER_HOST`,
      { status: 503, retryable: true, cause: err },
    );
  }
  return new AgentVmError('engine_error', `Docker engine error: ${(err as Error)?.message ?? String(err)}`, {
    status: 502,
    retryable: true,
    cause: err,
  });
}
