/**
 * Verified teardown of a job sandbox: `SandboxDriver.destroy` removes container, volume, network
 * (and its firewall chain) by label and throws if the engine still lists anything labelled for it;
 * then `status` must say `missing`. Each attempt is recorded on the job row; a leftover is
 * retried with backoff, then recorded `failed`, logged at error level and audited, and left to the
 * sweeper (`pendingTeardowns`), which retries until it is verified. Never ignored.
 */
import { describeError } from '../errors.js';
import type { AuditEntry } from '../governance/audit.js';
import type { Logger } from '../log.js';
import type { DestroyReport, SandboxDriver } from '../sandbox/types.js';
import type { JobRepo } from '../store/jobs.js';

export interface TeardownOutcome {
  verified: boolean;
  attempts: number;
  durationMs: number;
  removed?: DestroyReport['removed'];
  detail?: string;
}

export interface TeardownDeps {
  driver: SandboxDriver;
  repo: JobRepo;
  record: (e: AuditEntry) => Promise<unknown>;
  logger: Logger;
  /** Delays between attempts; default 0.5 s, 2 s, 5 s. */
  backoffMs?: readonly number[];
}

const DEFAULT_BACKOFF = [500, 2000, 5000] as const;

export async function teardownJob(d: TeardownDeps, job: { id: string; profile: string; sandbox: string }): Promise<TeardownOutcome> {
  const started = performance.now();
  const backoff = d.backoffMs ?? DEFAULT_BACKOFF;
  let detail = 'not attempted';
  let removed: DestroyReport['removed'] | undefined;
  for (let attempt = 0; attempt <= backoff.length; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, backoff[attempt - 1]));
    try {
      removed = (await d.driver.destroy(job.sandbox, { finalSnapshot: false })).removed;
      const st = await d.driver.status(job.sandbox);
      if (st.state !== 'missing') throw new Error(`the engine still reports the sandbox ${st.state} after destroy`);
      const outcome: TeardownOutcome = { verified: true, attempts: attempt + 1, durationMs: Math.round(performance.now() - started), removed };
      await d.repo.recordTeardown(job.id, 'verified', null);
      await d.record({ profile: job.profile, action: 'job.teardown', decision: 'ok', subject: job.id, data: { sandbox: job.sandbox, verified: true, attempts: outcome.attempts, removed, ms: outcome.durationMs } });
      return outcome;
    } catch (err) {
      detail = describeError(err).slice(0, 1000);
      const last = attempt === backoff.length;
      if (!last) d.logger.warn({ job: job.id, sandbox: job.sandbox, attempt: attempt + 1, err: detail }, 'job sandbox teardown incomplete; retrying');
      await d.repo.recordTeardown(job.id, last ? 'failed' : 'pending', detail).catch((e: unknown) => d.logger.error({ job: job.id, err: describeError(e) }, 'could not record a teardown attempt'));
    }
  }
  const outcome: TeardownOutcome = { verified: false, attempts: backoff.length + 1, durationMs: Math.round(performance.now() - started), detail, ...(removed ? { removed } : {}) };
  // The alarm: an error log, an audit row and the row's state, which the sweeper keeps retrying.
  d.logger.error({ job: job.id, sandbox: job.sandbox, detail }, 'job sandbox NOT torn down: leftovers remain on the engine; the sweeper retries');
  await d.record({ profile: job.profile, action: 'job.teardown', decision: 'error', subject: job.id, reason: detail, data: { sandbox: job.sandbox, verified: false, attempts: outcome.attempts } }).catch(() => undefined);
  return outcome;
}
