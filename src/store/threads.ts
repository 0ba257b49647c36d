/**
 * Thread cursors: how far an agent has read a platform thread (the platform's own position of
 * the last message it was given), so the first turn in a thread gets its history and later
 * turns only what is new. The cursor is opaque here: each adapter writes and reads its own.
 */
import { eq, sql } from 'drizzle-orm';
import { storable } from '../text.js';
import type { Db } from './index.js';
import { threadCursors } from './schema.js';

export interface ThreadRepo {
  /** The cursor of a conversation, or undefined before its first turn. */
  getCursor(conversation: string): Promise<string | undefined>;
  putCursor(conversation: string, cursor: string): Promise<void>;
}

export function threadRepo(db: Db): ThreadRepo {
  return {
    async getCursor(conversation) {
      const [row] = await db.select({ cursor: threadCursors.cursor }).from(threadCursors).where(eq(threadCursors.conversation, storable(conversation, 1024)));
      return row?.cursor;
    },
    async putCursor(conversation, cursor) {
      const c = storable(cursor, 256);
      await db
        .insert(threadCursors)
        .values({ conversation: storable(conversation, 1024), cursor: c })
        .onConflictDoUpdate({ target: threadCursors.conversation, set: { cursor: c, updatedAt: sql`now()` } });
    },
  };
}
