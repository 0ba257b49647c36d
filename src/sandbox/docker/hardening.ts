/**
 * The sandbox's security posture, as data. Nothing here is configurable per agent: a profile
 * chooses limits and a network mode, never capabilities, mounts or privileges.
 */
import type { ContainerCreateOptions } from './engine.js';
import type { SandboxSpec } from '../types.js';

export const SANDBOX_USER = '1000:1000';
export const WORKSPACE = '/workspace';
/** Keeps an otherwise idle sandbox up; tini (Init) makes it stop promptly on SIGTERM. */
export const IDLE_COMMAND = ['sleep', 'infinity'];

export const LABELS = {
  managed: 'agent-vm.managed',
  agent: 'agent-vm.agent',
  specHash: 'agent-vm.spec-hash',
  runtime: 'agent-vm.runtime',
} as const;

export const HARDENED_HOST_CONFIG = Object.freeze({
  CapDrop: ['ALL'],
  CapAdd: [] as string[],
  SecurityOpt: ['no-new-privileges:true'],
  ReadonlyRootfs: true,
  Privileged: false,
  Tmpfs: { '/tmp': 'rw,nosuid,nodev,size=64m,mode=1777' },
  NetworkMode: 'none',
  IpcMode: 'private',
  Init: true,
  RestartPolicy: { Name: 'no' },
  LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
});

export interface CreateInputs {
  spec: SandboxSpec;
  containerName: string;
  volumeName: string;
  networkName: string | undefined;
  engineRuntime: string;
  /** Image id (sha256:…), so a rebuilt image changes the spec hash. */
  imageId: string;
}

/** The create body without labels: exactly what the spec hash covers. */
export function createBody(i: CreateInputs): ContainerCreateOptions {
  const { spec } = i;
  const memory = spec.limits.memoryMiB * 1024 * 1024;
  return {
    Image: i.imageId,
    Cmd: spec.command ?? IDLE_COMMAND,
    Env: Object.entries(spec.env ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .sort(),
    User: SANDBOX_USER,
    WorkingDir: WORKSPACE,
    Tty: false,
    OpenStdin: spec.stdin === true,
    StdinOnce: false,
    AttachStdin: spec.stdin === true,
    AttachStdout: true,
    AttachStderr: true,
    NetworkDisabled: i.networkName === undefined,
    HostConfig: {
      ...HARDENED_HOST_CONFIG,
      CapDrop: [...HARDENED_HOST_CONFIG.CapDrop],
      CapAdd: [],
      SecurityOpt: [...HARDENED_HOST_CONFIG.SecurityOpt],
      Tmpfs: { ...HARDENED_HOST_CONFIG.Tmpfs },
      Runtime: i.engineRuntime,
      NetworkMode: i.networkName ?? 'none',
      Memory: memory,
      MemorySwap: memory,
      NanoCpus: Math.round(spec.limits.cpus * 1e9),
      PidsLimit: spec.limits.pids,
      Mounts: [{ Type: 'volume', Source: i.volumeName, Target: WORKSPACE, ReadOnly: false }],
    },
  };
}
