/**
 * Per-profile turn queues, `agent-gateway@<profile>`: BullMQ on Redis when REDIS_URL is set (so
 * the front door and each unit can be separate processes), an in-process queue otherwise.
 *
 * A job is only a wake-up call naming an event; the event itself, its order within the
 * conversation and its status live in the database. So a lost or duplicated job costs little:
 * a unit drains its conversations from the database, recovers open events when it starts, and
 * looks for open events nobody works on every minute (unit.ts `sweepMs`).
 */
import type { Queue, Worker } from 'bullmq';
import { bullmq } from '../bullmq.js';
import type { Logger } from '../log.js';

export interface TurnJob {
  eventId: string;
  conversation: string;
}

export type TurnHandler = (job: TurnJob) => Promise<void>;

export interface TurnQueue {
  readonly name: string;
  /** Idempotent per event id while the job is known to the queue. */
  add(job: TurnJob): Promise<void>;
  /** Starts delivering jobs to `handler`, up to `concurrency` at once. Call once. */
  consume(handler: TurnHandler, opts: { concurrency: number }): void;
  /** Stops consuming (waits for running handlers) and releases connections. Idempotent. */
  close(): Promise<void>;
}

export interface QueueFactory {
  readonly kind: 'bullmq' | 'memory';
  queue(profile: string): TurnQueue;
  close(): Promise<void>;
}

export const queueName = (profile: string) => `agent-gateway@${profile}`;

export function createQueueFactory(opts: { redisUrl?: string; logger: Logger }): QueueFactory {
  const queues = new Map<string, TurnQueue>();
  const make = opts.redisUrl ? (name: string) => bullQueue(name, opts.redisUrl!, opts.logger) : (name: string) => memoryQueue(name, opts.logger);
  let closing: Promise<void> | undefined;
  return {
    kind: opts.redisUrl ? 'bullmq' : 'memory',
    queue(profile) {
      const name = queueName(profile);
      let q = queues.get(name);
      if (!q) {
        q = make(name);
        queues.set(name, q);
      }
      return q;
    },
    close() {
      closing ??= Promise.allSettled([...queues.values()].map((q) => q.close())).then(() => undefined);
      return closing;
    },
  };
}

function memoryQueue(name: string, logger: Logger): TurnQueue {
  const waiting: TurnJob[] = [];
  let handler: TurnHandler | undefined;
  let limit = 1;
  let active = 0;
  const running = new Set<Promise<void>>();
  let closed = false;

  const pump = () => {
    while (handler && !closed && active < limit && waiting.length > 0) {
      const job = waiting.shift()!;
      active++;
      const p = handler(job)
        .catch((err: unknown) => logger.error({ err, queue: name, eventId: job.eventId }, 'turn handler failed'))
        .finally(() => {
          active--;
          running.delete(p);
          pump();
        });
      running.add(p);
    }
  };

  return {
    name,
    async add(job) {
      if (closed) return;
      if (waiting.some((j) => j.eventId === job.eventId)) return;
      waiting.push(job);
      // Let the caller finish its own bookkeeping (e.g. answer the platform) before the turn starts.
      queueMicrotask(pump);
    },
    consume(h, o) {
      handler = h;
      limit = Math.max(1, o.concurrency);
      pump();
    },
    async close() {
      closed = true;
      await Promise.allSettled([...running]);
    },
  };
}

function bullQueue(name: string, redisUrl: string, logger: Logger): TurnQueue {
  // BullMQ wants blocking connections to retry forever rather than fail a command.
  const connection = { url: redisUrl, maxRetriesPerRequest: null };
  let queue: Queue | undefined;
  let worker: Worker | undefined;
  let closing: Promise<void> | undefined;
  const producer = async () => (queue ??= new (await bullmq()).Queue(name, { connection }));
  /** The worker, once BullMQ is loaded (consume starts it). */
  let starting: Promise<void> | undefined;
  /**
   * Jobs added in one turn of the event loop (the events of one intake batch) go to Redis in one
   * addBulk: one round trip and one socket write instead of one each. Each caller still waits
   * for its own job to be in the queue.
   */
  let pending: Array<{ job: TurnJob; resolve: () => void; reject: (e: unknown) => void }> = [];
  function flush(): void {
    const batch = pending;
    pending = [];
    const opts = { removeOnComplete: { age: 24 * 3600, count: 10_000 }, removeOnFail: { age: 7 * 24 * 3600 } };
    // Run from a timer: whatever fails, synchronously or not, is each caller's rejection.
    Promise.resolve()
      .then(async () => (await producer()).addBulk(batch.map(({ job }) => ({ name: 'turn', data: job, opts: { ...opts, jobId: job.eventId.replace(/:/g, '_') } }))))
      .then(
        () => batch.forEach((b) => b.resolve()),
        (err: unknown) => batch.forEach((b) => b.reject(err)),
      );
  }
  return {
    name,
    add(job) {
      return new Promise<void>((resolve, reject) => {
        if (pending.push({ job, resolve, reject }) === 1) setImmediate(flush);
      });
    },
    consume(handler, o) {
      starting = bullmq().then(
        ({ Worker }) => {
          if (closing) return;
          worker = new Worker(name, async (job) => handler(job.data as TurnJob), {
            connection,
            concurrency: Math.max(1, o.concurrency),
            // The unit recovers open events from the database on start, so a stalled job only has
            // to come back eventually; keep Redis chatter low.
            lockDuration: 30_000,
            maxStalledCount: 5,
          });
          worker.on('error', (err) => logger.warn({ err, queue: name }, 'queue worker error'));
        },
        (err: unknown) => logger.error({ err, queue: name }, 'BullMQ could not be loaded; this queue delivers nothing'),
      );
    },
    close() {
      closing ??= Promise.allSettled([starting]).then(() => Promise.allSettled([worker?.close(), queue?.close()])).then((rs) => {
        for (const r of rs) if (r.status === 'rejected') logger.warn({ err: r.reason, queue: name }, 'closing queue failed');
      });
      return closing;
    },
  };
}
