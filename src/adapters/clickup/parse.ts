/**
 * ClickUp webhook payloads → the pieces of an `InboundEvent`, and the few texts the adapter
 * writes back. Pure functions: no I/O, no clock.
 *
 * Payloads are untrusted input (even signed ones: the signature says who sent them, not that
 * every field is well formed), so the envelope is validated with zod and the rest is read
 * defensively: a field of an unexpected shape is treated as absent, never trusted.
 *
 * Deliberately left out: every event but `taskCommentPosted`, and rich-text rendering (replies
 * are plain `comment_text`).
 */
import { z } from 'zod';
import { printable } from '../../text.js';
import type { Address, HeldBackFile, InboundAttachment } from '../types.js';
import type { ClickUpTask } from './client.js';

export const COMMENT_EVENT = 'taskCommentPosted';

const idLike = z.union([z.string().min(1).max(128), z.number().int()]).transform(String);

const envelopeSchema = z.looseObject({
  event: z.string().max(100),
  webhook_id: z.string().max(200).optional(),
  task_id: idLike.optional(),
  history_items: z.array(z.unknown()).max(100).optional(),
});

export interface WebhookEnvelope {
  event: string;
  webhookId?: string;
  taskId?: string;
  historyItems: unknown[];
}

/** A posted comment, as read from one history item of a `taskCommentPosted` delivery. */
export interface PostedComment {
  historyId: string;
  taskId: string;
  commentId?: string;
  /** When it was posted, epoch milliseconds as ClickUp writes them. */
  date?: string;
  user: { id: string; name?: string };
  text: string;
  attachments: InboundAttachment[];
}

/** The envelope of any delivery, or undefined when the body is not a ClickUp webhook payload. */
export function parseEnvelope(json: unknown): WebhookEnvelope | undefined {
  const r = envelopeSchema.safeParse(json);
  if (!r.success) return undefined;
  return {
    event: r.data.event,
    ...(r.data.webhook_id !== undefined ? { webhookId: r.data.webhook_id } : {}),
    ...(r.data.task_id !== undefined ? { taskId: r.data.task_id } : {}),
    historyItems: r.data.history_items ?? [],
  };
}

/** The comments a `taskCommentPosted` delivery carries (ClickUp sends one history item per comment). */
export function postedComments(env: WebhookEnvelope): PostedComment[] {
  const out: PostedComment[] = [];
  for (const raw of env.historyItems) {
    const item = obj(raw);
    const comment = obj(item?.comment);
    const historyId = id(item?.id);
    if (!item || !comment || historyId === undefined) continue;
    const taskId = env.taskId ?? id(comment.parent);
    const author = obj(item.user) ?? obj(comment.user);
    const userId = id(author?.id);
    if (taskId === undefined || userId === undefined) continue;
    const name = str(author?.username) ?? str(author?.email);
    const commentId = id(comment.id);
    const date = id(comment.date) ?? id(item.date);
    out.push({
      historyId,
      taskId,
      ...(commentId !== undefined ? { commentId } : {}),
      ...(date !== undefined && /^\d{1,15}$/.test(date) ? { date } : {}),
      user: { id: userId, ...(name !== undefined ? { name } : {}) },
      text: commentText(comment),
      attachments: commentAttachments(comment),
    });
  }
  return out;
}

/** The comment's plain text, as ClickUp renders it; the trigger mention stays in (the router matches it). */
function commentText(comment: Record<string, unknown>): string {
  const plain = str(comment.text_content) ?? str(comment.comment_text);
  if (plain !== undefined) return plain;
  const blocks = Array.isArray(comment.comment) ? comment.comment : [];
  return blocks.map((b) => str(obj(b)?.text) ?? '').join('');
}

/**
 * Files in a comment: rich-text blocks of type `attachment` or `image` (each with an object that
 * has a `url`), plus a top-level `attachments` array when a payload carries one.
 */
export function commentAttachments(comment: Record<string, unknown>): InboundAttachment[] {
  const found: Array<Record<string, unknown>> = [];
  for (const b of Array.isArray(comment.comment) ? comment.comment : []) {
    const block = obj(b);
    const file = obj(block?.attachment) ?? obj(block?.image);
    if (file) found.push({ ...file, title: file.title ?? file.name ?? block?.text });
  }
  for (const a of Array.isArray(comment.attachments) ? comment.attachments : []) {
    const file = obj(a);
    if (file) found.push(file);
  }
  const seen = new Set<string>();
  const out: InboundAttachment[] = [];
  for (const f of found) {
    const url = str(f.url);
    if (url === undefined || seen.has(url)) continue;
    seen.add(url);
    const size = typeof f.size === 'number' ? f.size : typeof f.size === 'string' && /^\d+$/.test(f.size) ? Number(f.size) : NaN;
    const mimeType = str(f.mimetype) ?? str(f.mime_type);
    out.push({
      ref: url,
      name: str(f.title) ?? str(f.name) ?? nameFromUrl(url),
      ...(Number.isFinite(size) && size >= 0 ? { size } : {}),
      ...(mimeType !== undefined ? { mimeType } : {}),
    });
  }
  return out;
}

/** The conversation of a task. Opaque outside this adapter. */
export function encodeConversation(taskId: string): string {
  return `clickup:${taskId}`;
}

/**
 * The person's comment, as `replyTo`: its id and date (thread context ends before it). Replies
 * still go to the task; only this adapter reads it.
 */
export function encodeReplyTo(commentId: string, date: string | undefined): string {
  return `clickup-comment:${commentId}:${date ?? ''}`;
}

export function decodeReplyTo(replyTo: string | undefined): { commentId: string; date?: string } | undefined {
  const m = replyTo === undefined ? null : /^clickup-comment:([A-Za-z0-9_-]{1,64}):(\d{0,15})$/.exec(replyTo);
  if (!m) return undefined;
  return { commentId: m[1]!, ...(m[2] ? { date: m[2] } : {}) };
}

export function isOwnReplyTo(replyTo: string): boolean {
  return replyTo.startsWith('clickup-comment:');
}

export function decodeConversation(conversation: string): string | undefined {
  return /^clickup:([A-Za-z0-9_-]{1,64})$/.exec(conversation)?.[1];
}

/**
 * Where a task lives, in the terms of profile bindings. A folderless list sits in a hidden
 * folder ClickUp invents; its id means nothing to a person writing a binding, so it is left out.
 */
export function taskAddress(task: ClickUpTask): Address | undefined {
  const team = id(task.team_id);
  if (team === undefined) return undefined;
  const space = id(task.space?.id);
  const folder = task.folder?.hidden === true ? undefined : id(task.folder?.id);
  const list = id(task.list?.id);
  return {
    platform: 'clickup',
    team,
    ...(space !== undefined ? { space } : {}),
    ...(folder !== undefined ? { folder } : {}),
    ...(list !== undefined ? { list } : {}),
  };
}

const MAX_DESCRIPTION_CHARS = 20_000;

/** What the agent reads before the comment: the task it is working on. */
export function taskPreamble(task: ClickUpTask): string {
  const name = task.name?.trim() || '(untitled task)';
  let description = (task.text_content ?? task.description ?? '').trim();
  if (description.length > MAX_DESCRIPTION_CHARS) {
    description = `${description.slice(0, MAX_DESCRIPTION_CHARS)}\n[description truncated]`;
  }
  const lines = [`ClickUp task: ${name}`];
  if (task.url) lines.push(`URL: ${task.url}`);
  lines.push('Description:', description === '' ? '(none)' : description);
  return lines.join('\n');
}

/**
 * The reply comment: the answer, then every file attached to the task and every file held back.
 * File names and reasons come from the agent's outbox: one escaped line each, never a forged one.
 */
export function renderReply(text: string, attached: string[], heldBack: HeldBackFile[]): string {
  const parts = [text.trimEnd()];
  if (attached.length > 0) parts.push(['Attached to this task:', ...attached.map((n) => `- ${printable(n)}`)].join('\n'));
  if (heldBack.length > 0) parts.push(['Not attached:', ...heldBack.map((h) => `- ${printable(h.name)}: ${printable(h.reason, 300)}`)].join('\n'));
  return parts.filter((p) => p !== '').join('\n\n') || '(no answer)';
}

function nameFromUrl(url: string): string {
  try {
    const last = new URL(url).pathname.split('/').filter(Boolean).pop();
    return last ? decodeURIComponent(last) : 'attachment';
  } catch {
    return 'attachment';
  }
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function id(v: unknown): string | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'string' && v !== '' && v.length <= 128) return v;
  return undefined;
}
