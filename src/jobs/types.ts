/**
 * The Tier-2 job seam: run untrusted work in a sandbox that exists only for it.
 *
 * What `JobRunner.run` guarantees, for every job, whoever asked (an agent through the built-in
 * tool `agentvm.run_job`, an operator through `agent-vm jobs run`):
 *   - a fresh one-shot sandbox through the SandboxDriver (agent id `job_<id>`, which no profile
 *     can be named), on the runtime the profile's risk tier allows (checked again against what
 *     the engine chose), in `jobs.image` (default the agent's image), with `jobs.limits`;
 *   - no network, unless `jobs.egress.allow` names targets: then its own internal network whose
 *     only way out is an egress relay for exactly those targets;
 *   - nothing of the caller's workspace but copies of the `inputs`, read through the engine with
 *     the outbox rules; no environment, no secrets;
 *   - a hard deadline (every process of the command killed inside the sandbox, then the driver stops waiting), then results copied
 *     into the caller's `/workspace/jobs/<id>/` with the outbox rules (no symlinks, hard links,
 *     devices, unsafe names; size caps), exit code and capped stdout/stderr;
 *   - verified teardown before the result is returned (teardown.ts), recorded and audited; a
 *     leftover is retried and alarmed, and the sweeper keeps at it;
 *   - at most `jobs.maxConcurrent` of a profile's jobs at once (queue.ts), the rest wait;
 *   - audit rows `job.request`, `job.finish`, `job.teardown`: who asked, the command's hash (never
 *     the command), exit, bytes in and out, whether teardown was verified.
 *
 * Deliberately left out: disk quotas on the job's volume (bounded only by the deadline), GPU
 * access, interactive jobs, and results anywhere but the caller's workspace.
 */
import type { JobToolHost } from '../governance/mcp-builtin.js';
import type { JobStatus } from '../store/jobs.js';
import type { Refusal } from './files.js';

export interface JobSubmission {
  profile: string;
  /** `agent:<conversation>` or `cli:<user>`: in the job row and its audit rows. */
  requestedBy: string;
  /** The agent's conversation, when an agent asked: relative input paths start in its directory. */
  conversation?: string;
  turnId?: string;
  /** Unchecked arguments: `command`, `inputs`, `outputs`, `timeoutSeconds` (request.ts checks them). */
  args: Record<string, unknown>;
}

export interface JobResult {
  id: string;
  status: JobStatus;
  exitCode: number | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Output beyond the cap was dropped. */
  truncated: boolean;
  /** Where results went in the caller's sandbox: `/workspace/jobs/<id>`. */
  resultsDir: string;
  /** Paths written in the caller's sandbox. */
  written: string[];
  /** Result files not copied back, and why. */
  refused: Refusal[];
  /** Input files not copied in, and why. */
  inputsRefused: Refusal[];
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  runtime: string | null;
  teardown: { verified: boolean; attempts: number; durationMs: number; detail?: string };
  /** Why the job could not run or was stopped, in words a caller can act on. */
  error?: string;
}

export interface JobRunner extends JobToolHost {
  /**
   * Queues the job, waits for it, returns its result. Throws AgentVmError for requests that are
   * refused before a job exists (`job_invalid`, `jobs_disabled`, `profile_not_served`). When
   * `signal` aborts, the job is cancelled (killed and torn down) and the result says so.
   */
  run(sub: JobSubmission, signal?: AbortSignal): Promise<JobResult>;
  /** Starts this process's workers for every profile with jobs, and the teardown sweeper. */
  start(): Promise<void>;
  /** Retries teardown of jobs whose sandbox may remain (finished, or orphaned past their deadline). */
  sweep(): Promise<{ checked: number; verified: number }>;
  /** Cancels this process's running jobs (torn down), stops workers and the sweeper. Idempotent. */
  close(): Promise<void>;
}
