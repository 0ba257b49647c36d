/**
 * Jobs and schedules in a gateway process (app.ts): the job runner exists before the gateway (its
 * units hand it to the MCP proxy as the `agentvm` tool server), the scheduler after (it posts
 * through the gateway's intake and adapters). `start` runs after the gateway started; `stop`
 * before it stops: no new ticks, running jobs cancelled and torn down, so turns waiting on them end.
 */
import type { Context } from '../context.js';
import { describeError } from '../errors.js';
import type { Gateway } from '../gateway/index.js';
import { createAuditLog } from '../governance/audit.js';
import { createScheduler, type Scheduler } from '../schedules/index.js';
import { createJobRunner } from './runner.js';
import type { JobRunner } from './types.js';

export interface BackgroundWork {
  readonly jobs: JobRunner;
  /** Starts job workers and the teardown sweeper; with `schedules`, the scheduler too. */
  start(o?: { schedules?: boolean }): Promise<void>;
  /** Idempotent; every step runs even if one fails. */
  stop(): Promise<void>;
}

export function createBackgroundWork(ctx: Pick<Context, 'config' | 'store' | 'driver' | 'logger'>, gateway: () => Gateway): BackgroundWork {
  const { config, store, driver, logger } = ctx;
  const jobs = createJobRunner({
    jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger,
    config: { image: config.image, runtime: config.runtime, outbox: config.outbox, redisUrl: config.redisUrl },
    profiles: () => gateway().router.profiles,
  });
  let scheduler: Scheduler | undefined;
  let stopping: Promise<void> | undefined;
  return {
    jobs,
    async start(o = {}) {
      await jobs.start();
      if (o.schedules === false) return;
      const g = gateway();
      scheduler = createScheduler({
        profiles: () => g.router.profiles,
        intake: g.intake,
        route: (e) => g.router.route(e),
        adapters: g.adapters,
        store: { scheduleRuns: store.scheduleRuns, events: store.gateway },
        audit: g.audit,
        logger,
        redisUrl: config.redisUrl,
      });
      await scheduler.start();
    },
    stop() {
      stopping ??= Promise.allSettled([scheduler?.close(), jobs.close()]).then((rs) => {
        for (const r of rs) if (r.status === 'rejected') logger.warn({ err: describeError(r.reason) }, 'stopping jobs or schedules failed');
      });
      return stopping;
    },
  };
}
