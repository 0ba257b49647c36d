/**
 * Thread context for a ClickUp turn: the task's earlier comments (`GET /task/{id}/comment`,
 * newest first, 25 a page), bounded by `ThreadContextLimits`, for the first turn on a task; only
 * the comments since the agent's last turn afterwards (the conversation's cursor is the date of
 * the last comment it was given). Agent-vm's own comments are left out of later turns (the agent
 * wrote them).
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { renderThread, type ThreadMessage } from '../thread.js';
import type { InboundEvent, ThreadContextLimits, ThreadCursors } from '../types.js';
import type { ClickUpClient, ClickUpComment } from './client.js';
import { decodeConversation, decodeReplyTo } from './parse.js';

/** Pages read for one turn at most (25 comments each). */
const MAX_PAGES = 8;
const PAGE = 25;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : undefined);

function files(c: ClickUpComment): string[] {
  const blocks = Array.isArray(c.comment) ? (c.comment as Array<{ type?: unknown; text?: unknown; attachment?: { title?: unknown } }>) : [];
  return blocks.filter((b) => b?.type === 'attachment' || b?.type === 'image').map((b) => str(b.attachment?.title) ?? str(b.text) ?? 'file');
}

export function createTaskThread(deps: { client: ClickUpClient; logger: Logger; cursors?: ThreadCursors; limits: ThreadContextLimits; ownUserId: () => Promise<string | undefined> }) {
  return async function taskThread(event: InboundEvent): Promise<string | undefined> {
    const taskId = decodeConversation(event.conversation);
    const own = decodeReplyTo(event.replyTo);
    if (!deps.cursors || deps.limits.maxMessages <= 0 || !taskId || !own?.date) return undefined;
    const cursor = await deps.cursors.getCursor(event.conversation);
    const mine = Number(own.date);
    if (cursor !== undefined && Number(cursor) >= mine) return undefined; // a retried turn: given already
    const found: ClickUpComment[] = [];
    try {
      let before: { id: string; date: string } | undefined;
      pages: for (let page = 0; page < MAX_PAGES; page++) {
        const list = await deps.client.taskComments(taskId, before);
        for (const c of list) {
          const date = Number(str(c.date));
          if (!Number.isFinite(date) || str(c.id) === own.commentId || date > mine) continue;
          if (cursor !== undefined && date <= Number(cursor)) break pages;
          found.push(c);
          if (found.length > deps.limits.maxMessages) break pages;
        }
        const oldest = list.at(-1);
        if (list.length < PAGE || !oldest || !str(oldest.id) || !str(oldest.date)) break;
        before = { id: str(oldest.id)!, date: str(oldest.date)! };
      }
    } catch (err) {
      deps.logger.warn({ taskId, err: describeError(err) }, 'clickup: reading the task comments failed; no thread context this turn');
      return undefined;
    }
    const self = await deps.ownUserId().catch(() => undefined);
    const messages: ThreadMessage[] = found
      .filter((c) => cursor === undefined || !self || str(c.user?.id) !== self)
      .sort((a, b) => Number(str(a.date)) - Number(str(b.date)))
      .map((c) => {
        const who = str(c.user?.id) === self && self ? 'agent-vm (an agent)' : (str(c.user?.username) ?? str(c.user?.email) ?? `user ${str(c.user?.id) ?? '?'}`);
        return { author: who, text: str(c.comment_text) ?? '', files: files(c), at: new Date(Number(str(c.date))) };
      });
    await deps.cursors.putCursor(event.conversation, own.date);
    return renderThread(messages, deps.limits, { first: cursor === undefined });
  };
}
