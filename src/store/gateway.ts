/**
 * What the gateway keeps: inbound events (the source of truth for turns), transcripts, produced
 * files and ACP session ids. Every write that a crash must not lose happens here before anyone
 * is told it happened.
 */
import { createHash } from 'node:crypto';
import { and, asc, eq, gt, inArray, notInArray, sql } from 'drizzle-orm';
import type { Db } from './index.js';
import { eventStatuses, events, sessions, terminalEventStatuses, transcriptKinds, transcripts, turnFiles, webhooks } from './schema.js';

export type EventRow = typeof events.$inferSelect;
export type EventStatus = (typeof eventStatuses)[number];
export type TranscriptRow = typeof transcripts.$inferSelect;
export type TranscriptKind = (typeof transcriptKinds)[number];
export interface StoredFile {
  name: string;
  size: number;
  sha256: string;
  data: Buffer;
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

export interface GatewayRepo {
  /** Inserts the event unless its id was seen before; returns the stored row and whether it is new. */
  insertEvent(e: NewEvent): Promise<{ row: EventRow; inserted: boolean }>;
  getEvent(id: string): Promise<EventRow | undefined>;
  /** The oldest event of a profile's conversation that has not reached a terminal status. */
  nextOpenEvent(profile: string, conversation: string): Promise<EventRow | undefined>;
  /** Events of a profile that are not finished (for recovery after a restart), oldest first. */
  openEvents(profile: string): Promise<EventRow[]>;
  /** Marks the event running and counts the attempt; returns the updated row. */
  startAttempt(id: string): Promise<EventRow>;
  /**
   * Stores the reply, its files and transcript entries in one transaction and moves the event to
   * `replied`. Returns false if the event had already left `running` (a second worker lost the race).
   */
  storeReply(id: string, reply: { text: string; files: StoredFile[]; transcript: Array<{ kind: TranscriptKind; text: string; meta?: unknown }> }): Promise<boolean>;
  setStatus(id: string, status: EventStatus, error?: string | null): Promise<void>;
  addTranscript(entry: { conversation: string; profile: string; eventId: string; kind: TranscriptKind; text: string; meta?: unknown }): Promise<void>;
  transcript(conversation: string, afterId?: number): Promise<TranscriptRow[]>;
  eventTranscript(eventId: string, afterId?: number): Promise<TranscriptRow[]>;
  files(eventId: string): Promise<StoredFile[]>;
  getSession(profile: string, conversation: string): Promise<string | undefined>;
  putSession(profile: string, conversation: string, sessionId: string): Promise<void>;
  /** The secret of a webhook agent-vm registered on a platform. */
  webhookSecret(platform: string, id: string): Promise<string | undefined>;
  putWebhook(w: { id: string; platform: string; scope: string; endpoint: string; secret: string }): Promise<void>;
}

/** The files a stored reply held back, as recorded in its transcript entry's meta. */
export function heldBackOf(replyEntry: Pick<TranscriptRow, 'meta'> | undefined): Array<{ name: string; reason: string }> {
  return (replyEntry?.meta as { heldBack?: Array<{ name: string; reason: string }> } | null)?.heldBack ?? [];
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function gatewayRepo(db: Db): GatewayRepo {
  return {
    async insertEvent(e) {
      const inserted = await db
        .insert(events)
        .values({
          id: e.id,
          platform: e.platform,
          profile: e.profile,
          conversation: e.conversation,
          status: e.status,
          payload: e.payload,
          error: e.error ?? null,
        })
        .onConflictDoNothing({ target: events.id })
        .returning();
      if (inserted[0]) return { row: inserted[0], inserted: true };
      const [row] = await db.select().from(events).where(eq(events.id, e.id));
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
        .where(and(eq(events.profile, profile), eq(events.conversation, conversation), notInArray(events.status, [...terminalEventStatuses])))
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
        .where(eq(events.id, id))
        .returning();
      if (!row) throw new Error(`event ${id} not found`);
      return row;
    },
    async storeReply(id, reply) {
      return db.transaction(async (tx) => {
        const moved = await tx
          .update(events)
          .set({ status: 'replied', reply: reply.text, updatedAt: sql`now()` })
          .where(and(eq(events.id, id), eq(events.status, 'running')))
          .returning({ conversation: events.conversation, profile: events.profile });
        const ev = moved[0];
        if (!ev) return false;
        for (const f of reply.files) {
          await tx
            .insert(turnFiles)
            .values({ eventId: id, name: f.name, size: f.size, sha256: f.sha256, data: f.data })
            .onConflictDoUpdate({ target: [turnFiles.eventId, turnFiles.name], set: { size: f.size, sha256: f.sha256, data: f.data } });
        }
        if (reply.transcript.length > 0) {
          await tx.insert(transcripts).values(
            reply.transcript.map((t) => ({
              conversation: ev.conversation,
              profile: ev.profile ?? '',
              eventId: id,
              kind: t.kind,
              text: t.text,
              meta: t.meta ?? null,
            })),
          );
        }
        return true;
      });
    },
    async setStatus(id, status, error) {
      await db
        .update(events)
        .set(error === undefined ? { status, updatedAt: sql`now()` } : { status, error, updatedAt: sql`now()` })
        .where(eq(events.id, id));
    },
    async addTranscript(entry) {
      await db.insert(transcripts).values({ ...entry, meta: entry.meta ?? null });
    },
    transcript(conversation, afterId = 0) {
      return db
        .select()
        .from(transcripts)
        .where(and(eq(transcripts.conversation, conversation), gt(transcripts.id, afterId)))
        .orderBy(asc(transcripts.id));
    },
    eventTranscript(eventId, afterId = 0) {
      return db
        .select()
        .from(transcripts)
        .where(and(eq(transcripts.eventId, eventId), gt(transcripts.id, afterId)))
        .orderBy(asc(transcripts.id));
    },
    async files(eventId) {
      const rows = await db.select().from(turnFiles).where(eq(turnFiles.eventId, eventId)).orderBy(asc(turnFiles.name));
      return rows.map((r) => ({ name: r.name, size: r.size, sha256: r.sha256, data: r.data }));
    },
    async getSession(profile, conversation) {
      const [row] = await db
        .select({ sessionId: sessions.sessionId })
        .from(sessions)
        .where(and(eq(sessions.profile, profile), eq(sessions.conversation, conversation)));
      return row?.sessionId;
    },
    async putSession(profile, conversation, sessionId) {
      await db
        .insert(sessions)
        .values({ profile, conversation, sessionId })
        .onConflictDoUpdate({ target: [sessions.profile, sessions.conversation], set: { sessionId, updatedAt: sql`now()` } });
    },
    async webhookSecret(platform, id) {
      const [row] = await db.select({ secret: webhooks.secret }).from(webhooks).where(and(eq(webhooks.platform, platform), eq(webhooks.id, id)));
      return row?.secret;
    },
    async putWebhook(w) {
      await db.insert(webhooks).values(w).onConflictDoUpdate({ target: webhooks.id, set: { secret: w.secret, endpoint: w.endpoint, scope: w.scope } });
    },
  };
}
