/**
 * Schedule runs: one row per tick that fired, keyed by (profile, schedule, tick). Claiming the row
 * is what makes a tick run once, whichever gateway (or scheduler) saw it; the row then says what
 * became of it (the event it started, or why it was skipped or refused).
 */
import { and, desc, eq, sql } from 'drizzle-orm';
import { storable } from '../text.js';
import type { Db } from './index.js';
import { scheduleRunStatuses, scheduleRuns } from './schema.js';

export type ScheduleRunRow = typeof scheduleRuns.$inferSelect;
export type ScheduleRunStatus = (typeof scheduleRunStatuses)[number];

export interface ScheduleRunRepo {
  /** Inserts the run unless this tick was claimed before; true when this call claimed it. */
  claim(r: { profile: string; schedule: string; tick: Date; status: ScheduleRunStatus; catchUp?: boolean; reason?: string }): Promise<boolean>;
  update(profile: string, schedule: string, tick: Date, fields: { status: ScheduleRunStatus; eventId?: string | null; conversation?: string | null; reason?: string | null }): Promise<void>;
  /** The newest run of a schedule, optionally only those before `before`. */
  last(profile: string, schedule: string, before?: Date): Promise<ScheduleRunRow | undefined>;
  /** Runs of a schedule before `tick` that started an event, newest first (for overlap checks). */
  startedBefore(profile: string, schedule: string, tick: Date, limit?: number): Promise<ScheduleRunRow[]>;
}

export function scheduleRunRepo(db: Db): ScheduleRunRepo {
  return {
    async claim(r) {
      const rows = await db
        .insert(scheduleRuns)
        .values({ profile: r.profile, schedule: r.schedule, tick: r.tick, status: r.status, catchUp: r.catchUp ? 1 : 0, reason: r.reason === undefined ? null : storable(r.reason, 2048) })
        .onConflictDoNothing()
        .returning({ profile: scheduleRuns.profile });
      return rows.length > 0;
    },
    async update(profile, schedule, tick, f) {
      await db
        .update(scheduleRuns)
        .set({
          status: f.status,
          ...(f.eventId !== undefined ? { eventId: f.eventId } : {}),
          ...(f.conversation !== undefined ? { conversation: f.conversation === null ? null : storable(f.conversation, 1024) } : {}),
          ...(f.reason !== undefined ? { reason: f.reason === null ? null : storable(f.reason, 2048) } : {}),
          updatedAt: sql`now()`,
        })
        .where(and(eq(scheduleRuns.profile, profile), eq(scheduleRuns.schedule, schedule), eq(scheduleRuns.tick, tick)));
    },
    async last(profile, schedule, before) {
      const where = and(eq(scheduleRuns.profile, profile), eq(scheduleRuns.schedule, schedule), before ? sql`${scheduleRuns.tick} < ${before.toISOString()}` : undefined);
      const [row] = await db.select().from(scheduleRuns).where(where).orderBy(desc(scheduleRuns.tick)).limit(1);
      return row;
    },
    startedBefore(profile, schedule, tick, limit = 20) {
      return db
        .select()
        .from(scheduleRuns)
        .where(and(eq(scheduleRuns.profile, profile), eq(scheduleRuns.schedule, schedule), eq(scheduleRuns.status, 'started'), sql`${scheduleRuns.tick} < ${tick.toISOString()}`))
        .orderBy(desc(scheduleRuns.tick))
        .limit(limit);
    },
  };
}
