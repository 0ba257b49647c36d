/**
 * Per-profile job queues, `agent-jobs@<profile>`: BullMQ on Redis when REDIS_URL is set, an
 * in-process queue otherwise. As with turns, a queued item is only a job id: the request, its
 * status and its result live in the database (store.jobs), so any process sharing the engine and
 * the database can run it.
 *
 * Concurrency: at most `max` jobs of a profile run at once. In-process that is this queue's own
 * limit; on Redis it is BullMQ's global concurrency for the queue, so it holds across every
 * gateway process (and `agent-vm jobs run`) sharing it.
 *
 * Deliberately left out: retries. A job is not assumed idempotent; one whose worker died is
 * finished as an error by the next worker that sees it (runner.ts), never run twice.
 */
import type { Queue, Worker } from 'bullmq';
import { bullmq } from '../bullmq.js';
import type { Logger } from '../log.js';

export type JobHandler = (id: string) => Promise<void>;

export interface JobQueue {
  readonly kind: 'bullmq' | 'memory';
  /** Queues job `id` of `profile`. Resolves once it is queued (not run). */
  add(profile: string, id: string): Promise<void>;
  /** Starts running `profile`'s jobs with `handler`, at most `max` at once. Idempotent per profile (the first limit wins until close). */
  consume(profile: string, max: number, handler: JobHandler): Promise<void>;
  /** Stops taking jobs, waits for running handlers, releases connections. Idempotent. */
  close(): Promise<void>;
}

export const jobQueueName = (profile: string) => `agent-jobs@${profile}`;

export function createJobQueue(o: { redisUrl?: string | undefined; logger: Logger; prefix?: string }): JobQueue {
  return o.redisUrl ? bullJobQueue(o.redisUrl, o.logger, o.prefix) : memoryJobQueue(o.logger);
}

function memoryJobQueue(logger: Logger): JobQueue {
  const lanes = new Map<string, { waiting: string[]; handler?: JobHandler; max: number; active: number }>();
  const running = new Set<Promise<void>>();
  let closed = false;
  const lane = (p: string) => {
    let l = lanes.get(p);
    if (!l) lanes.set(p, (l = { waiting: [], max: 1, active: 0 }));
    return l;
  };
  const pump = (profile: string) => {
    const l = lane(profile);
    while (l.handler && !closed && l.active < l.max && l.waiting.length > 0) {
      const id = l.waiting.shift()!;
      l.active++;
      const p = l.handler(id)
        .catch((err: unknown) => logger.error({ err, job: id }, 'job handler failed'))
        .finally(() => {
          l.active--;
          running.delete(p);
          pump(profile);
        });
      running.add(p);
    }
  };
  return {
    kind: 'memory',
    async add(profile, id) {
      if (closed) return;
      lane(profile).waiting.push(id);
      queueMicrotask(() => pump(profile));
    },
    async consume(profile, max, handler) {
      const l = lane(profile);
      if (l.handler) return;
      l.handler = handler;
      l.max = Math.max(1, max);
      pump(profile);
    },
    async close() {
      closed = true;
      while (running.size > 0) await Promise.allSettled([...running]);
    },
  };
}

function bullJobQueue(redisUrl: string, logger: Logger, prefix: string | undefined): JobQueue {
  const connection = { url: redisUrl, maxRetriesPerRequest: null };
  const queues = new Map<string, Queue>();
  const workers = new Map<string, Worker>();
  let closing: Promise<void> | undefined;
  const queue = async (profile: string) => {
    const { Queue } = await bullmq();
    let q = queues.get(profile);
    if (!q) queues.set(profile, (q = new Queue(jobQueueName(profile), { connection, ...(prefix ? { prefix } : {}) })));
    return q;
  };
  return {
    kind: 'bullmq',
    async add(profile, id) {
      await (await queue(profile)).add('job', { id }, { jobId: id, attempts: 1, removeOnComplete: { age: 24 * 3600, count: 10_000 }, removeOnFail: { age: 7 * 24 * 3600 } });
    },
    async consume(profile, max, handler) {
      if (workers.has(profile) || closing) return;
      await (await queue(profile)).setGlobalConcurrency(Math.max(1, max));
      const { Worker } = await bullmq();
      if (workers.has(profile) || closing) return;
      const w = new Worker(jobQueueName(profile), async (job) => handler((job.data as { id: string }).id), {
        connection,
        ...(prefix ? { prefix } : {}),
        concurrency: Math.max(1, max),
        // A job holds its lock for as long as it runs (renewed); a dead worker's job is found by
        // the next worker after this and finished as an error (runner.ts), not run again.
        lockDuration: 60_000,
        maxStalledCount: 1,
      });
      w.on('error', (err) => logger.warn({ err, queue: jobQueueName(profile) }, 'job queue worker error'));
      workers.set(profile, w);
    },
    close() {
      closing ??= Promise.allSettled([...[...workers.values()].map((w) => w.close()), ...[...queues.values()].map((q) => q.close())]).then((rs) => {
        for (const r of rs) if (r.status === 'rejected') logger.warn({ err: r.reason }, 'closing a job queue failed');
      });
      return closing;
    },
  };
}
