/**
 * Tier-2 jobs (src/jobs): one row per job, written before the job is queued. Status moves
 * forward only (queued → running → a terminal status; queued → cancelled), so a late writer
 * never reopens a finished job. Teardown is recorded on its own: a job can be finished while its
 * sandbox's removal is still `pending` or `failed`, and `pendingTeardowns` is what a sweeper
 * retries until it is `verified`.
 *
 * Everything stored is made storable first (src/text.ts): commands and outputs are the caller's
 * and the job's, both hostile.
 */
import { and, desc, eq, inArray, lt, ne, sql } from 'drizzle-orm';
import { storable, storableDeep } from '../text.js';
import type { Db } from './index.js';
import { jobs, jobStatuses, teardownStates, terminalJobStatuses } from './schema.js';

export type JobRow = typeof jobs.$inferSelect;
export type JobStatus = (typeof jobStatuses)[number];
export type TeardownState = (typeof teardownStates)[number];

export interface NewJob {
  id: string;
  profile: string;
  requestedBy: string;
  conversation: string | null;
  turnId: string | null;
  command: string[];
  commandHash: string;
  inputs: string[];
  outputs: string[];
  timeoutSeconds: number;
  sandbox: string;
}

export interface JobOutcome {
  status: Exclude<JobStatus, 'queued' | 'running'>;
  /** The runtime the engine actually used (start records the setting asked for). */
  runtime?: string;
  exitCode?: number | null;
  stdout?: string;
  stderr?: string;
  bytesIn?: number;
  bytesOut?: number;
  results?: unknown;
  error?: string | null;
}

export interface JobRepo {
  insert(j: NewJob): Promise<JobRow>;
  get(id: string): Promise<JobRow | undefined>;
  /** queued → running, before its sandbox is made; false when the job is no longer queued (cancelled, or taken by another worker). */
  start(id: string, runtime: string): Promise<boolean>;
  /** Moves a queued or running job to a terminal status; false when it already had one. */
  finish(id: string, o: JobOutcome): Promise<boolean>;
  /** Records one teardown attempt and its outcome. */
  recordTeardown(id: string, state: TeardownState, detail: string | null): Promise<void>;
  /** Asks the runner to stop the job (polled while it runs); a queued job is cancelled at once. */
  requestCancel(id: string, reason: string): Promise<void>;
  /** Newest first; `profile` narrows it. */
  list(o?: { profile?: string; limit?: number }): Promise<JobRow[]>;
  /**
   * Jobs whose sandbox may still exist: teardown not verified, and either finished or running
   * since before `staleBefore` (perhaps a runner that died: the caller checks each one's deadline). Oldest first.
   */
  pendingTeardowns(staleBefore: Date): Promise<JobRow[]>;
}

const MAX_OUTPUT = 64 * 1024;

export function jobRepo(db: Db): JobRepo {
  const TERMINAL = [...terminalJobStatuses];
  return {
    async insert(j) {
      const [row] = await db
        .insert(jobs)
        .values({
          id: j.id,
          profile: j.profile,
          requestedBy: storable(j.requestedBy, 512),
          conversation: j.conversation === null ? null : storable(j.conversation, 1024),
          turnId: j.turnId === null ? null : storable(j.turnId, 512),
          command: storableDeep(j.command, { maxString: 8192, maxEntries: 256 }) as string[],
          commandHash: j.commandHash,
          inputs: storableDeep(j.inputs, { maxString: 1024, maxEntries: 256 }) as string[],
          outputs: storableDeep(j.outputs, { maxString: 1024, maxEntries: 256 }) as string[],
          timeoutSeconds: j.timeoutSeconds,
          status: 'queued',
          sandbox: j.sandbox,
        })
        .returning();
      if (!row) throw new Error(`insert of job ${j.id} returned no row`);
      return row;
    },
    async get(id) {
      const [row] = await db.select().from(jobs).where(eq(jobs.id, id));
      return row;
    },
    async start(id, runtime) {
      const rows = await db
        .update(jobs)
        .set({ status: 'running', runtime, startedAt: sql`now()`, updatedAt: sql`now()` })
        .where(and(eq(jobs.id, id), eq(jobs.status, 'queued')))
        .returning({ id: jobs.id });
      return rows.length > 0;
    },
    async finish(id, o) {
      const rows = await db
        .update(jobs)
        .set({
          status: o.status,
          ...(o.runtime !== undefined ? { runtime: o.runtime } : {}),
          ...(o.exitCode !== undefined ? { exitCode: o.exitCode } : {}),
          ...(o.stdout !== undefined ? { stdout: storable(o.stdout, MAX_OUTPUT) } : {}),
          ...(o.stderr !== undefined ? { stderr: storable(o.stderr, MAX_OUTPUT) } : {}),
          ...(o.bytesIn !== undefined ? { bytesIn: o.bytesIn } : {}),
          ...(o.bytesOut !== undefined ? { bytesOut: o.bytesOut } : {}),
          ...(o.results !== undefined ? { results: storableDeep(o.results, { maxString: 1024, maxEntries: 512 }) } : {}),
          ...(o.error !== undefined ? { error: o.error === null ? null : storable(o.error, 4096) } : {}),
          finishedAt: sql`now()`,
          updatedAt: sql`now()`,
        })
        .where(and(eq(jobs.id, id), inArray(jobs.status, ['queued', 'running'])))
        .returning({ id: jobs.id });
      return rows.length > 0;
    },
    async recordTeardown(id, state, detail) {
      await db
        .update(jobs)
        .set({ teardown: state, teardownDetail: detail === null ? null : storable(detail, 4096), teardownAttempts: sql`${jobs.teardownAttempts} + 1`, updatedAt: sql`now()` })
        .where(eq(jobs.id, id));
    },
    async requestCancel(id, reason) {
      await db.update(jobs).set({ cancelRequested: sql`now()`, updatedAt: sql`now()` }).where(and(eq(jobs.id, id), inArray(jobs.status, ['queued', 'running'])));
      await db
        .update(jobs)
        .set({ status: 'cancelled', error: storable(reason, 4096), finishedAt: sql`now()`, updatedAt: sql`now()` })
        .where(and(eq(jobs.id, id), eq(jobs.status, 'queued')));
    },
    list(o = {}) {
      const q = db.select().from(jobs);
      return (o.profile ? q.where(eq(jobs.profile, o.profile)) : q).orderBy(desc(jobs.createdAt)).limit(o.limit ?? 50);
    },
    pendingTeardowns(staleBefore) {
      return db
        .select()
        .from(jobs)
        .where(and(ne(jobs.teardown, 'verified'), sql`(${inArray(jobs.status, TERMINAL)} or (${eq(jobs.status, 'running')} and ${lt(jobs.startedAt, staleBefore)}))`))
        .orderBy(jobs.createdAt)
        .limit(100);
    },
  };
}
