/**
 * People's 👍/👎 on answers (Slack's feedback buttons), stored with the turn they rate: one row
 * per person and turn, the last press wins. Operators read them joined with the turn's profile
 * and conversation (`list`), newest first.
 *
 * Deliberately left out: free-text comments (the buttons carry none) and aggregation (a metrics
 * or dashboard concern).
 */
import { and, desc, eq, gte, sql } from 'drizzle-orm';
import { storable } from '../text.js';
import type { Db } from './index.js';
import { events, turnFeedback, type feedbackValues } from './schema.js';

export type FeedbackValue = (typeof feedbackValues)[number];

export interface FeedbackRow {
  eventId: string;
  platform: string;
  userId: string;
  value: FeedbackValue;
  /** The turn's profile and conversation; null when the event is not (or no longer) stored. */
  profile: string | null;
  conversation: string | null;
  at: Date;
}

export interface FeedbackFilter {
  profile?: string;
  conversation?: string;
  since?: Date;
}

export interface FeedbackRepo {
  /** Records a person's rating of a turn (replacing their earlier one). */
  record(f: { eventId: string; platform: string; userId: string; value: FeedbackValue }): Promise<void>;
  /** Ratings, newest first; optionally of one profile or conversation, since a time, at most `limit` (default 100, max 1000). */
  list(o?: FeedbackFilter & { limit?: number }): Promise<FeedbackRow[]>;
  /** How many ratings of each value match (every row, not only a page of them). */
  counts(o?: FeedbackFilter): Promise<Record<FeedbackValue, number>>;
  /** One turn's ratings. */
  forEvent(eventId: string): Promise<FeedbackRow[]>;
}

export function feedbackRepo(db: Db): FeedbackRepo {
  const select = () =>
    db
      .select({
        eventId: turnFeedback.eventId,
        platform: turnFeedback.platform,
        userId: turnFeedback.userId,
        value: turnFeedback.value,
        profile: events.profile,
        conversation: events.conversation,
        at: turnFeedback.updatedAt,
      })
      .from(turnFeedback)
      .leftJoin(events, eq(events.id, turnFeedback.eventId));
  const filter = (o: FeedbackFilter) =>
    and(
      o.profile !== undefined ? eq(events.profile, o.profile) : undefined,
      o.conversation !== undefined ? eq(events.conversation, o.conversation) : undefined,
      o.since ? gte(turnFeedback.updatedAt, o.since) : undefined,
    );
  return {
    async record(f) {
      const row = { eventId: storable(f.eventId, 512), platform: f.platform, userId: storable(f.userId, 256), value: f.value };
      await db
        .insert(turnFeedback)
        .values(row)
        .onConflictDoUpdate({ target: [turnFeedback.eventId, turnFeedback.userId], set: { value: f.value, updatedAt: sql`now()` } });
    },
    async list(o = {}) {
      const rows = await select()
        .where(filter(o))
        .orderBy(desc(turnFeedback.updatedAt), turnFeedback.userId)
        .limit(Math.min(Math.max(o.limit ?? 100, 1), 1000));
      return rows.map((r) => ({ ...r, conversation: r.conversation ?? null, profile: r.profile ?? null }));
    },
    async counts(o = {}) {
      const rows = await db
        .select({ value: turnFeedback.value, n: sql<number>`count(*)::int` })
        .from(turnFeedback)
        .leftJoin(events, eq(events.id, turnFeedback.eventId))
        .where(filter(o))
        .groupBy(turnFeedback.value);
      const out: Record<FeedbackValue, number> = { positive: 0, negative: 0 };
      for (const r of rows) if (r.value === 'positive' || r.value === 'negative') out[r.value] = Number(r.n);
      return out;
    },
    async forEvent(eventId) {
      const rows = await select().where(eq(turnFeedback.eventId, eventId)).orderBy(desc(turnFeedback.updatedAt));
      return rows.map((r) => ({ ...r, conversation: r.conversation ?? null, profile: r.profile ?? null }));
    },
  };
}
