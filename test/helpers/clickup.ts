/**
 * ClickUp webhook deliveries as ClickUp sends them: `taskCommentPosted` bodies in the documented
 * shape, HMAC-signed in `X-Signature`, posted to `/clickup/webhook`.
 */
import type { Hono } from 'hono';
import { signClickUpBody } from '../../src/adapters/clickup/index.js';

export interface PostedComment {
  historyId: string;
  taskId: string;
  /** The history item's `parent_id`. */
  parentId: string;
  user: { id: number; username: string; email: string };
  /** The comment as plain text (`text_content`). */
  text: string;
  /** The rich-text blocks; by default the text without its final newline, then a block break. */
  blocks?: unknown[];
  /** Epoch milliseconds, as a string. */
  date: string;
  webhookId?: string;
}

/** The body of a `taskCommentPosted` delivery carrying one comment. */
export function commentPostedBody(c: PostedComment): string {
  const user = { ...c.user, color: '#7b68ee', initials: 'J', profilePicture: null };
  return JSON.stringify({
    event: 'taskCommentPosted',
    history_items: [
      {
        id: c.historyId,
        type: 1,
        date: c.date,
        field: 'comment',
        parent_id: c.parentId,
        data: {},
        source: null,
        user,
        before: null,
        after: '648893191',
        comment: {
          id: '648893191',
          date: c.date,
          parent: c.taskId,
          type: 1,
          comment: c.blocks ?? [{ text: c.text.trimEnd(), attributes: {} }, { text: '\n', attributes: { 'block-id': 'block-1' } }],
          text_content: c.text,
          user,
          reactions: [],
        },
      },
    ],
    task_id: c.taskId,
    webhook_id: c.webhookId ?? '7fa3ec74-69a8-4530-a251-8a13730bd204',
  });
}

/** POSTs a delivery, signed with `secret` unless a `signature` is given (null: no signature header). */
export function deliverWebhook(app: Hono, body: string, secret: string, signature: string | null = signClickUpBody(body, secret)): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (signature !== null) headers['x-signature'] = signature;
  return Promise.resolve(app.request('/clickup/webhook', { method: 'POST', headers, body }));
}
