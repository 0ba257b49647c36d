/**
 * `agent-vm schedules ls`: every schedule of the served profiles with its next run (from its cron
 * and time zone) and its last run: the tick, what became of it, and for a started run the state of
 * the turn it became (its event), which is the run's result.
 */
import { Cron } from 'croner';
import type { Profile } from '../governance/profile.js';
import { describePost } from '../governance/profile-jobs.js';
import type { EventRepo } from '../store/events.js';
import type { ScheduleRunRepo } from '../store/schedules.js';

export interface ScheduleInfo {
  profile: string;
  name: string;
  cron: string;
  timezone: string;
  post: string;
  overlap: string;
  catchUp: string;
  next: Date | null;
  last: null | {
    tick: Date;
    status: string;
    reason: string | null;
    eventId: string | null;
    conversation: string | null;
    /** The turn's state for a started run: queued, running, replied, delivered, failed, rejected. */
    result: string | null;
  };
}

export async function scheduleListing(profiles: Iterable<Profile>, store: { scheduleRuns: ScheduleRunRepo; events: Pick<EventRepo, 'getEvent'> }, now = new Date()): Promise<ScheduleInfo[]> {
  const out: ScheduleInfo[] = [];
  for (const p of profiles) {
    for (const s of p.schedules) {
      const cron = new Cron(s.cron, { timezone: s.timezone, paused: true });
      const next = cron.nextRun(now);
      cron.stop();
      const run = await store.scheduleRuns.last(p.id, s.name);
      const ev = run?.eventId ? await store.events.getEvent(run.eventId) : undefined;
      out.push({
        profile: p.id, name: s.name, cron: s.cron, timezone: s.timezone, post: describePost(s.post), overlap: s.overlap, catchUp: s.catchUp, next,
        last: run ? { tick: run.tick, status: run.status, reason: run.reason, eventId: run.eventId, conversation: run.conversation, result: ev?.status ?? null } : null,
      });
    }
  }
  return out.sort((a, b) => (a.profile === b.profile ? a.name.localeCompare(b.name) : a.profile.localeCompare(b.profile)));
}
