/**
 * Inbound events: the source of truth for turns. Every write a crash must not lose happens here
 * before anyone is told it happened. An event's status moves forward only:
 *
 *   queued ⇄ running → replied → delivered
 *                    ↘ failed / rejected          (terminal: never left)
 *
 * (`running → queued` is a turn interrupted by the gateway itself, left for a retry.) `setStatus`
 * refuses anything else, so a late writer can never reopen a finished event or undo a reply.
 *
 * Everything stored is made storable first (src/text.ts): platform payloads and agent text may
 * hold NUL or lone surrogates, which PostgreSQL refuses.
 */
import { createHash } from 'node:crypto';
import { and, asc, eq, inArray, notInArray, sql } from 'drizzle-orm';
import { storable, storableDeep } from '../text.js';
import type { Db } from './index.js';
import { statement, type RawQuery } from './raw.js';
import { withDeadline } from '../deadline.js';
import { eventStatuses, events, heldBackFiles, terminalEventStatuses, transcriptKinds, transcripts, turnFiles } from './schema.js';

export type EventRow = typeof events.$inferSelect;
export type EventStatus = (typeof eventStatuses)[number];
export type TranscriptKind = (typeof transcriptKinds)[number];

export interface StoredFile {
  name: string;
  size: number;
  sha256: string;
  data: Buffer;
}

export interface HeldBack {
  name: string;
  reason: string;
}

export interface NewEvent {
  id: string;
  platform: string;
  profile: string | null;
  conversation: string;
  status: 'queued' | 'rejected';
  payload: unknown;
  error?: string;
}

/** Longest text stored in one field (a reply is capped before this; see gateway/reply.ts). */
export const MAX_STORED_TEXT = 4 * 1024 * 1024;
/** Longest string kept inside a stored payload. */
const MAX_PAYLOAD_STRING = 1024 * 1024;

export interface EventRepo {
  /** Inserts the event unless its id was seen before; returns the stored row and whether it is new. */
  insertEvent(e: NewEvent): Promise<{ row: EventRow; inserted: boolean }>;
  getEvent(id: string): Promise<EventRow | undefined>;
  /** The oldest event of a profile's conversation that has not reached a terminal status. */
  nextOpenEvent(profile: string, conversation: string): Promise<EventRow | undefined>;
  /**
   * Takes the oldest open event of a conversation for a turn, in one statement: a `queued` or
   * `running` event with fewer than `maxAttempts` attempts is marked running with its attempt
   * counted (`started`), and on its first attempt its prompt goes into the transcript. Any other
   * open event (`replied`, or out of attempts) comes back as it is, not started. undefined when
   * nothing is open. `session`: the conversation's ACP session, as `getSession` reads it.
   * (`nextOpenEvent`, `startAttempt`, `addTranscript` and `getSession` in one round trip.)
   */
  claimNext(profile: string, conversation: string, maxAttempts: number): Promise<{ row: EventRow; started: boolean; session: string | null } | undefined>;
  /** Events of a profile that are not finished (for recovery after a restart), oldest first. */
  openEvents(profile: string): Promise<EventRow[]>;
  /** Marks a queued (or re-run) event running and counts the attempt; undefined if it is finished or replied. */
  startAttempt(id: string): Promise<EventRow | undefined>;
  /**
   * Stores the reply, its files, held-back files and transcript entries in one transaction and
   * moves the event to `replied`. Returns false if the event had already left `running`.
   */
  storeReply(
    id: string,
    reply: { text: string; files: StoredFile[]; heldBack?: HeldBack[]; transcript: Array<{ kind: TranscriptKind; text: string; meta?: unknown }> },
  ): Promise<boolean>;
  /** Moves the event forward (see the diagram above); returns false when that move is not allowed. */
  setStatus(id: string, status: EventStatus, error?: string | null): Promise<boolean>;
  /**
   * The gateway interrupted a running turn itself (stop, restart, lost lease): back to `queued`
   * for a retry, and the attempt does not count against the limit.
   */
  interrupt(id: string, reason: string): Promise<boolean>;
  files(eventId: string): Promise<StoredFile[]>;
  heldBack(eventId: string): Promise<HeldBack[]>;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

const TERMINAL: EventStatus[] = [...terminalEventStatuses];

/** Where a status may be set from. */
const ALLOWED_FROM: Record<EventStatus, EventStatus[]> = {
  queued: ['queued', 'running'],
  running: ['queued', 'running'],
  replied: ['running', 'replied'],
  delivered: ['replied', 'delivered'],
  failed: ['queued', 'running', 'replied', 'failed'],
  rejected: ['queued', 'rejected'],
};

const CLAIM_DEADLINE_MS = 15_000;

/** claimNext's statement; its prompt entry is the one runTurn wrote before (text, user, platform). */
const CLAIM_NEXT = statement([
  `with next as (
     select id from events
      where profile = `, ` and conversation = `, ` and status not in ('delivered', 'failed', 'rejected')
      order by seq limit 1
   ), started as (
     update events e set status = 'running', attempts = e.attempts + 1, updated_at = now()
       from next
      where e.id = next.id and e.status in ('queued', 'running') and e.attempts < `, `
     returning e.*
   ), prompt as (
     insert into transcripts (conversation, profile, event_id, kind, text, meta)
     select s.conversation, s.profile, s.id, 'prompt', coalesce(s.payload->>'text', ''),
            jsonb_build_object('user', s.payload->'user', 'platform', s.payload->'platform')
       from started s
      where s.attempts = 1 and not exists (select 1 from transcripts t where t.event_id = s.id and t.kind = 'prompt')
   )
   select c.*, (select session_id from sessions where profile = `, ` and conversation = `, `) as session_id
     from (select s.*, true as started from started s
           union all
           select e.*, false from events e join next on e.id = next.id where not exists (select 1 from started)) c`,
]);

/** storeReply without files: the move to `replied` and the transcript entries (in order) in one statement. */
const STORE_REPLY = statement([
  `with moved as (
     update events set status = 'replied', reply = `, `, updated_at = now()
      where id = `, ` and status = 'running'
     returning id, conversation, profile
   ), entries as (
     insert into transcripts (conversation, profile, event_id, kind, text, meta)
     select m.conversation, coalesce(m.profile, ''), m.id, x.kind, x.text, x.meta
       from moved m, jsonb_to_recordset(`, `::jsonb) as x(ord int, kind text, text text, meta jsonb)
      order by x.ord
   )
   select count(*)::int as moved from moved`,
]);

interface RawEventRow {
  id: string; seq: string | number | bigint; platform: string; profile: string | null; conversation: string;
  status: EventStatus; payload: unknown; attempts: number; error: string | null; reply: string | null;
  created_at: Date | string; updated_at: Date | string; started: boolean; session_id: string | null;
}

const dateOf = (v: Date | string): Date => (v instanceof Date ? v : new Date(v));

function eventRowOf(r: RawEventRow): EventRow {
  return {
    id: r.id, seq: Number(r.seq), platform: r.platform, profile: r.profile, conversation: r.conversation, status: r.status,
    payload: typeof r.payload === 'string' ? (JSON.parse(r.payload) as unknown) : r.payload,
    attempts: Number(r.attempts), error: r.error, reply: r.reply, createdAt: dateOf(r.created_at), updatedAt: dateOf(r.updated_at),
  };
}

/** `raw`: the hot-path client (raw.ts), for claimNext and storeReply. */
export function eventRepo(db: Db, raw?: RawQuery): EventRepo {
  return {
    async claimNext(profile, conversation, maxAttempts) {
      const run = CLAIM_NEXT.run<RawEventRow>(db, raw, [profile, conversation, maxAttempts, profile, conversation]);
      // On PostgreSQL a statement that never answers (porsager/postgres#1186) must not hold the
      // conversation: it fails as "database unavailable" and the unit looks again. Should it still
      // land later, the event is running with an attempt counted, and the next look starts it again.
      const [r] = raw?.embedded ? await run : await withDeadline(run, CLAIM_DEADLINE_MS, () => Object.assign(new Error(`taking the next turn got no answer from the database within ${CLAIM_DEADLINE_MS / 1000} s`), { code: 'ETIMEDOUT' }));
      return r ? { row: eventRowOf(r), started: r.started === true, session: r.session_id ?? null } : undefined;
    },
    async insertEvent(e) {
      const inserted = await db
        .insert(events)
        .values({
          id: storable(e.id, 512),
          platform: e.platform,
          profile: e.profile,
          conversation: storable(e.conversation, 1024),
          status: e.status,
          payload: storableDeep(e.payload, { maxString: MAX_PAYLOAD_STRING, maxDepth: 32, maxEntries: 1000 }),
          error: e.error === undefined ? null : storable(e.error, 4096),
        })
        .onConflictDoNothing({ target: events.id })
        .returning();
      if (inserted[0]) return { row: inserted[0], inserted: true };
      const [row] = await db.select().from(events).where(eq(events.id, storable(e.id, 512)));
      if (!row) throw new Error(`event ${e.id} vanished after a conflicting insert`);
      return { row, inserted: false };
    },
    async getEvent(id) {
      const [row] = await db.select().from(events).where(eq(events.id, id));
      return row;
    },
    async nextOpenEvent(profile, conversation) {
      const [row] = await db
        .select()
        .from(events)
        .where(and(eq(events.profile, profile), eq(events.conversation, conversation), notInArray(events.status, TERMINAL)))
        .orderBy(asc(events.seq))
        .limit(1);
      return row;
    },
    openEvents(profile) {
      return db
        .select()
        .from(events)
        .where(and(eq(events.profile, profile), inArray(events.status, ['queued', 'running', 'replied'])))
        .orderBy(asc(events.seq));
    },
    async startAttempt(id) {
      const [row] = await db
        .update(events)
        .set({ status: 'running', attempts: sql`${events.attempts} + 1`, updatedAt: sql`now()` })
        .where(and(eq(events.id, id), inArray(events.status, ['queued', 'running'])))
        .returning();
      return row;
    },
    async storeReply(id, reply) {
      const transcript = reply.transcript.map((t, ord) => ({ ord, kind: t.kind, text: storable(t.text, MAX_STORED_TEXT), meta: t.meta === undefined ? null : storableDeep(t.meta) }));
      if (reply.files.length === 0 && (reply.heldBack ?? []).length === 0) {
        // The common case, a reply with no file: one statement.
        const [r] = await STORE_REPLY.run<{ moved: number }>(db, raw, [storable(reply.text, MAX_STORED_TEXT), id, JSON.stringify(transcript)]);
        return Number(r?.moved ?? 0) > 0;
      }
      return db.transaction(async (tx) => {
        const moved = await tx
          .update(events)
          .set({ status: 'replied', reply: storable(reply.text, MAX_STORED_TEXT), updatedAt: sql`now()` })
          .where(and(eq(events.id, id), eq(events.status, 'running')))
          .returning({ conversation: events.conversation, profile: events.profile });
        const ev = moved[0];
        if (!ev) return false;
        for (const f of reply.files) {
          const name = storable(f.name, 1024);
          await tx
            .insert(turnFiles)
            .values({ eventId: id, name, size: f.size, sha256: f.sha256, data: f.data })
            .onConflictDoUpdate({ target: [turnFiles.eventId, turnFiles.name], set: { size: f.size, sha256: f.sha256, data: f.data } });
        }
        const held = new Map<string, string>();
        for (const h of reply.heldBack ?? []) held.set(storable(h.name, 1024), storable(h.reason, 1024));
        if (held.size > 0) {
          await tx
            .insert(heldBackFiles)
            .values([...held].map(([name, reason]) => ({ eventId: id, name, reason })))
            .onConflictDoNothing();
        }
        if (transcript.length > 0) {
          await tx.insert(transcripts).values(transcript.map((t) => ({ conversation: ev.conversation, profile: ev.profile ?? '', eventId: id, kind: t.kind, text: t.text, meta: t.meta })));
        }
        return true;
      });
    },
    async setStatus(id, status, error) {
      const rows = await db
        .update(events)
        .set(error === undefined ? { status, updatedAt: sql`now()` } : { status, error: error === null ? null : storable(error, 4096), updatedAt: sql`now()` })
        .where(and(eq(events.id, id), inArray(events.status, ALLOWED_FROM[status])))
        .returning({ id: events.id });
      return rows.length > 0;
    },
    async interrupt(id, reason) {
      const rows = await db
        .update(events)
        .set({ status: 'queued', attempts: sql`greatest(${events.attempts} - 1, 0)`, error: storable(reason, 4096), updatedAt: sql`now()` })
        .where(and(eq(events.id, id), eq(events.status, 'running')))
        .returning({ id: events.id });
      return rows.length > 0;
    },
    async files(eventId) {
      const rows = await db.select().from(turnFiles).where(eq(turnFiles.eventId, eventId)).orderBy(asc(turnFiles.name));
      return rows.map((r) => ({ name: r.name, size: r.size, sha256: r.sha256, data: r.data }));
    },
    async heldBack(eventId) {
      const rows = await db.select().from(heldBackFiles).where(eq(heldBackFiles.eventId, eventId)).orderBy(asc(heldBackFiles.name));
      if (rows.length > 0) return rows.map((r) => ({ name: r.name, reason: r.reason }));
      // Replies stored before held-back files had rows kept them in the reply's transcript meta.
      const [reply] = await db
        .select({ meta: transcripts.meta })
        .from(transcripts)
        .where(and(eq(transcripts.eventId, eventId), eq(transcripts.kind, 'reply')))
        .limit(1);
      return (reply?.meta as { heldBack?: HeldBack[] } | null)?.heldBack ?? [];
    },
  };
}
