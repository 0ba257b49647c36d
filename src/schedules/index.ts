/**
 * Profile schedules on an existing scheduler: BullMQ job schedulers when REDIS_URL is set (one
 * job per tick, whichever of several gateway processes takes it), croner in-process otherwise.
 * Each tick goes through `fireTick` (fire.ts): claimed once in the database, then a message
 * through the intake.
 *
 * Missed ticks (no gateway ran): at start, a schedule whose last run is older than its latest
 * due tick logs and audits how many it missed (`schedule.missed`); `catchUp: latest` runs that
 * latest one, `none` (the default) does not. A BullMQ tick delivered late (its job waited in Redis
 * while every gateway was down) counts as missed the same way, never as a late run.
 *
 * Deliberately left out: seconds-exact timing (ticks start within about a second), and editing
 * schedules at run time (they come from the manifests loaded at start).
 */
import type { Queue, Worker } from 'bullmq';
import { Cron } from 'croner';
import { bullmq } from '../bullmq.js';
import { describeError } from '../errors.js';
import type { AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Schedule } from '../governance/profile-jobs.js';
import type { Logger } from '../log.js';
import type { EventRepo } from '../store/events.js';
import type { ScheduleRunRepo } from '../store/schedules.js';
import { fireTick, type FireDeps, type FireOutcome } from './fire.js';

export { scheduleEventId, tickStamp, type FireOutcome } from './fire.js';
export { scheduleListing, type ScheduleInfo } from './listing.js';

export interface SchedulerOptions extends Omit<FireDeps, 'record' | 'closing' | 'runs' | 'events'> {
  store: { scheduleRuns: ScheduleRunRepo; events: Pick<EventRepo, 'getEvent'> };
  audit: Pick<AuditLog, 'record'>;
  /** The profiles served (valid manifests), by id. */
  profiles: () => ReadonlyMap<string, Profile>;
  redisUrl?: string | undefined;
  /** BullMQ key prefix (tests). */
  prefix?: string;
  /** BullMQ queue name. Default `agent-schedules`. */
  queueName?: string;
  /** A BullMQ tick delivered later than this after its time is a missed tick. Default 60 s. */
  lateAfterMs?: number;
}

export interface Scheduler {
  readonly kind: 'bullmq' | 'croner';
  /** Registers every schedule, handles missed ticks, starts firing. */
  start(): Promise<void>;
  /** Runs one tick now (what a timer does); exposed for catch-up and tests. */
  fire(profile: string, schedule: string, tick: Date, catchUp?: boolean): Promise<FireOutcome>;
  /** Stops timers and workers; waiting `queue` ticks give up. Idempotent. */
  close(): Promise<void>;
}

const SCHEDULER_ID = /^([a-z0-9][a-z0-9-]{0,39})\/([a-z0-9][a-z0-9-]{0,39})$/;
const toSecond = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

export function createScheduler(o: SchedulerOptions): Scheduler {
  const log = o.logger.child({ component: 'schedules' });
  let closed = false;
  const crons: Cron[] = [];
  let queue: Queue | undefined;
  let worker: Worker | undefined;
  const inFlight = new Set<Promise<unknown>>();
  const deps: FireDeps = {
    ...o,
    runs: o.store.scheduleRuns,
    events: o.store.events,
    record: (e) => o.audit.record(e).catch((err: unknown) => log.error({ err: describeError(err) }, 'could not write a schedule audit row')),
    closing: () => closed,
  };

  function all(): Array<{ profile: Profile; schedule: Schedule }> {
    return [...o.profiles().values()].flatMap((profile) => profile.schedules.map((schedule) => ({ profile, schedule })));
  }

  function fire(profileId: string, name: string, tick: Date, catchUp = false): Promise<FireOutcome> {
    const profile = o.profiles().get(profileId);
    const schedule = profile?.schedules.find((s) => s.name === name);
    if (!profile || !schedule) {
      log.warn({ profile: profileId, schedule: name }, 'tick for a schedule no longer in the manifests; ignored');
      return Promise.resolve({ status: 'failed', reason: 'no such schedule' });
    }
    const p = fireTick(deps, profile, schedule, toSecond(tick), catchUp);
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    return p;
  }

  /** Counts (up to 1000) and handles ticks missed since the last recorded run. */
  async function missed(profile: Profile, s: Schedule): Promise<void> {
    const cron = new Cron(s.cron, { timezone: s.timezone, paused: true });
    try {
      const due = cron.previousRuns(1, new Date())[0];
      const last = await o.store.scheduleRuns.last(profile.id, s.name);
      // Never ran: a new schedule has nothing to catch up.
      if (!due || !last || last.tick.getTime() >= toSecond(due).getTime()) return;
      let count = 0;
      for (let t: Date | null = cron.nextRun(last.tick); t && t.getTime() <= due.getTime() && count < 1000; t = cron.nextRun(t)) count++;
      log.warn({ profile: profile.id, schedule: s.name, missed: count, since: last.tick.toISOString(), catchUp: s.catchUp }, 'schedule ticks were missed while no gateway ran');
      await deps.record({ profile: profile.id, action: 'schedule.missed', decision: s.catchUp === 'latest' ? 'allow' : 'skip', subject: s.name, data: { missed: count, since: last.tick.toISOString(), latest: toSecond(due).toISOString(), catchUp: s.catchUp } });
      if (s.catchUp === 'latest') await fire(profile.id, s.name, due, true);
    } finally {
      cron.stop();
    }
  }

  async function startCroner(): Promise<void> {
    for (const { profile, schedule } of all()) {
      crons.push(
        new Cron(schedule.cron, { timezone: schedule.timezone, catch: (err) => log.error({ err: describeError(err), schedule: schedule.name }, 'schedule timer failed') }, (self) => {
          if (closed) return;
          void fire(profile.id, schedule.name, self.currentRun() ?? new Date());
        }),
      );
    }
  }

  /**
   * Two gateway processes starting together both upsert each scheduler; BullMQ then refuses one
   * of them ("Cannot create job scheduler iteration - job ID already exists": the other process
   * created the next tick's job a moment before). Trying again finds that job and succeeds.
   */
  async function upsertRacing(upsert: () => Promise<unknown>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await upsert();
        return;
      } catch (err) {
        if (attempt >= 5 || !/job ID already exists/i.test(describeError(err))) throw err;
        log.info({ attempt }, 'another process created this schedule\'s next tick at the same moment; upserting again');
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 150));
      }
    }
  }

  async function startBull(redisUrl: string): Promise<void> {
    const connection = { url: redisUrl, maxRetriesPerRequest: null };
    const name = o.queueName ?? 'agent-schedules';
    const opts = { connection, ...(o.prefix ? { prefix: o.prefix } : {}) };
    const { Queue, Worker } = await bullmq();
    queue = new Queue(name, opts);
    const wanted = new Set<string>();
    for (const { profile, schedule } of all()) {
      const id = `${profile.id}/${schedule.name}`;
      wanted.add(id);
      const q = queue;
      await upsertRacing(() => q.upsertJobScheduler(id, { pattern: schedule.cron, tz: schedule.timezone }, { name: 'tick', data: { profile: profile.id, schedule: schedule.name }, opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } } }));
    }
    // Schedules removed from the manifests stop ticking.
    for (const js of await queue.getJobSchedulers(0, -1)) {
      if (js.key && SCHEDULER_ID.test(js.key) && !wanted.has(js.key)) await queue.removeJobScheduler(js.key);
    }
    worker = new Worker(
      name,
      async (job) => {
        const { profile, schedule } = job.data as { profile: string; schedule: string };
        // The tick a job stands for is in its id (`repeat:<scheduler>:<millis>`); else its due time.
        const millis = Number(/:(\d+)$/.exec(job.id ?? '')?.[1] ?? job.timestamp + (job.delay ?? 0));
        const tick = new Date(millis);
        if (Date.now() - millis > (o.lateAfterMs ?? 60_000)) {
          log.warn({ profile, schedule, tick: tick.toISOString() }, 'schedule tick delivered late (no gateway ran at its time): counted as missed');
          return;
        }
        await fire(profile, schedule, tick);
      },
      { ...opts, concurrency: 8 },
    );
    worker.on('error', (err) => log.warn({ err }, 'schedule worker error'));
  }

  return {
    kind: o.redisUrl ? 'bullmq' : 'croner',
    async start() {
      for (const { profile, schedule } of all()) {
        await missed(profile, schedule).catch((err: unknown) => log.warn({ err: describeError(err), schedule: schedule.name }, 'could not check for missed ticks'));
      }
      if (o.redisUrl) await startBull(o.redisUrl);
      else await startCroner();
      log.info({ schedules: all().length, kind: o.redisUrl ? 'bullmq' : 'croner' }, 'schedules started');
    },
    fire,
    async close() {
      if (closed) return;
      closed = true;
      for (const c of crons) c.stop();
      await Promise.allSettled([worker?.close(), queue?.close()]);
      await Promise.allSettled([...inFlight]);
    },
  };
}
