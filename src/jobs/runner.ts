/**
 * The job runner (contract in types.ts): request → row → queue → one-shot sandbox → results →
 * verified teardown → result. Any process sharing the engine and the database may execute a
 * queued job; the caller waits on its row (and, in the same process, on a direct signal).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';
import type { AuditEntry, AuditLog } from '../governance/audit.js';
import { createEgressRelay, type EgressRelay } from '../governance/egress.js';
import type { BuiltinCaller } from '../governance/mcp-builtin.js';
import type { Profile } from '../governance/profile.js';
import { PRESETS } from '../governance/presets.js';
import { assertRuntimeAllowed, runtimeForTier } from '../governance/tiers.js';
import type { Logger } from '../log.js';
import { EGRESS_PORT, WORKSPACE } from '../sandbox/layout.js';
import { stableStringify } from '../sandbox/spec.js';
import type { ExecResult, OutboxLimits, RuntimeSetting, SandboxDriver, SandboxSpec } from '../sandbox/types.js';
import type { JobRepo, JobRow } from '../store/jobs.js';
import { readTree, writeTree, type Refusal, type TreeFile } from './files.js';
import { createJobQueue, type JobQueue } from './queue.js';
import { JOB_DIR, RESULTS_DIR, checkRequest, resolveInput } from './request.js';
import { toolResult } from './result.js';
import { teardownJob } from './teardown.js';
import type { JobResult, JobRunner, JobSubmission } from './types.js';

export interface JobRunnerOptions {
  jobs: JobRepo;
  driver: SandboxDriver;
  audit: Pick<AuditLog, 'record'>;
  logger: Logger;
  /** AGENTVM_IMAGE, AGENTVM_RUNTIME, the outbox caps (inputs and results each), REDIS_URL. */
  config: { image: string; runtime: RuntimeSetting; outbox: OutboxLimits; redisUrl?: string | undefined };
  /** The profiles served (valid manifests), by id. */
  profiles: () => ReadonlyMap<string, Profile>;
  /** Default: BullMQ with `config.redisUrl`, in-process otherwise. */
  queue?: JobQueue;
  /** BullMQ key prefix (tests). */
  queuePrefix?: string;
  /** Bytes kept of each of stdout and stderr. Default 64 KiB. */
  maxOutputBytes?: number;
  /** How often the sweeper runs after start(). Default 60 s. */
  sweepEveryMs?: number;
  /** A running job is an orphan this long past its own deadline. Default 10 min. */
  orphanAfterMs?: number;
  teardownBackoffMs?: readonly number[];
  /** How often a running job checks its row for a cancel request. Default 500 ms. */
  cancelPollMs?: number;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
export const jobSandboxId = (id: string) => `job_${id}`;

export function createJobRunner(o: JobRunnerOptions): JobRunner {
  const log = o.logger.child({ component: 'jobs' });
  const queue = o.queue ?? createJobQueue({ redisUrl: o.config.redisUrl, logger: o.logger, ...(o.queuePrefix ? { prefix: o.queuePrefix } : {}) });
  const maxOutput = o.maxOutputBytes ?? 64 * 1024;
  const orphanAfterMs = o.orphanAfterMs ?? 10 * 60_000;
  /** Jobs this process is executing (incl. teardown): the sweeper leaves them alone. */
  const local = new Map<string, AbortController>();
  const waiters = new Map<string, Set<() => void>>();
  let sweeper: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;

  const record = (e: AuditEntry) => o.audit.record(e).catch((err: unknown) => log.error({ err: describeError(err), action: e.action }, 'could not write a job audit row'));

  function profileFor(id: string): Profile {
    const p = o.profiles().get(id);
    if (!p) throw new AgentVmError('profile_not_served', `no valid profile "${id}" is served here; run agent-vm profiles validate`, { status: 404 });
    if (!p.jobs.enabled) throw new AgentVmError('jobs_disabled', `profile "${id}" does not enable jobs (jobs.enabled: true)`, { status: 403 });
    return p;
  }

  function imageFor(p: Profile): string {
    return p.jobs.image ?? p.image ?? (p.agent.preset ? PRESETS[p.agent.preset].image : undefined) ?? o.config.image;
  }

  function specFor(p: Profile, sandbox: string, runtime: RuntimeSetting): SandboxSpec {
    const egress = p.jobs.egress.allow.length > 0;
    return {
      agentId: sandbox,
      image: imageFor(p),
      runtime,
      limits: { ...p.jobs.limits },
      network: egress ? { mode: 'internal', hostPorts: [], proxyPort: EGRESS_PORT } : { mode: 'none' },
    };
  }

  async function consume(p: Profile): Promise<void> {
    await queue.consume(p.id, p.jobs.maxConcurrent, execute);
  }

  function notify(id: string): void {
    for (const w of waiters.get(id) ?? []) w();
    waiters.delete(id);
  }

  /** Resolves with the row once it is terminal: told directly in this process, else by polling. */
  async function waitDone(id: string): Promise<JobRow> {
    for (;;) {
      const row = await o.jobs.get(id);
      if (!row) throw new AgentVmError('job_missing', `job ${id} vanished`, { status: 500 });
      if (!['queued', 'running'].includes(row.status)) return row;
      await new Promise<void>((resolve) => {
        const set = waiters.get(id) ?? new Set();
        const t = setTimeout(done, 500);
        function done() {
          clearTimeout(t);
          set.delete(done);
          resolve();
        }
        set.add(done);
        waiters.set(id, set);
      });
    }
  }

  // ------------------------------------------------------------------ execution

  async function execute(id: string): Promise<void> {
    const row = await o.jobs.get(id);
    if (!row) return;
    if (row.status === 'running' && !local.has(id)) {
      // Taken by a worker that died (BullMQ handed it on): never run twice; finish and clean up.
      await teardownJob(tdDeps(), row);
      await o.jobs.finish(id, { status: 'error', error: 'the process running this job stopped; its sandbox was torn down' });
      return notify(id);
    }
    if (row.status !== 'queued') return notify(id);
    const ac = new AbortController();
    local.set(id, ac);
    const poll = setInterval(() => {
      void o.jobs.get(id).then((r) => r?.cancelRequested && ac.abort(new Error('cancelled by its caller')), () => undefined);
    }, o.cancelPollMs ?? 500);
    try {
      await executeLocked(row, ac.signal);
    } catch (err) {
      log.error({ job: id, err: describeError(err) }, 'job execution failed unexpectedly');
      await o.jobs.finish(id, { status: 'error', error: describeError(err) }).catch(() => undefined);
    } finally {
      clearInterval(poll);
      local.delete(id);
      notify(id);
    }
  }

  const tdDeps = () => ({ driver: o.driver, repo: o.jobs, record, logger: log, ...(o.teardownBackoffMs ? { backoffMs: o.teardownBackoffMs } : {}) });

  async function executeLocked(row: JobRow, signal: AbortSignal): Promise<void> {
    const started = performance.now();
    let p: Profile;
    try {
      p = profileFor(row.profile);
    } catch (err) {
      await o.jobs.finish(row.id, { status: 'error', error: describeError(err) });
      return;
    }
    const setting = runtimeForTier(p.risk, p.runtime, o.config.runtime);
    if (!(await o.jobs.start(row.id, setting))) return; // cancelled while queued
    let relay: EgressRelay | undefined;
    let runtime: string | null = null;
    const inputsRefused: Refusal[] = [];
    const results: { written: string[]; refused: Refusal[]; copyError?: string } = { written: [], refused: [] };
    let exec: ExecResult | undefined;
    let bytesIn = 0;
    let bytesOut = 0;
    let error: string | undefined;
    let cancelled = false;
    try {
      const handle = await o.driver.ensure(specFor(p, row.sandbox, setting));
      runtime = handle.runtime;
      assertRuntimeAllowed(p.risk, handle.runtime);
      if (p.jobs.egress.allow.length > 0) {
        if (!handle.hostAddress) throw new AgentVmError('job_network', 'the job sandbox has no host address for its egress relay', { status: 500 });
        relay = await createEgressRelay({ profile: p.id, allow: p.jobs.egress.allow, listen: { host: handle.hostAddress, port: EGRESS_PORT }, record: async (e) => void (await record({ ...e, data: { ...e.data, job: row.id } })), logger: log });
      }
      // Inputs: copies read from the caller's workspace through the engine, under one budget.
      const budget = { ...o.config.outbox, maxFiles: Math.max(o.config.outbox.maxFiles, 1000) };
      const files: TreeFile[] = [];
      for (const given of row.inputs) {
        const { source, target } = resolveInput(given, row.conversation ?? undefined);
        const r = await readTree(o.driver, p.id, source, target, budget);
        if (r.refused.some((x) => x.reason === 'missing')) throw new AgentVmError('job_input_missing', `input ${given} does not exist in the caller's workspace`, { status: 400 });
        files.push(...r.files);
        inputsRefused.push(...r.refused);
        bytesIn += r.bytes;
      }
      const put = await writeTree(o.driver, row.sandbox, JOB_DIR, files);
      inputsRefused.push(...put.refused);
      if (signal.aborted) throw signal.reason;
      exec = await runCommand(row, signal);
      if (signal.aborted) cancelled = true;
      if (!cancelled && row.outputs.length > 0) {
        const rbudget = { ...o.config.outbox };
        const outs: TreeFile[] = [];
        for (const out of row.outputs) {
          const r = await readTree(o.driver, row.sandbox, `${JOB_DIR}/${out}`, out, rbudget);
          outs.push(...r.files);
          results.refused.push(...r.refused);
          bytesOut += r.bytes;
        }
        try {
          const w = await writeTree(o.driver, p.id, `${RESULTS_DIR}/${row.id}`, outs);
          results.written = w.written;
          results.refused.push(...w.refused);
        } catch (err) {
          results.copyError = isAgentVmError(err, 'sandbox_missing')
            ? `the results could not be copied back: profile ${p.id}'s sandbox does not exist (wake it, then run the job again)`
            : `the results could not be copied back: ${describeError(err)}`;
        }
      }
    } catch (err) {
      if (signal.aborted) cancelled = true;
      else error = describeError(err);
    } finally {
      await relay?.close().catch(() => undefined);
    }
    const td = await teardownJob(tdDeps(), row);
    const status = cancelled ? 'cancelled' : error !== undefined ? 'error' : exec?.timedOut ? 'timed_out' : exec?.exitCode === 0 && !exec.sandboxStopped ? 'succeeded' : 'failed';
    const why = cancelled
      ? describeError(signal.reason ?? 'cancelled')
      : error ?? (exec?.sandboxStopped ? stoppedReason(exec.sandboxStopped) : exec?.timedOut ? `killed at its ${row.timeoutSeconds}-second deadline` : results.copyError ?? exitReason(exec));
    await o.jobs.finish(row.id, {
      status,
      runtime: runtime ?? setting,
      exitCode: exec?.exitCode ?? null,
      stdout: exec?.stdout ?? '',
      stderr: exec?.stderr ?? '',
      bytesIn,
      bytesOut,
      results: { ...results, inputsRefused, truncated: exec?.truncated ?? false, timedOut: exec?.timedOut ?? false, durationMs: Math.round(performance.now() - started), teardown: td },
      error: why ?? null,
    });
    await record({
      profile: p.id, action: 'job.finish', decision: status === 'succeeded' ? 'ok' : 'error', subject: row.id, reason: why ?? null,
      data: { requestedBy: row.requestedBy, commandHash: row.commandHash, status, exitCode: exec?.exitCode ?? null, bytesIn, bytesOut, files: results.written.length, refused: results.refused.length + inputsRefused.length, runtime, teardownVerified: td.verified },
    });
    log.info({ job: row.id, profile: p.id, status, exitCode: exec?.exitCode ?? null, ms: Math.round(performance.now() - started), teardown: td.verified }, 'job finished');
  }

  /** The command in the job's working directory, killed at the deadline or when cancelled. */
  async function runCommand(row: JobRow, signal: AbortSignal): Promise<ExecResult> {
    // `exec "$@"` runs the argv as given: no shell parsing of the caller's arguments.
    const argv = ['sh', '-c', `cd ${WORKSPACE}/${JOB_DIR} && exec "$@"`, 'job', ...row.command];
    const stopped: ExecResult = { exitCode: null, stdout: '', stderr: '', timedOut: false, truncated: false, durationMs: 0 };
    let onAbort: (() => void) | undefined;
    // Cancelled: answer at once; removing the sandbox (here, and verified in teardown) ends the command.
    const cancelled = new Promise<ExecResult>((resolve) => {
      onAbort = () => {
        void o.driver.destroy(row.sandbox, { finalSnapshot: false }).catch(() => undefined);
        resolve(stopped);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    const running = o.driver.exec(row.sandbox, argv, { timeoutMs: row.timeoutSeconds * 1000, maxOutputBytes: maxOutput });
    running.catch(() => undefined);
    try {
      return await Promise.race([running, cancelled]);
    } catch (err) {
      if (signal.aborted) return stopped;
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  // ------------------------------------------------------------------ submission

  async function run(sub: JobSubmission, signal?: AbortSignal): Promise<JobResult> {
    if (closing) throw new AgentVmError('jobs_closed', 'the job runner is stopping', { status: 503, retryable: true });
    const p = profileFor(sub.profile);
    let checked;
    try {
      checked = checkRequest(p, sub.args, sub.conversation);
    } catch (err) {
      await record({ profile: p.id, action: 'job.request', decision: 'deny', reason: describeError(err), data: { requestedBy: sub.requestedBy } });
      throw err;
    }
    const id = randomBytes(8).toString('hex');
    const commandHash = sha256(stableStringify(checked.command));
    await o.jobs.insert({
      id, profile: p.id, requestedBy: sub.requestedBy, conversation: sub.conversation ?? null, turnId: sub.turnId ?? null,
      command: checked.command, commandHash,
      // Stored as asked (re-resolved at execution); the caller's own view of its paths.
      inputs: Array.isArray(sub.args.inputs) ? (sub.args.inputs as string[]) : [],
      outputs: checked.outputs, timeoutSeconds: checked.timeoutSeconds, sandbox: jobSandboxId(id),
    });
    await record({
      profile: p.id, action: 'job.request', decision: 'allow', subject: id,
      data: { requestedBy: sub.requestedBy, conversation: sub.conversation ?? null, turn: sub.turnId ?? null, commandHash, inputs: checked.inputs.length, outputs: checked.outputs.length, timeoutSeconds: checked.timeoutSeconds },
    });
    const cancel = () => {
      local.get(id)?.abort(new Error('cancelled: the caller stopped waiting (its turn ended)'));
      void o.jobs.requestCancel(id, 'cancelled: the caller stopped waiting (its turn ended)').catch(() => undefined);
    };
    if (signal?.aborted) cancel();
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      await consume(p);
      await queue.add(p.id, id);
      return resultOf(await waitDone(id));
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }

  function resultOf(row: JobRow): JobResult {
    const r = (row.results ?? {}) as Partial<{ written: string[]; refused: Refusal[]; inputsRefused: Refusal[]; truncated: boolean; timedOut: boolean; durationMs: number; teardown: JobResult['teardown'] }>;
    return {
      id: row.id,
      status: row.status,
      exitCode: row.exitCode,
      timedOut: r.timedOut ?? row.status === 'timed_out',
      stdout: row.stdout ?? '',
      stderr: row.stderr ?? '',
      truncated: r.truncated ?? false,
      resultsDir: `${WORKSPACE}/${RESULTS_DIR}/${row.id}`,
      written: r.written ?? [],
      refused: r.refused ?? [],
      inputsRefused: r.inputsRefused ?? [],
      bytesIn: row.bytesIn,
      bytesOut: row.bytesOut,
      durationMs: r.durationMs ?? 0,
      runtime: row.runtime,
      teardown: r.teardown ?? { verified: row.teardown === 'verified', attempts: row.teardownAttempts, durationMs: 0 },
      ...(row.error ? { error: row.error } : {}),
    };
  }

  // ------------------------------------------------------------------ sweeping

  async function sweep(): Promise<{ checked: number; verified: number }> {
    const rows = await o.jobs.pendingTeardowns(new Date(Date.now() - orphanAfterMs));
    let verified = 0;
    let checked = 0;
    for (const row of rows) {
      if (local.has(row.id)) continue;
      const running = row.status === 'running';
      // A running row is an orphan only well past its own deadline.
      if (running && row.startedAt && row.startedAt.getTime() + row.timeoutSeconds * 1000 + orphanAfterMs > Date.now()) continue;
      checked++;
      const td = await teardownJob(tdDeps(), row);
      if (td.verified) verified++;
      if (running) await o.jobs.finish(row.id, { status: 'error', error: 'the process running this job stopped; its sandbox was torn down' });
    }
    if (checked > 0) log.info({ checked, verified }, 'job teardown sweep');
    return { checked, verified };
  }

  return {
    run,
    async runForAgent(profile: Profile, caller: BuiltinCaller, args: Record<string, unknown>, signal: AbortSignal): Promise<CallToolResult> {
      try {
        const r = await run({ profile: profile.id, requestedBy: `agent:${caller.sessionKey}`, conversation: caller.sessionKey, ...(caller.turnId ? { turnId: caller.turnId } : {}), args }, signal);
        return toolResult(r);
      } catch (err) {
        if (isAgentVmError(err) && err.status < 500) return { content: [{ type: 'text', text: `job refused: ${err.message}` }], isError: true };
        throw err;
      }
    },
    async start() {
      for (const p of o.profiles().values()) if (p.jobs.enabled) await consume(p);
      await sweep().catch((err: unknown) => log.warn({ err: describeError(err) }, 'job teardown sweep failed'));
      sweeper ??= setInterval(() => void sweep().catch((err: unknown) => log.warn({ err: describeError(err) }, 'job teardown sweep failed')), o.sweepEveryMs ?? 60_000);
      sweeper.unref();
    },
    sweep,
    close() {
      closing ??= (async () => {
        if (sweeper) clearInterval(sweeper);
        for (const ac of local.values()) ac.abort(new Error('cancelled: the gateway is stopping'));
        await queue.close();
      })();
      return closing;
    },
  };
}

function stoppedReason(s: { exitCode: number | undefined; oomKilled: boolean }): string {
  if (s.oomKilled) return 'the job sandbox ran out of memory (jobs.limits.memoryMiB) and was killed';
  return `the job sandbox died (exit ${s.exitCode ?? '?'}): a limit was hit (processes: jobs.limits.pids; memory: jobs.limits.memoryMiB)`;
}

/** Why a command that ran to its end failed: its exit code (a failure never goes without a reason). */
function exitReason(exec: ExecResult | undefined): string | undefined {
  if (!exec || exec.exitCode === 0) return undefined;
  return exec.exitCode === null ? 'the command ended without an exit code (killed)' : `the command exited with code ${exec.exitCode}`;
}
