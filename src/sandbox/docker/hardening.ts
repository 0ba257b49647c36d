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

/**
 * Host threads per guest process under gVisor, and the sandbox's own threads at rest. Measured
 * on runsc 20221219 (ptrace platform, cgroup v1): an idle sandbox holds 39 host pids; three
 * concurrent execs of three processes each brought it to 116-133. Each guest address space is a
 * host stub process with a thread for every sentry thread that entered it. A flood to the guest
 * limit (128 processes) peaks at 1,160-1,200 host pids, and now and then runs away: at 12 per
 * process (limit 1,792) the flood reached the limit and the sentry died (exit code 2) in 1 of 3
 * quiet runs and in CI; at 32 per process (4,608) it stayed up 6 of 6, peaking at 1,160-1,191.
 */
const RUNSC_HOST_PIDS_PER_PROCESS = 32;
const RUNSC_HOST_PIDS_BASE = 512;

/**
 * The process limit, enforced where it means "processes of the agent". RLIMIT_NPROC (for the
 * sandbox user, uid 1000, which runs everything in it) is enforced by the guest's kernel: gVisor's
 * sentry, Kata's VM kernel, or the host's under runc. The engine's PidsLimit is the host cgroup's:
 * under runc it counts the agent's processes too, but under runsc it counts the sentry's host
 * threads, about a dozen per guest process, so `pids` there let an agent run about ten processes
 * and a clone past it panicked the sentry ("error initializing first thread: resource temporarily
 * unavailable", the sandbox gone with exit code 2, mid-turn). Under runsc the host limit stays a
 * bound on the sandbox's host threads, sized from `pids`, and the guest limit is NPROC.
 */
export function pidsLimits(engineRuntime: string, pids: number): { PidsLimit: number; Ulimits: { Name: string; Soft: number; Hard: number }[] } {
  const host = engineRuntime === 'runsc' ? pids * RUNSC_HOST_PIDS_PER_PROCESS + RUNSC_HOST_PIDS_BASE : pids;
  return { PidsLimit: host, Ulimits: [{ Name: 'nproc', Soft: pids, Hard: pids }] };
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
      ...pidsLimits(i.engineRuntime, spec.limits.pids),
      Mounts: [{ Type: 'volume', Source: i.volumeName, Target: WORKSPACE, ReadOnly: false }],
      ...dnsFor(i),
    },
  };
}
