/**
 * Outbound messages into a Slack thread: progress (assistant status, else a throttled placeholder
 * message), the reply (mrkdwn, split, files), and notices.
 *
 * A reply that fails halfway throws a retryable error; the gateway then sends it again. Each
 * delivered step (chunk, file, held-back note) is remembered per event, so the retry resumes
 * where the first attempt stopped instead of posting the same text twice.
 *
 * Deliberately left out: trailing flushes of throttled progress (a dropped update is replaced by
 * the next one or by the reply) and Block Kit layouts (plain mrkdwn text reads well everywhere).
 */
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { printable } from '../../text.js';
import type { OutboundMessage } from '../types.js';
import { slackErrorCode, type SlackApi } from './api.js';
import { escapeText, markdownToMrkdwn, splitMessage } from './mrkdwn.js';
import { decodeConversation } from './parse.js';

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
}

export interface Sender {
  send(msg: OutboundMessage): Promise<void>;
  /** Posts plain text into a conversation's thread (used for intake rejections). */
  postInThread(conversation: string, text: string): Promise<void>;
}

export function createSender(deps: {
  api: SlackApi;
  logger: Logger;
  now: () => number;
  progressIntervalMs: number;
  maxMessageChars: number;
}): Sender {
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
      t = { statusSet: false, done: new Set() };
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

  function target(conversation: string): { channel: string; threadTs: string } {
    const c = decodeConversation(conversation);
    if (!c) throw new AgentVmError('slack_bad_conversation', `not a Slack conversation id: ${conversation}`, { status: 400 });
    return c;
  }

  async function progress(msg: Extract<OutboundMessage, { kind: 'progress' }>): Promise<void> {
    const { channel, threadTs } = target(msg.conversation);
    if (finished.has(msg.eventId)) return;
    const now = deps.now();
    const last = lastProgressAt.get(msg.conversation);
    if (last !== undefined && now - last < deps.progressIntervalMs) return; // throttled: dropped
    lastProgressAt.set(msg.conversation, now);
    if (lastProgressAt.size > MAX_TRACKED) lastProgressAt.delete(lastProgressAt.keys().next().value!);
    const t = turn(msg.eventId);
    const text = msg.text.trim();

    if (!t.placeholderTs && !statusUnavailable.has('*') && !statusUnavailable.has(channel)) {
      try {
        await api.call('assistant.threads.setStatus', {
          channel_id: channel,
          thread_ts: threadTs,
          status: truncate(text || 'is working…', STATUS_MAX_CHARS),
        });
        t.statusSet = true;
        return;
      } catch (err) {
        const code = slackErrorCode(err);
        if (!code || !STATUS_UNAVAILABLE.has(code)) throw err;
        statusUnavailable.add(STATUS_UNAVAILABLE_EVERYWHERE.has(code) ? '*' : channel);
        logger.debug({ channel, code }, 'slack: assistant status unavailable, using a placeholder message');
      }
    }

    const body = truncate(text ? `Working on it… ${escapeText(text)}` : 'Working on it…', PLACEHOLDER_MAX_CHARS);
    if (t.placeholderTs) {
      await api.call('chat.update', { channel, ts: t.placeholderTs, text: body });
    } else {
      const res = await api.call('chat.postMessage', { channel, thread_ts: threadTs, text: body });
      if (typeof res.ts === 'string') t.placeholderTs = res.ts;
    }
  }

  /** Posts `text` in the thread, or replaces the placeholder with it the first time. */
  async function deliverText(t: TurnState, channel: string, threadTs: string, text: string): Promise<void> {
    if (t.placeholderTs) {
      await api.call('chat.update', { channel, ts: t.placeholderTs, text });
      t.placeholderTs = undefined;
    } else {
      await api.call('chat.postMessage', { channel, thread_ts: threadTs, text });
    }
  }

  async function step(t: TurnState, name: string, fn: () => Promise<void>): Promise<void> {
    if (t.done.has(name)) return;
    await fn();
    t.done.add(name);
  }

  async function finish(eventId: string, conversation: string, t: TurnState, channel: string, threadTs: string): Promise<void> {
    if (t.statusSet) {
      // Cosmetic: Slack also clears the status when we post and after two minutes. A failure
      // here must not make the gateway resend a reply that was delivered.
      try {
        await api.call('assistant.threads.setStatus', { channel_id: channel, thread_ts: threadTs, status: '' });
      } catch (err) {
        logger.warn({ channel, err: describeError(err) }, 'slack: could not clear the assistant status');
      }
    }
    turns.delete(eventId);
    lastProgressAt.delete(conversation);
    finished.add(eventId);
    if (finished.size > MAX_TRACKED) finished.delete(finished.values().next().value!);
  }

  async function reply(msg: Extract<OutboundMessage, { kind: 'reply' }>): Promise<void> {
    const { channel, threadTs } = target(msg.conversation);
    if (finished.has(msg.eventId)) return; // delivered in full already: one reply per turn
    const t = turn(msg.eventId);
    const chunks = splitMessage(markdownToMrkdwn(msg.text), deps.maxMessageChars);
    if (chunks.length === 0 && t.placeholderTs) chunks.push(msg.files.length > 0 ? 'Done. Files below.' : 'Done.');
    for (const [i, chunk] of chunks.entries()) {
      await step(t, `chunk:${i}`, () => deliverText(t, channel, threadTs, chunk));
    }
    for (const [i, file] of msg.files.entries()) {
      await step(t, `file:${i}`, async () => {
        // Agent-chosen: shown as the file's title, so no invisible or reordering characters.
        await api.uploadFile({ channel, threadTs, name: printable(file.name, 255), data: file.data });
      });
    }
    if (msg.heldBack.length > 0) {
      // Names and reasons come from the agent's outbox: one escaped line each, never a forged one.
      const lines = msg.heldBack.map((h) => `• \`${escapeText(printable(h.name).replace(/`/g, "'"))}\`: ${escapeText(printable(h.reason, 300))}`);
      const text = `${msg.heldBack.length === 1 ? 'One file was' : `${msg.heldBack.length} files were`} not sent:\n${lines.join('\n')}`;
      await step(t, 'heldBack', () => deliverText(t, channel, threadTs, truncate(text, deps.maxMessageChars)));
    }
    await finish(msg.eventId, msg.conversation, t, channel, threadTs);
  }

  async function notice(msg: Extract<OutboundMessage, { kind: 'notice' }>): Promise<void> {
    const { channel, threadTs } = target(msg.conversation);
    const t = turn(msg.eventId);
    const chunks = splitMessage(markdownToMrkdwn(msg.text), deps.maxMessageChars);
    for (const [i, chunk] of chunks.entries()) {
      await step(t, `notice:${i}`, () => deliverText(t, channel, threadTs, chunk));
    }
    await finish(msg.eventId, msg.conversation, t, channel, threadTs);
  }

  return {
    send(msg) {
      // Slack events carry no replyTo: one here was made by another adapter.
      if (msg.replyTo !== undefined) {
        return Promise.reject(new AgentVmError('slack_bad_conversation', 'a Slack message has no replyTo; this one was addressed by another adapter', { status: 400 }));
      }
      if (msg.kind === 'partial') return Promise.resolve(); // streaming comes with chat.startStream (issue 14)
      return serial(msg.conversation, () => {
        if (msg.kind === 'progress') return progress(msg);
        if (msg.kind === 'reply') return reply(msg);
        return notice(msg);
      });
    },
    postInThread(conversation, text) {
      return serial(conversation, async () => {
        const { channel, threadTs } = target(conversation);
        await api.call('chat.postMessage', { channel, thread_ts: threadTs, text: escapeText(text) });
      });
    },
  };
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}
