/**
 * `send()` for ClickUp: one comment per answer, at the end (comments are not streamed, so
 * partial answers are ignored), the agent's files attached to the task first and named in it,
 * and a progress comment only for a turn still running `progressAfterMs` after it was taken in
 * (at most one per turn; a short turn leaves no trace of its progress on the task).
 *
 * Nothing is dropped silently: a file over the size limit or refused by ClickUp is named in the
 * reply under "Not attached" with the reason; a reply ClickUp refuses for good is replaced by a
 * short comment saying so when ClickUp takes that, and reported (error log) otherwise. Replies are
 * idempotent per turn within the process: a retried `send` skips files already attached and never
 * posts the comment twice.
 */
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { printable } from '../../text.js';
import { tooLargeReason, type ReportFailure } from '../delivery.js';
import type { HeldBackFile, OutboundMessage } from '../types.js';
import type { ClickUpClient } from './client.js';
import { decodeConversation, isOwnReplyTo, renderReply } from './parse.js';

const MAX_REMEMBERED = 1_000;
const PROGRESS_MAX_CHARS = 300;

interface ReplyProgress {
  /** Indexes of `files` already attached to the task. */
  attached: Set<number>;
  /** Files not attached for good, by index. */
  refused: Map<number, HeldBackFile>;
  commented: boolean;
}

interface Running {
  taskId: string;
  timer?: NodeJS.Timeout;
  /** The newest progress line, for the progress comment. */
  last?: string;
  posted: boolean;
}

export function createReplier(deps: { client: ClickUpClient; logger: Logger; report: ReportFailure; maxUploadBytes: number; progressAfterMs: number; now: () => number }) {
  const { client, logger: log } = deps;
  const replies = new Map<string, ReplyProgress>();
  const running = new Map<string, Running>();
  const background = new Set<Promise<void>>();
  let closed = false;

  function taskOf(msg: { conversation: string; replyTo?: string }): string {
    const taskId = decodeConversation(msg.conversation);
    if (taskId === undefined) throw new AgentVmError('clickup_bad_conversation', 'not a ClickUp conversation', { status: 400 });
    // ClickUp events carry only our own replyTo (the person's comment): another one was made by another adapter.
    if (msg.replyTo !== undefined && !isOwnReplyTo(msg.replyTo)) {
      throw new AgentVmError('clickup_bad_conversation', 'this replyTo was not made by the ClickUp adapter', { status: 400 });
    }
    return taskId;
  }

  function remember<T>(map: Map<string, T>, key: string, value: T): T {
    map.set(key, value);
    if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value as string);
    return value;
  }

  async function postProgress(eventId: string): Promise<void> {
    const r = running.get(eventId);
    if (!r || r.posted || closed) return;
    r.posted = true;
    const seconds = Math.round(deps.progressAfterMs / 1000);
    const text = `Still working on this (over ${seconds} s so far)…${r.last ? ` ${printable(r.last, PROGRESS_MAX_CHARS)}` : ''}`;
    try {
      await client.postComment(r.taskId, text);
    } catch (err) {
      deps.report({ kind: 'progress', step: 'comment', code: codeOf(err), retryable: true, shown: false }, { eventId, err });
    }
  }

  /** A turn was taken in: its progress comment is due if it is still running after the setting. */
  function started(eventId: string, conversation: string): void {
    const taskId = decodeConversation(conversation);
    if (!taskId || deps.progressAfterMs <= 0 || running.has(eventId)) return;
    const r = remember(running, eventId, { taskId, posted: false });
    r.timer = setTimeout(() => {
      const p = postProgress(eventId).finally(() => background.delete(p));
      background.add(p);
    }, deps.progressAfterMs);
    r.timer.unref();
  }

  function ended(eventId: string): void {
    const r = running.get(eventId);
    if (r?.timer) clearTimeout(r.timer);
    running.delete(eventId);
  }

  async function sendReply(taskId: string, msg: Extract<OutboundMessage, { kind: 'reply' }>): Promise<void> {
    const progress = replies.get(msg.eventId) ?? remember(replies, msg.eventId, { attached: new Set(), refused: new Map(), commented: false });
    if (progress.commented) return;
    for (const [i, file] of msg.files.entries()) {
      if (progress.attached.has(i) || progress.refused.has(i)) continue;
      if (file.data.length > deps.maxUploadBytes) {
        progress.refused.set(i, { name: file.name, reason: tooLargeReason(file.data.length, deps.maxUploadBytes, 'ClickUp') });
        continue;
      }
      try {
        // Agent-chosen: shown as the attachment's name, so no invisible or reordering characters.
        await client.uploadAttachment(taskId, { name: printable(file.name, 255), data: file.data });
        progress.attached.add(i);
      } catch (err) {
        // Transient: the caller retries the send, and files already attached are skipped then.
        if (isAgentVmError(err) && err.retryable) {
          deps.report({ kind: 'reply', step: 'file', code: codeOf(err), retryable: true, shown: false }, { eventId: msg.eventId, err });
          throw err;
        }
        progress.refused.set(i, { name: file.name, reason: `ClickUp refused the upload (${printable(describeError(err), 200)})` });
      }
    }
    const attached = msg.files.filter((_, i) => progress.attached.has(i)).map((f) => f.name);
    const heldBack = [...msg.heldBack, ...progress.refused.values()];
    try {
      await client.postComment(taskId, renderReply(msg.text, attached, heldBack));
    } catch (err) {
      const transient = isAgentVmError(err) && err.retryable;
      let shown = false;
      if (!transient) {
        // Refused for good (too long, not allowed): say so in a comment ClickUp will take.
        shown = await client
          .postComment(taskId, `The answer could not be posted here: ClickUp refused it (${printable(describeError(err), 200)}).`)
          .then(() => true, () => false);
      }
      deps.report({ kind: 'reply', step: 'comment', code: codeOf(err), retryable: transient, shown }, { eventId: msg.eventId, err });
      throw err;
    }
    progress.commented = true;
    for (const _ of progress.refused) deps.report({ kind: 'reply', step: 'file', code: 'refused', retryable: false, shown: true }, { eventId: msg.eventId });
    log.info({ eventId: msg.eventId, taskId, files: attached.length, heldBack: heldBack.length }, 'clickup reply posted');
  }

  return {
    started,
    async send(msg: OutboundMessage): Promise<void> {
      if (closed) throw new AgentVmError('adapter_closed', 'the ClickUp adapter is closed', { status: 503, retryable: true });
      const taskId = taskOf(msg);
      switch (msg.kind) {
        case 'partial':
          return;
        case 'progress': {
          const r = running.get(msg.eventId);
          if (r) r.last = msg.text;
          else started(msg.eventId, msg.conversation); // a turn this process did not take in (a restart)
          return;
        }
        case 'notice':
          ended(msg.eventId);
          try {
            await client.postComment(taskId, msg.text);
          } catch (err) {
            deps.report({ kind: 'notice', step: 'comment', code: codeOf(err), retryable: isAgentVmError(err) && err.retryable, shown: false }, { eventId: msg.eventId, err });
            throw err;
          }
          log.info({ eventId: msg.eventId, taskId }, 'clickup notice posted');
          return;
        case 'reply':
          ended(msg.eventId);
          await sendReply(taskId, msg);
          return;
      }
    },
    async close(): Promise<void> {
      closed = true;
      for (const r of running.values()) if (r.timer) clearTimeout(r.timer);
      running.clear();
      await Promise.allSettled([...background]);
    },
  };
}

function codeOf(err: unknown): string {
  const m = /HTTP (\d{3})/.exec(describeError(err));
  return m ? `HTTP ${m[1]}` : isAgentVmError(err) ? err.code : 'error';
}
