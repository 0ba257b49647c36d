/** The agent's ACP session for a conversation, so later turns continue it (session/load). */
import { and, eq, sql } from 'drizzle-orm';
import { storable } from '../text.js';
import type { Db } from './index.js';
import { sessions } from './schema.js';

export interface SessionRepo {
  getSession(profile: string, conversation: string): Promise<string | undefined>;
  putSession(profile: string, conversation: string, sessionId: string): Promise<void>;
  /** Forgets the session (it cannot be loaded any more); the next turn starts a new one. */
  dropSession(profile: string, conversation: string): Promise<void>;
}

export function sessionRepo(db: Db): SessionRepo {
  return {
    async getSession(profile, conversation) {
      const [row] = await db
        .select({ sessionId: sessions.sessionId })
        .from(sessions)
        .where(and(eq(sessions.profile, profile), eq(sessions.conversation, conversation)));
      return row?.sessionId;
    },
    async putSession(profile, conversation, sessionId) {
      // The id comes from the agent: storable, and bounded.
      const id = storable(sessionId, 512);
      await db
        .insert(sessions)
        .values({ profile, conversation, sessionId: id })
        .onConflictDoUpdate({ target: [sessions.profile, sessions.conversation], set: { sessionId: id, updatedAt: sql`now()` } });
    },
    async dropSession(profile, conversation) {
      await db.delete(sessions).where(and(eq(sessions.profile, profile), eq(sessions.conversation, conversation)));
    },
  };
}
