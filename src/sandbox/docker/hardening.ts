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
  /** Which of the agent's sandboxes (slots.ts); absent on containers made before slots: `a`. */
  slot: 'agent-vm.slot',
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
  /**
   * With a network: the host's address on it (the bridge gateway). It becomes the sandbox's only
   * DNS upstream, see `dnsFor`.
   */
  hostAddress?: string | undefined;
}

/**
 * The DNS upstream of a sandbox on an internal network. A sandbox needs no DNS (the egress relay
 * resolves names itself, and the relay and MCP endpoint are addressed by IP), but Docker's
 * embedded resolver (127.0.0.11) answers it anyway and forwards every name it does not know to
 * an upstream. Measured on Docker 20.10 under runsc: without `Dns` the upstream is the host's
 * resolv.conf, and a loopback nameserver there (dnsmasq, unbound on 127.0.0.1) is queried from
 * the host's own namespace, which no firewall on the agent's bridge sees: a DNS channel out.
 * With `Dns` set, every upstream is dialed from the sandbox's network namespace; naming the
 * host address makes that the one place forwarded queries go, and the agent's firewall chain
 * refuses port 53 there (firewall.ts). With network `none` there is no resolver to reach.
 */
export function dnsFor(i: Pick<CreateInputs, 'networkName' | 'hostAddress'>): { Dns: string[] } | Record<string, never> {
  if (i.networkName === undefined) return {};
  // Fail closed: without it the engine would forward to the host's own resolvers.
  if (i.hostAddress === undefined) throw new Error(`a sandbox on network ${i.networkName} needs its host address for DNS`);
  return { Dns: [i.hostAddress] };
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
      ...dnsFor(i),
    },
  };
}
