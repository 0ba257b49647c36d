/**
 * Outbound messages into a Slack thread: the "is thinking…" status and 👀 when a request is taken
 * in, progress (assistant status, else a throttled placeholder message), the answer while it is
 * written (live.ts: streamed, or posted and edited), the reply (completing that same message,
 * then the rest of a long answer, files, and a note naming every file that did not arrive), and
 * notices.
 *
 * Nothing is dropped silently: a step Slack refuses for good becomes a note in the thread (a file
 * over Slack's size limit, an upload refused, a missing scope named with the scope to add) and a
 * report to `onDeliveryFailure`; a reply whose text cannot be posted at all is logged at error
 * level and fails the send (not retryable). Transient failures throw retryable errors after the
 * client's own retries; the gateway then sends the reply again, and each delivered step (chunk,
 * file, note) is remembered per event, so the retry resumes where the first attempt stopped
 * instead of posting the same text twice.
 *
 * Deliberately left out: trailing flushes of throttled progress (a dropped update is replaced by
 * the next one or by the reply) and Block Kit layouts beyond the feedback buttons.
 */
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { printable } from '../../text.js';
import { tooLargeReason, type ReportFailure } from '../delivery.js';
import type { OutboundMessage } from '../types.js';
import { failureCode, neededScope, slackErrorCode, type SlackApi } from './api.js';
import { feedbackBlocks } from './feedback.js';
import { defuse, SECTION_MAX_CHARS, STREAM_MAX_CHARS, type Live, type LiveAnswers, type Place } from './live.js';
import { escapeText, markdownToMrkdwn, splitMessage } from './mrkdwn.js';
import { decodeConversation, decodeReplyTo, isOwnReplyTo } from './parse.js';
import type { Reactions } from './reactions.js';

/** Errors meaning "setStatus is not for this token or this channel": use a placeholder instead. */
const STATUS_UNAVAILABLE = new Set([
  'not_allowed_token_type', 'missing_scope', 'no_permission', 'access_denied', 'unknown_method',
  'method_not_supported_for_channel_type', 'not_an_assistant_thread', 'feature_not_enabled',
  'restricted_action', 'invalid_thread_ts', 'thread_not_found',
]);
/** Of those, the ones that hold for the whole token, not just one channel. */
const STATUS_UNAVAILABLE_EVERYWHERE = new Set(['not_allowed_token_type', 'missing_scope', 'unknown_method', 'feature_not_enabled']);

const STATUS_MAX_CHARS = 150;
const PLACEHOLDER_MAX_CHARS = 500;
/** Per-event state is bounded so turns that never finish cannot grow memory without limit. */
const MAX_TRACKED = 5000;

interface TurnState {
  placeholderTs?: string;
  statusSet: boolean;
  /** Steps of the final message already delivered (for resumable retries). */
  done: Set<string>;
  /** The answer shown while it was written. */
  live?: Live;
  /** Files Slack will not take (index → why), named in the closing note. */
  unsent: Map<number, string>;
  /** The newest partial answer not shown yet, and whether a call to show it is queued. */
  latest?: string;
  partialQueued: boolean;
}

export interface Sender {
  send(msg: OutboundMessage): Promise<void>;
  /** A request was taken in: "is thinking…" and 👀. Never throws. */
  received(conversation: string, replyTo: string | undefined, eventId: string): Promise<void>;
  /** Posts plain text into a conversation's thread (used for intake rejections). */
  postInThread(conversation: string, text: string): Promise<void>;
}

export interface SenderDeps {
  api: SlackApi;
  logger: Logger;
  now: () => number;
  progressIntervalMs: number;
  maxMessageChars: number;
  maxUploadBytes: number;
  live: LiveAnswers;
  reactions: Reactions;
  report: ReportFailure;
  /** Put 👍/👎 buttons under answers. */
  feedback: boolean;
}

const retryable = (err: unknown) => isAgentVmError(err) && err.retryable;

/** Why Slack will not take something, in words for the thread. */
function refusal(err: unknown, what: string): string {
  const scope = neededScope(err);
  if (scope) return `${what}: the Slack app lacks the ${scope} scope (add it under OAuth & Permissions and reinstall the app)`;
  return `${what} (Slack said: ${printable(failureCode(err), 80)})`;
}

export function createSender(deps: SenderDeps): Sender {
  const { api, logger } = deps;
  const turns = new Map<string, TurnState>();
  const lastProgressAt = new Map<string, number>();
  const statusUnavailable = new Set<string>();
  const chains = new Map<string, Promise<unknown>>();
  /** Turns already answered: a late progress update must not open a new placeholder. */
  const finished = new Set<string>();

  function turn(eventId: string): TurnState {
    let t = turns.get(eventId);
    if (!t) {
      t = { statusSet: false, done: new Set(), unsent: new Map(), partialQueued: false };
      turns.set(eventId, t);
      if (turns.size > MAX_TRACKED) turns.delete(turns.keys().next().value!);
    }
    return t;
  }

  /** Runs `fn` after every earlier call for the same key: a reply never overtakes its placeholder. */
  function serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = chains.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => {});
    chains.set(key, settled);
    void settled.then(() => {
      if (chains.get(key) === settled) chains.delete(key);
    });
    return next;
  }

  function place(conversation: string, replyTo: string | undefined): Place & { own?: string } {
    const c = decodeConversation(conversation);
    if (!c) throw new AgentVmError('slack_bad_conversation', `not a Slack conversation id: ${conversation}`, { status: 400 });
    const own = decodeReplyTo(replyTo);
    return { channel: c.channel, threadTs: c.threadTs, team: c.team, ...(own ? { user: own.user, own: own.ts } : {}) };
  }

  async function setStatus(channel: string, threadTs: string, status: string): Promise<boolean> {
    if (statusUnavailable.has('*') || statusUnavailable.has(channel)) return false;
    try {
      await api.call('assistant.threads.setStatus', { channel_id: channel, thread_ts: threadTs, status: truncate(status, STATUS_MAX_CHARS) });
      return true;
    } catch (err) {
      const code = slackErrorCode(err);
      if (!code || !STATUS_UNAVAILABLE.has(code)) throw err;
      statusUnavailable.add(STATUS_UNAVAILABLE_EVERYWHERE.has(code) ? '*' : channel);
      logger.debug({ channel, code }, 'slack: assistant status unavailable, using a placeholder message');
      return false;
    }
  }

  async function progress(msg: Extract<OutboundMessage, { kind: 'progress' }>): Promise<void> {
    const at = place(msg.conversation, msg.replyTo);
    const t = turn(msg.eventId);
    if (finished.has(msg.eventId) || t.live) return; // the answer itself is showing
    const now = deps.now();
    const last = lastProgressAt.get(msg.conversation);
    if (last !== undefined && now - last < deps.progressIntervalMs) return; // throttled: dropped
    lastProgressAt.set(msg.conversation, now);
    if (lastProgressAt.size > MAX_TRACKED) lastProgressAt.delete(lastProgressAt.keys().next().value!);
    const text = msg.text.trim();
    if (!t.placeholderTs && (await setStatus(at.channel, at.threadTs, text || 'is working…'))) {
      t.statusSet = true;
      return;
    }
    const body = truncate(text ? `Working on it… ${escapeText(text)}` : 'Working on it…', PLACEHOLDER_MAX_CHARS);
    if (t.placeholderTs) {
      await api.call('chat.update', { channel: at.channel, ts: t.placeholderTs, text: body });
    } else {
      const res = await api.call('chat.postMessage', { channel: at.channel, thread_ts: at.threadTs, text: body });
      if (typeof res.ts === 'string') t.placeholderTs = res.ts;
    }
  }

  async function partial(msg: Extract<OutboundMessage, { kind: 'partial' }>, t: TurnState): Promise<void> {
    t.partialQueued = false;
    const text = t.latest;
    t.latest = undefined;
    if (text === undefined || finished.has(msg.eventId)) return;
    const at = place(msg.conversation, msg.replyTo);
    t.live = await deps.live.show(t.live, at, text, msg.eventId, t.placeholderTs);
    if (t.live?.mode === 'edit') t.placeholderTs = t.live.ts;
  }

  /** Posts `text` in the thread, or replaces the placeholder with it the first time. */
  async function deliverText(t: TurnState, at: Place, text: string, blocks?: unknown[]): Promise<void> {
    const extra = blocks && text.length <= SECTION_MAX_CHARS ? { blocks: [{ type: 'section', text: { type: 'mrkdwn', text } }, ...blocks] } : {};
    if (t.placeholderTs) {
      await api.call('chat.update', { channel: at.channel, ts: t.placeholderTs, text, ...extra });
      t.placeholderTs = undefined;
    } else {
      await api.call('chat.postMessage', { channel: at.channel, thread_ts: at.threadTs, text, ...extra });
    }
  }

  async function step(t: TurnState, name: string, fn: () => Promise<void>): Promise<void> {
    if (t.done.has(name)) return;
    await fn();
    t.done.add(name);
  }

  /**
   * A text step of a reply or notice. Transient: reported and rethrown (the gateway retries).
   * Refused for good: a short note is tried in its place, the failure reported (logged at error
   * level when the note did not land either), and the send fails for good.
   */
  async function text(kind: 'reply' | 'notice', t: TurnState, at: Place, eventId: string, name: string, fn: () => Promise<void>): Promise<void> {
    try {
      await step(t, name, fn);
    } catch (err) {
      if (retryable(err)) {
        deps.report({ kind, step: 'text', code: failureCode(err), retryable: true, shown: false }, { eventId, err });
        throw err;
      }
      let shown = false;
      try {
        await api.call('chat.postMessage', { channel: at.channel, thread_ts: at.threadTs, text: escapeText(refusal(err, kind === 'reply' ? 'The answer could not be posted here' : 'A notice could not be posted here')) });
        shown = true;
      } catch {
        // The thread takes nothing from us: the error log below is what is left.
      }
      deps.report({ kind, step: 'text', code: failureCode(err), retryable: false, shown }, { eventId, err });
      throw err;
    }
  }

  async function finish(eventId: string, conversation: string, t: TurnState, at: Place & { own?: string }, ok: boolean): Promise<void> {
    if (t.statusSet) {
      // Cosmetic: Slack also clears the status when we post and after two minutes. A failure
      // here must not make the gateway resend a reply that was delivered.
      try {
        await api.call('assistant.threads.setStatus', { channel_id: at.channel, thread_ts: at.threadTs, status: '' });
      } catch (err) {
        logger.warn({ channel: at.channel, err: describeError(err) }, 'slack: could not clear the assistant status');
      }
    }
    turns.delete(eventId);
    lastProgressAt.delete(conversation);
    finished.add(eventId);
    if (finished.size > MAX_TRACKED) finished.delete(finished.values().next().value!);
    if (at.own) await (ok ? deps.reactions.answered(at.channel, at.own) : deps.reactions.failed(at.channel, at.own));
  }

  async function reply(msg: Extract<OutboundMessage, { kind: 'reply' }>): Promise<void> {
    const at = place(msg.conversation, msg.replyTo);
    if (finished.has(msg.eventId)) return; // delivered in full already: one reply per turn
    const t = turn(msg.eventId);
    const buttons = deps.feedback ? feedbackBlocks(msg.eventId) : undefined;
    let chunks: string[];
    if (t.live?.mode === 'stream' && t.live.ts) {
      // The streamed message becomes the answer's first part; the rest follows as messages.
      const parts = splitMessage(defuse(msg.text), STREAM_MAX_CHARS);
      chunks = parts.slice(1).flatMap((p) => splitMessage(markdownToMrkdwn(p), deps.maxMessageChars));
      const live = t.live;
      await text('reply', t, at, msg.eventId, 'stream', () => deps.live.complete(live, at, parts[0] ?? live.shown, chunks.length === 0 ? buttons : undefined));
    } else {
      chunks = splitMessage(markdownToMrkdwn(msg.text), deps.maxMessageChars);
      if (chunks.length === 0 && t.placeholderTs) chunks.push(msg.files.length > 0 ? 'Done. Files below.' : 'Done.');
    }
    for (const [i, chunk] of chunks.entries()) {
      const last = i === chunks.length - 1;
      await text('reply', t, at, msg.eventId, `chunk:${i}`, () => deliverText(t, at, chunk, last ? buttons : undefined));
    }
    for (const [i, file] of msg.files.entries()) {
      if (t.done.has(`file:${i}`) || t.unsent.has(i)) continue;
      if (file.data.length > deps.maxUploadBytes) {
        t.unsent.set(i, tooLargeReason(file.data.length, deps.maxUploadBytes, 'Slack'));
        continue;
      }
      try {
        // Agent-chosen: shown as the file's title, so no invisible or reordering characters.
        await api.uploadFile({ channel: at.channel, threadTs: at.threadTs, name: printable(file.name, 255), data: file.data });
        t.done.add(`file:${i}`);
      } catch (err) {
        if (retryable(err)) {
          deps.report({ kind: 'reply', step: 'file', code: failureCode(err), retryable: true, shown: false }, { eventId: msg.eventId, err });
          throw err;
        }
        t.unsent.set(i, refusal(err, 'Slack refused the upload'));
      }
    }
    const notSent = [
      ...msg.heldBack.map((h) => ({ name: h.name, reason: h.reason, ours: false })),
      ...[...t.unsent].map(([i, reason]) => ({ name: msg.files[i]!.name, reason, ours: true })),
    ];
    if (notSent.length > 0) {
      // Names and reasons come from the agent's outbox: one escaped line each, never a forged one.
      const lines = notSent.map((h) => `• \`${escapeText(printable(h.name).replace(/`/g, "'"))}\`: ${escapeText(printable(h.reason, 300))}`);
      const note = `${notSent.length === 1 ? 'One file was' : `${notSent.length} files were`} not sent:\n${lines.join('\n')}`;
      let shown = false;
      try {
        await step(t, 'heldBack', () => deliverText(t, at, truncate(note, deps.maxMessageChars)));
        shown = true;
      } finally {
        for (const h of notSent) if (h.ours) deps.report({ kind: 'reply', step: 'file', code: 'refused', retryable: false, shown }, { eventId: msg.eventId });
      }
    }
    await finish(msg.eventId, msg.conversation, t, at, true);
  }

  async function notice(msg: Extract<OutboundMessage, { kind: 'notice' }>): Promise<void> {
    const at = place(msg.conversation, msg.replyTo);
    const t = turn(msg.eventId);
    // An answer partly shown stays: the notice follows it instead of replacing it.
    if (t.live) {
      await deps.live.abandon(t.live, at);
      if (t.live.mode === 'edit') t.placeholderTs = undefined;
    }
    const chunks = splitMessage(markdownToMrkdwn(msg.text), deps.maxMessageChars);
    for (const [i, chunk] of chunks.entries()) {
      await text('notice', t, at, msg.eventId, `notice:${i}`, () => deliverText(t, at, chunk));
    }
    await finish(msg.eventId, msg.conversation, t, at, false);
  }

  return {
    send(msg) {
      // Slack events carry only our own replyTo (the person's message): another one was made by another adapter.
      if (msg.replyTo !== undefined && !isOwnReplyTo(msg.replyTo)) {
        return Promise.reject(new AgentVmError('slack_bad_conversation', 'this replyTo was not made by the Slack adapter', { status: 400 }));
      }
      try {
        place(msg.conversation, msg.replyTo);
      } catch (err) {
        return Promise.reject(err);
      }
      if (msg.kind === 'partial') {
        // Only the newest text matters: one queued call shows whatever is newest when it runs.
        const t = turn(msg.eventId);
        t.latest = msg.text;
        if (t.partialQueued) return Promise.resolve();
        t.partialQueued = true;
        return serial(msg.conversation, () => partial(msg, t));
      }
      return serial(msg.conversation, () => {
        if (msg.kind === 'progress') return progress(msg);
        if (msg.kind === 'reply') return reply(msg);
        return notice(msg);
      });
    },
    received(conversation, replyTo, eventId) {
      return serial(conversation, async () => {
        try {
          const at = place(conversation, replyTo);
          const t = turn(eventId);
          if (finished.has(eventId) || t.live || t.statusSet) return;
          await Promise.all([
            setStatus(at.channel, at.threadTs, 'is thinking…').then((set) => {
              if (set) t.statusSet = true;
            }),
            at.own ? deps.reactions.received(at.channel, at.own) : undefined,
          ]);
        } catch (err) {
          deps.report({ kind: 'progress', step: 'status', code: failureCode(err), retryable: true, shown: false }, { eventId, err });
        }
      });
    },
    postInThread(conversation, body) {
      return serial(conversation, async () => {
        const at = place(conversation, undefined);
        await api.call('chat.postMessage', { channel: at.channel, thread_ts: at.threadTs, text: escapeText(body) });
      });
    },
  };
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}
