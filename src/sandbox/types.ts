import type { SnapshotMeta } from './snapshots/types.js';

export type { SnapshotMeta };

/**
 * The sandbox seam. The gateway talks to agents' sandboxes only through `SandboxDriver`;
 * the Docker implementation lives in ./docker and is the only code that knows about Docker.
 *
 * Deliberately left out: anything that would let a caller weaken isolation per call (no
 * privileged flag, no host mounts, no capability list). Hardening is fixed data in the driver.
 */

export type RuntimeName = 'kata' | 'runsc' | 'runc';
export type RuntimeSetting = RuntimeName | 'auto';

/**
 * Blue-green slots: every agent has two sandboxes, `a` and `b`, sharing its workspace volume and
 * network (releases run the new version in the inactive one). `trial` is a throwaway third one for
 * health checks: same network rules, but its own workspace, restored afresh from the agent's
 * newest good snapshot generation at each create, so a candidate never touches the live workspace.
 */
export type SlotName = 'a' | 'b';
export type SlotRef = SlotName | 'trial';
export const SLOT_NAMES: readonly SlotName[] = ['a', 'b'];

/** What the engine knows of an image (`inspectImage`). */
export interface ImageInfo {
  /** The engine's image id (`sha256:…`): the digest releases pin. */
  id: string;
  /** The image's labels (e.g. `agent-vm.preset`, `agent-vm.preset-version`); {} when none. */
  labels: Record<string, string>;
}

export interface SandboxLimits {
  /** CPU share, in cores (0.5 = half a core). */
  cpus: number;
  memoryMiB: number;
  /**
   * Maximum number of processes/threads of the agent (the sandbox user's RLIMIT_NPROC, enforced by
   * the guest kernel): past it a fork fails inside and the sandbox keeps running; a fork bomb stops
   * here. The host's own cgroup limit is sized from it per runtime (docker/hardening.ts).
   */
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
  /**
   * Which of the agent's sandboxes (see SlotRef). Default: the view's slot (`driver.slot(x)`), or
   * on the plain driver the agent's current one (see `SandboxDriver.slot`). Not part of the spec
   * hash: the same spec in slot a and in slot b hashes the same.
   */
  slot?: SlotRef;
  /**
   * Extra container labels, `agent-vm.release…` keys only (releases: release id, spec hash).
   * Covered by the spec hash, so a container of another release is re-created, never reused.
   */
  labels?: Record<string, string>;
}

export interface SandboxHandle {
  agentId: string;
  containerId: string;
  runtime: RuntimeName;
  /** The engine's own name for the runtime (e.g. `runsc`, `kata-runtime`). */
  engineRuntime: string;
  specHash: string;
  image: string;
  /** The engine's id of the image the sandbox runs (`sha256:…`; the fake driver makes one up). */
  imageId: string;
  /** The slot this sandbox is. */
  slot: SlotRef;
  /** What ensure had to do: nothing (already running), start, create, or recreate (spec changed). */
  action: 'none' | 'unpaused' | 'started' | 'created' | 'recreated';
  /** True when the workspace was restored from a snapshot because its volume was gone. */
  restored: boolean;
  /**
   * With `restored`: the generation used and every newer one skipped as unusable (corrupt,
   * truncated, unsafe), with why. The driver has no audit log: the caller audits these.
   */
  restoredFrom?: RestoredFrom;
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
  /** Which slot this is (absent when `missing`). */
  slot?: SlotRef;
  /** The engine's id of the image the container actually runs (absent when `missing`). */
  imageId?: string;
  /** The container's `agent-vm.release…` labels, as created. */
  releaseLabels?: Record<string, string>;
  /** When the container last started (ISO), if ever. */
  startedAt?: string;
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
  removed: { containers: number; volumes: number; networks: number };
  /**
   * The final generation taken before anything was removed; null when told not to, or when there
   * was no sandbox to take it from (a retried destroy: the first attempt took it). Snapshots are
   * never deleted by destroy: `agent-vm agents snapshots <agent> --delete --apply` does that.
   */
  finalSnapshot: SnapshotInfo | null;
}

export interface DestroyOptions {
  /** Take a final snapshot first (default true); if it fails, nothing is destroyed. */
  finalSnapshot?: boolean;
}

/** One generation written by `snapshot` (src/sandbox/snapshots/types.ts has the whole manifest). */
export interface SnapshotInfo {
  agentId: string;
  /** Where its archive is: a file path, or an s3:// URL. */
  path: string;
  bytes: number;
  generation: number;
  sha256: string;
  files: number;
  createdAt: string;
}

/** A snapshot generation that was skipped, and why (checksum mismatch, truncated, unsafe entry…). */
export interface SkippedGeneration {
  generation: number;
  reason: string;
}

export interface RestoredFrom {
  generation: number;
  sha256: string;
  createdAt: string;
  /** Newer generations that could not be used. */
  skipped: SkippedGeneration[];
  /** As recorded when the generation was taken. */
  sessions?: string[];
  release?: string;
}

export interface RestoreOptions {
  /** Exactly this generation (refused if it does not verify). Default: the newest good one. */
  generation?: number;
  /** The newest good generation older than this one (a replacement after `generation` failed). */
  before?: number;
  /** Save the current workspace as a new generation first (default true). */
  snapshotFirst?: boolean;
  /** Metadata for that generation. */
  meta?: SnapshotMeta;
  /** Image to read or fill the volume through when the agent has no sandbox (the Docker driver). */
  image?: string;
}

export interface RestoreReport extends RestoredFrom {
  agentId: string;
  /** Whether the sandbox was running (or paused) before; it is removed now, its workspace replaced. */
  wasRunning: boolean;
  /** The generation that saved the workspace being replaced. */
  savedAs?: SnapshotInfo;
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
  /**
   * Remove container, volume and network; throws if anything labelled for the agent remains.
   * First takes a final snapshot (kept in the store) unless `finalSnapshot: false`; if that
   * snapshot fails, nothing is removed. One-shot sandboxes (jobs) pass `finalSnapshot: false`.
   */
  destroy(agentId: string, options?: DestroyOptions): Promise<DestroyReport>;
  /** Run a command inside the running sandbox as the sandbox user, killed at `timeoutMs`. */
  exec(agentId: string, command: string[], options: ExecOptions): Promise<ExecResult>;
  /** Attach to the main process's stdio; the spec must have asked for `stdin: true`. */
  attach(agentId: string): Promise<SandboxStdio>;
  /**
   * Files under `/workspace/<dir>` (dir relative to the workspace, e.g. a conversation's
   * `conversations/<key>/outbox`, see layout.ts), validated; refused ones are yielded as
   * refusals, never dropped. Names are relative to `dir`. A missing directory yields nothing.
   * The directory itself must be a real directory (a symlinked one is refused).
   * With `unchangedSince`, a driver may yield nothing without reading when it knows the directory
   * was left empty by its own last read or removal and has not changed since that time (the
   * common case: a turn that wrote no file). It must never skip a change made after it.
   */
  readOutbox(agentId: string, dir: string, limits?: Partial<OutboxLimits>, opts?: { unchangedSince?: Date }): AsyncIterable<OutboxEntry>;
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
  /**
   * Creates each `/workspace/<dir>` (relative, as writeFiles takes it) and its parents, owned by
   * the sandbox user, in one operation (one engine upload: a conversation's outbox and inbox at
   * the first turn of a wake cost one round trip, not two). Existing directories are kept.
   */
  makeDirs(agentId: string, dirs: string[]): Promise<void>;
  /**
   * Writes /workspace to the snapshot store as a new generation (running, paused or stopped
   * sandbox), with the caller's metadata (ACP session ids, release, why). Atomic: a failed
   * snapshot leaves the previous generation the newest. Older generations beyond the store's
   * `keep` are deleted. Not a point-in-time image of a busy agent: each file is read once, but
   * files written while the archive is read may be caught before or after a change (pause the
   * sandbox first for one). Does not hold up `ensure` while the workspace streams out; a sandbox
   * removed meanwhile fails the snapshot, and no generation is written.
   *
   * Restore semantics, when `ensure` finds the workspace volume gone: the newest generation whose
   * archive verifies (size, sha256, a tar of safe entries only) is restored, newer bad ones are
   * skipped and reported in `restoredFrom`; with no generation at all (a first wake) the
   * workspace starts empty; with generations but none good, `ensure` throws `snapshot_unusable`
   * (SnapshotRefusedError, listing each generation and why) and creates nothing, never an empty
   * workspace in the agent's name. A restore that fails half-way leaves no volume behind.
   */
  snapshot(agentId: string, meta?: SnapshotMeta): Promise<SnapshotInfo>;
  /**
   * Replaces the workspace with a verified generation (see RestoreOptions): verifies it first
   * (refusing a bad one before anything changes), stops the sandbox, saves the current workspace
   * as a new generation, then fills a new volume. The sandbox itself is removed (status
   * `missing`): the next `ensure` creates it on the restored workspace (`restored` false there:
   * this report is the record). Snapshots are never deleted here.
   */
  restore(agentId: string, options?: RestoreOptions): Promise<RestoreReport>;
  /**
   * Freezes every process of a running sandbox (docker pause); memory stays, CPU goes to zero.
   * `ensure` unpauses it (action 'unpaused'), `sleep` stops it, `snapshot` works on it; `exec`
   * refuses it (`sandbox_not_running`). A no-op when already paused; `sandbox_not_running` when
   * stopped, `sandbox_missing` when there is none.
   */
  pause(agentId: string): Promise<void>;
  /**
   * The agent's sandbox as this view addresses it: on the plain driver the current slot (the one
   * running or paused; else the one started last; else `a`), on a slot view that slot.
   */
  status(agentId: string): Promise<SandboxStatus>;
  /** One entry per agent (its current slot, as `status`); trial sandboxes are not listed. */
  list(): Promise<SandboxStatus[]>;
  /**
   * The same driver addressing one slot of every agent: every method of the view acts on that
   * slot's container (ensure creates it, sleep stops it, attach/exec/pause reach its process).
   * The workspace, network and snapshots stay the agent's: workspace reads and writes see the same
   * files through either of a and b, and `destroy`/`restore` act on the whole agent from any view
   * (restore stops and removes every slot: they all used the replaced workspace). On the `trial`
   * view, ensure first discards any earlier trial sandbox and restores a fresh workspace.
   *
   * On the plain driver, calls without a slot act on the agent's current slot, so code that knows
   * nothing of slots keeps working after a release moved the agent to slot b. The trial view
   * refuses snapshot, restore and destroy (`slot_unsupported`): its workspace is not the agent's.
   * Left out: any rule that only one slot runs at a time; releases decide that (a canary runs both).
   */
  slot(slot: SlotRef): SandboxDriver;
  /** Every sandbox of the agent (slots a and b, and a trial), existing ones only, a before b. */
  slots(agentId: string): Promise<SandboxStatus[]>;
  /**
   * Removes this view's sandbox of the agent (the plain driver: its current one), and on the
   * `trial` view also the trial workspace. The agent's workspace, network, snapshots and other
   * slots stay. A no-op when there is none.
   */
  discard(agentId: string): Promise<void>;
  /** The engine's id and labels of an image (by tag or id); undefined when the engine has none. */
  inspectImage(ref: string): Promise<ImageInfo | undefined>;
  close(): Promise<void>;
}
