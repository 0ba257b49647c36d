/**
 * The conversation as it happened: prompts, progress, replies, produced files and notices, in
 * order. Texts are made storable (NUL, lone surrogates) and bounded before they are written.
 */
import { and, asc, eq, gt } from 'drizzle-orm';
import { storable, storableDeep } from '../text.js';
import { MAX_STORED_TEXT, type TranscriptKind } from './events.js';
import type { Db } from './index.js';
import { transcripts } from './schema.js';

export type TranscriptRow = typeof transcripts.$inferSelect;

export interface TranscriptRepo {
  addTranscript(entry: { conversation: string; profile: string; eventId: string; kind: TranscriptKind; text: string; meta?: unknown }): Promise<void>;
  /** A conversation's entries after `afterId`, oldest first. */
  transcript(conversation: string, afterId?: number): Promise<TranscriptRow[]>;
  /** One event's entries after `afterId`, oldest first. */
  eventTranscript(eventId: string, afterId?: number): Promise<TranscriptRow[]>;
}

export function transcriptRepo(db: Db): TranscriptRepo {
  return {
    async addTranscript(entry) {
      await db.insert(transcripts).values({
        ...entry,
        text: storable(entry.text, MAX_STORED_TEXT),
        meta: entry.meta === undefined ? null : storableDeep(entry.meta),
      });
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
  };
}

/** The files a stored reply held back, as recorded in its transcript entry's meta (for display). */
export function heldBackOf(replyEntry: Pick<TranscriptRow, 'meta'> | undefined): Array<{ name: string; reason: string }> {
  return (replyEntry?.meta as { heldBack?: Array<{ name: string; reason: string }> } | null)?.heldBack ?? [];
}
