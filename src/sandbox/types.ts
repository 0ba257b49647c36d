/**
 * The sandbox seam. The gateway talks to agents' sandboxes only through `SandboxDriver`;
 * the Docker implementation lives in ./docker and is the only code that knows about Docker.
 *
 * Deliberately left out: anything that would let a caller weaken isolation per call (no
 * privileged flag, no host mounts, no capability list). Hardening is fixed data in the driver.
 */

export type RuntimeName = 'kata' | 'runsc' | 'runc';
export type RuntimeSetting = RuntimeName | 'auto';

export interface SandboxLimits {
  /** CPU share, in cores (0.5 = half a core). */
  cpus: number;
  memoryMiB: number;
  /** Maximum number of processes/threads in the sandbox; a fork bomb stops here. */
  pids: number;
}

/**
 * `none`: no interface but loopback. `internal`: a per-agent Docker network with no route out;
 * its only reachable peer is the host at the bridge gateway (where the egress relay listens).
 * Nothing else on the host answers it (a per-network firewall chain, see docker/firewall.ts).
 * With `proxyPort`, the sandbox's HTTP_PROXY/HTTPS_PROXY (and lowercase) point at
 * `http://<host address>:<proxyPort>`, and NO_PROXY at the host address itself.
 */
export type SandboxNetwork =
  | { mode: 'none' }
  | {
      mode: 'internal';
      /**
       * The only TCP ports the sandbox may reach on the host address (the host firewall drops
       * everything else the sandbox sends to the host). `proxyPort` is always among them.
       */
      hostPorts?: number[];
      proxyPort?: number;
    };

export interface SandboxSpec {
  /** Lowercase letters, digits, '-', '_' and '.', starting with a letter or digit; at most 63. */
  agentId: string;
  image: string;
  /** The sandbox's main process. Default: an idle process that keeps the sandbox up. */
  command?: string[];
  env?: Record<string, string>;
  /** Overrides the driver's configured runtime setting for this agent. */
  runtime?: RuntimeSetting;
  limits: SandboxLimits;
  network?: SandboxNetwork;
  /** Keep the main process's stdin open, for protocols spoken over stdio (ACP). */
  stdin?: boolean;
}

export interface SandboxHandle {
  agentId: string;
  containerId: string;
  runtime: RuntimeName;
  /** The engine's own name for the runtime (e.g. `runsc`, `kata-runtime`). */
  engineRuntime: string;
  specHash: string;
  image: string;
  /** What ensure had to do: nothing (already running), start, create, or recreate (spec changed). */
  action: 'none' | 'unpaused' | 'started' | 'created' | 'recreated';
  /** True when the workspace was restored from a snapshot because its volume was gone. */
  restored: boolean;
  /**
   * With network `internal`: the host's address on the agent's network (the bridge gateway), the
   * only peer the sandbox can reach; bind the MCP endpoint / egress relay for this agent there.
   * Undefined with network `none`.
   */
  hostAddress?: string;
}

export interface SandboxStatus {
  agentId: string;
  containerId: string;
  state: 'running' | 'paused' | 'stopped' | 'missing';
  runtime: string | undefined;
  specHash: string | undefined;
  image: string | undefined;
  /** Exit code and OOM flag of the last run, when the sandbox is stopped. */
  exitCode: number | undefined;
  oomKilled: boolean;
}

export interface ExecOptions {
  timeoutMs: number;
  env?: Record<string, string>;
  /** Output beyond this many bytes per stream is dropped and `truncated` is set. Default 1 MiB. */
  maxOutputBytes?: number;
}

export interface ExecResult {
  /** null when the process never reported an exit code (the sandbox died, or we gave up). */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  truncated: boolean;
  durationMs: number;
  /** Set when the sandbox itself stopped during the command (e.g. pids or memory limit hit). */
  sandboxStopped?: { exitCode: number | undefined; oomKilled: boolean };
}

export type OutboxRefusalReason =
  | 'symlink'
  | 'hardlink'
  | 'not_regular_file'
  | 'unsafe_name'
  | 'too_large'
  | 'total_too_large'
  | 'too_many_files';

export interface OutboxLimits {
  maxFileBytes: number;
  maxTotalBytes: number;
  maxFiles: number;
}

/** One item of the outbox stream: a file that may leave the sandbox, or one that was refused. */
export type OutboxEntry =
  | { kind: 'file'; name: string; size: number; data: Buffer }
  | { kind: 'refused'; name: string; reason: OutboxRefusalReason; detail: string };

export interface DestroyReport {
  agentId: string;
  removed: { containers: number; volumes: number; networks: number; snapshot: boolean };
}

export interface SnapshotInfo {
  agentId: string;
  path: string;
  bytes: number;
}

/** The main process's stdio, for protocols spoken over it (ACP). */
export interface SandboxStdio {
  stdin: NodeJS.WritableStream;
  stdout: NodeJS.ReadableStream;
  stderr: NodeJS.ReadableStream;
  /** Resolves when the connection ends (the process exited, the sandbox stopped, or close()). */
  closed: Promise<void>;
  /** Detach. The process keeps running and its stdin stays open for the next attach. */
  close(): void;
}

export interface SandboxDriver {
  /** Create, start, unpause or return the agent's sandbox. Idempotent and safe to call concurrently. */
  ensure(spec: SandboxSpec): Promise<SandboxHandle>;
  /**
   * Creates the agent's internal network if it is missing and returns the host's address on it:
   * where gateway endpoints for this agent listen. Stable for the network's life, so endpoints
   * can be bound, and their addresses put in the spec's env, before the sandbox exists.
   */
  prepareNetwork(agentId: string): Promise<string>;
  /** Stop the sandbox; the workspace volume stays. A no-op for a missing or stopped sandbox. */
  sleep(agentId: string): Promise<void>;
  /** Remove container, volume, network and snapshot; throws if anything labelled for the agent remains. */
  destroy(agentId: string): Promise<DestroyReport>;
  /** Run a command inside the running sandbox as the sandbox user, killed at `timeoutMs`. */
  exec(agentId: string, command: string[], options: ExecOptions): Promise<ExecResult>;
  /** Attach to the main process's stdio; the spec must have asked for `stdin: true`. */
  attach(agentId: string): Promise<SandboxStdio>;
  /**
   * Files under `/workspace/<dir>` (dir relative to the workspace, e.g. a conversation's
   * `conversations/<key>/outbox`, see layout.ts), validated; refused ones are yielded as
   * refusals, never dropped. Names are relative to `dir`. A missing directory yields nothing.
   * The directory itself must be a real directory (a symlinked one is refused).
   */
  readOutbox(agentId: string, dir: string, limits?: Partial<OutboxLimits>): AsyncIterable<OutboxEntry>;
  /**
   * Removes `names` (relative to `/workspace/<dir>`, as readOutbox yielded them) so a later
   * collection does not see them again. Names with `..` or absolute paths are refused.
   */
  removeFiles(agentId: string, dir: string, names: string[]): Promise<void>;
  /**
   * Writes files into `/workspace/<dir>/` (dir relative, e.g. `inbox/ev1`), owned by the sandbox
   * user; names are flattened to safe base names. Returns the paths inside the sandbox. With no
   * files it only creates the directory (and its parents).
   */
  writeFiles(agentId: string, dir: string, files: Array<{ name: string; data: Buffer }>): Promise<string[]>;
  /** Copy /workspace to the snapshot store; ensure restores it when the volume is gone. */
  snapshot(agentId: string): Promise<SnapshotInfo>;
  status(agentId: string): Promise<SandboxStatus>;
  list(): Promise<SandboxStatus[]>;
  close(): Promise<void>;
}
