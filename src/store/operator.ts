/**
 * Read-only queries for operators (the `/v1/` API, the `/ui` dashboard, `/metrics`): lists and
 * counts over events, transcripts' conversations, agents, approvals and the audit trail. Nothing
 * here writes; every list is bounded by a limit the caller gives (capped at MAX_LIMIT).
 *
 * Deliberately left out: message bodies in lists (a conversation summary carries ids, counts and
 * statuses; the transcript itself is TranscriptRepo's), and anything that would need an index the
 * schema does not have beyond what a dashboard's few hundred rows cost.
 */
import { and, count, desc, eq, gt, inArray, isNotNull, like, lt, sql, type SQL } from 'drizzle-orm';
import type { Db } from './index.js';
import type { AuditRow } from './audit.js';
import { agents, approvals, audit, events } from './schema.js';

export const MAX_LIMIT = 500;
const cap = (n: number) => Math.max(1, Math.min(MAX_LIMIT, Math.floor(n) || 1));

export interface ConversationSummary {
  conversation: string;
  profile: string | null;
  platform: string;
  events: number;
  /** Status of the newest event. */
  lastStatus: string;
  lastEventId: string;
  firstAt: Date;
  lastAt: Date;
}

export interface EventSummary {
  id: string;
  conversation: string;
  profile: string | null;
  platform: string;
  status: string;
  attempts: number;
  error: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface AuditFilter {
  profile?: string;
  /** Exact action, e.g. `egress.connect`; or a prefix ending in `.` / `*` (`tool.*`). */
  action?: string;
  decision?: string;
  /** Exact subject (a tool, a target, an event id). */
  subject?: string;
  /** Rows older than this seq (paging backwards). */
  beforeSeq?: number;
  limit: number;
}

export interface OperatorQueries {
  /** Conversations with their newest activity first. */
  conversations(f: { profile?: string; limit: number }): Promise<ConversationSummary[]>;
  /** A conversation's events, oldest first. */
  conversationEvents(conversation: string, limit: number): Promise<EventSummary[]>;
  /** Each profile's newest event (its last turn). */
  lastTurns(): Promise<EventSummary[]>;
  /** Audit rows matching the filter, newest first. */
  audit(f: AuditFilter): Promise<AuditRow[]>;
  /** Tool, permission, approval and file rows of the given turns (by `data.turn` / `data.eventId`), oldest first. */
  turnAudit(eventIds: string[], limit: number): Promise<AuditRow[]>;
  /** Agents by recorded state. */
  sandboxesByState(): Promise<Array<{ state: string; count: number }>>;
  /** Open events (queued, running) per profile. */
  eventsByStatus(): Promise<Array<{ profile: string; status: string; count: number }>>;
  /** Pending, unexpired approval requests. */
  approvalsPending(): Promise<number>;
  /** Events of a profile that are running now. */
  runningTurns(profile: string): Promise<number>;
}

const eventColumns = {
  id: events.id,
  conversation: events.conversation,
  profile: events.profile,
  platform: events.platform,
  status: events.status,
  attempts: events.attempts,
  error: events.error,
  createdAt: events.createdAt,
  updatedAt: events.updatedAt,
};

function auditWhere(f: AuditFilter): SQL | undefined {
  const conds: Array<SQL | undefined> = [];
  if (f.profile) conds.push(eq(audit.profile, f.profile));
  if (f.action) {
    const prefix = f.action.endsWith('*') ? f.action.slice(0, -1) : f.action.endsWith('.') ? f.action : undefined;
    // LIKE metacharacters in an operator's filter are taken literally.
    conds.push(prefix !== undefined ? like(audit.action, `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`) : eq(audit.action, f.action));
  }
  if (f.decision) conds.push(eq(audit.decision, f.decision));
  if (f.subject) conds.push(eq(audit.subject, f.subject));
  if (f.beforeSeq !== undefined) conds.push(lt(audit.seq, f.beforeSeq));
  return conds.length > 0 ? and(...conds) : undefined;
}

export function operatorQueries(db: Db): OperatorQueries {
  return {
    async conversations(f) {
      const rows = await db
        .select({
          conversation: events.conversation,
          profile: sql<string | null>`max(${events.profile})`,
          platform: sql<string>`max(${events.platform})`,
          events: count(),
          lastSeq: sql<number>`max(${events.seq})`,
          firstAt: sql<string>`min(${events.createdAt})`,
          lastAt: sql<string>`max(${events.updatedAt})`,
        })
        .from(events)
        .where(f.profile ? eq(events.profile, f.profile) : undefined)
        .groupBy(events.conversation)
        .orderBy(desc(sql`max(${events.seq})`))
        .limit(cap(f.limit));
      if (rows.length === 0) return [];
      const newest = await db
        .select({ seq: events.seq, id: events.id, status: events.status })
        .from(events)
        .where(inArray(events.seq, rows.map((r) => Number(r.lastSeq))));
      const bySeq = new Map(newest.map((n) => [Number(n.seq), n]));
      return rows.map((r) => ({
        conversation: r.conversation,
        profile: r.profile,
        platform: r.platform,
        events: Number(r.events),
        lastStatus: bySeq.get(Number(r.lastSeq))?.status ?? 'unknown',
        lastEventId: bySeq.get(Number(r.lastSeq))?.id ?? '',
        firstAt: new Date(r.firstAt),
        lastAt: new Date(r.lastAt),
      }));
    },
    conversationEvents(conversation, limit) {
      return db.select(eventColumns).from(events).where(eq(events.conversation, conversation)).orderBy(events.seq).limit(cap(limit));
    },
    lastTurns() {
      return db.selectDistinctOn([events.profile], eventColumns).from(events).where(isNotNull(events.profile)).orderBy(events.profile, desc(events.seq));
    },
    audit(f) {
      return db.select().from(audit).where(auditWhere(f)).orderBy(desc(audit.seq)).limit(cap(f.limit));
    },
    async turnAudit(eventIds, limit) {
      if (eventIds.length === 0) return [];
      const ids = eventIds.slice(0, MAX_LIMIT);
      return db
        .select()
        .from(audit)
        .where(
          and(
            sql`${audit.action} in ('tool.call', 'tool.approval', 'permission', 'file.out', 'turn')`,
            sql`coalesce(${audit.data}->>'turn', ${audit.data}->>'eventId', ${audit.subject}) in (${sql.join(ids.map((i) => sql`${i}`), sql`, `)})`,
          ),
        )
        .orderBy(audit.seq)
        .limit(cap(limit));
    },
    async sandboxesByState() {
      const rows = await db.select({ state: agents.state, count: count() }).from(agents).groupBy(agents.state);
      return rows.map((r) => ({ state: r.state, count: Number(r.count) }));
    },
    async eventsByStatus() {
      const rows = await db
        .select({ profile: events.profile, status: events.status, count: count() })
        .from(events)
        .where(and(isNotNull(events.profile), inArray(events.status, ['queued', 'running'])))
        .groupBy(events.profile, events.status);
      return rows.map((r) => ({ profile: r.profile ?? '', status: r.status, count: Number(r.count) }));
    },
    async approvalsPending() {
      const [r] = await db
        .select({ n: count() })
        .from(approvals)
        .where(and(eq(approvals.status, 'pending'), gt(approvals.expiresAt, sql`now()`)));
      return Number(r?.n ?? 0);
    },
    async runningTurns(profile) {
      const [r] = await db
        .select({ n: count() })
        .from(events)
        .where(and(eq(events.profile, profile), eq(events.status, 'running')));
      return Number(r?.n ?? 0);
    },
  };
}
