/**
 * `send()` for Discord: where each outbound message goes and in what order.
 *
 * The answer is shown while it is written (live.ts: the deferred response or a reply edited as
 * it grows, within Discord's 5 writes per 5 s per channel) and the final reply completes those
 * same messages: edited to the final text, continued past 2,000 characters, files after. The
 * person's message (mentions) gets ✅ or ⚠️ when the turn ends (reactions.ts).
 *
 * Nothing is dropped silently: a message part Discord refuses for good is sent again without its
 * files with a note naming them and why, a text part it refuses is replaced by a note when
 * Discord takes that, and every such step is reported (`onDeliveryFailure`).
 *
 * A slash command's turn answers through its interaction webhook (edit the deferred original,
 * then follow-ups) while the token lives; past 14 minutes (Discord's limit is 15), or when
 * Discord says the token is gone, it posts to the channel with the bot token instead, mentioning
 * the user so the answer is noticed. Mention turns always post with the bot token.
 *
 * Messages of one event are serialized, so a slow progress edit can never land on top of the
 * answer. A reply that fails part-way resumes where it stopped when the caller retries it.
 * Agent output never pings anyone: `allowed_mentions` is empty on every message.
 */
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { printable } from '../../text.js';
import type { ReportFailure } from '../delivery.js';
import type { OutboundFile, OutboundMessage } from '../types.js';
import { discordErrorOf, type DiscordApi, type MessageBody } from './api.js';
import { liveWriter, showPartial, type LiveMessages, type WindowLimiter } from './live.js';
import { replyTargetOf, type ReplyTarget } from './parse.js';
import type { Reactions } from './reactions.js';
import { MESSAGE_LIMIT, notSentText, planAttachments, progressText, splitMessage } from './render.js';

/** Discord's interaction token lives 15 minutes; stop using it a minute early. */
export const INTERACTION_TOKEN_SAFE_MS = 14 * 60 * 1000;
const MAX_TRACKED_EVENTS = 5000;
const NO_MENTIONS = { parse: [] as string[] };

interface EventState {
  lastProgressAt: number;
  /** Parts of an unfinished reply (or notice) already delivered, so a retry resumes after them. */
  delivered: number;
  resumeKind: OutboundMessage['kind'] | undefined;
  /** The original interaction response holds an answer: progress stops, notices follow up. */
  answered: boolean;
  chain: Promise<void>;
  /** The messages showing the answer while it was written. */
  live?: LiveMessages;
  /** Steps of a reply completing a live answer, already done (for resumable retries). */
  done: Set<string>;
  latest?: string;
  partialQueued: boolean;
  finished: boolean;
}

export interface DelivererOptions {
  api: DiscordApi;
  logger: Logger;
  now: () => number;
  progressIntervalMs: number;
  maxUploadBytes: number;
  maxFileBytes: number;
  limiter: WindowLimiter;
  reactions: Reactions;
  report: ReportFailure;
  /** Resolves when a thread the bot is opening for `channel` exists (or failed to open). */
  opened(channel: string): Promise<unknown>;
}

interface Part {
  content: string;
  files: OutboundFile[];
}

export function tokenRejected(err: unknown): boolean {
  const e = discordErrorOf(err);
  // 50027 invalid webhook token, 10015 unknown webhook: the interaction is gone; the channel is not.
  return e !== null && (e.status === 401 || e.code === 50027 || e.code === 10015);
}

export function channelGone(err: unknown): boolean {
  const e = discordErrorOf(err);
  // 10003 unknown channel: a thread that was never opened; 50001 missing access to it.
  return e !== null && (e.code === 10003 || e.code === 50001);
}

export function createDeliverer(opts: DelivererOptions) {
  const { api, logger, now } = opts;
  const events = new Map<string, EventState>();

  function stateOf(eventId: string): EventState {
    let st = events.get(eventId);
    if (!st) {
      st = { lastProgressAt: Number.NEGATIVE_INFINITY, delivered: 0, resumeKind: undefined, answered: false, chain: Promise.resolve(), done: new Set(), partialQueued: false, finished: false };
      events.set(eventId, st);
      if (events.size > MAX_TRACKED_EVENTS) events.delete(events.keys().next().value as string);
    }
    return st;
  }

  function targetOf(msg: OutboundMessage): ReplyTarget {
    const t = replyTargetOf(msg.replyTo, msg.conversation);
    if (t) return t;
    throw new AgentVmError('discord_bad_target', `event ${msg.eventId}: not a Discord conversation or replyTo (made by another adapter?)`, { status: 400, retryable: false });
  }

  function tokenLive(t: ReplyTarget): t is Extract<ReplyTarget, { kind: 'interaction' }> {
    return t.kind === 'interaction' && now() - t.issuedAt < INTERACTION_TOKEN_SAFE_MS;
  }

  function body(content: string, first: boolean): MessageBody {
    // The first edit must set content (even '') to replace the "Thinking…" text.
    const b: MessageBody = { allowed_mentions: NO_MENTIONS };
    if (content || first) b.content = content;
    return b;
  }

  async function toChannel(t: ReplyTarget, index: number, part: Part): Promise<void> {
    if (t.kind === 'interaction') {
      if (!api.hasBotToken) {
        throw new AgentVmError(
          'discord_token_expired',
          'the interaction token expired (15 minutes) and DISCORD_BOT_TOKEN is not set, so the answer cannot be posted to the channel',
          { status: 502, retryable: false },
        );
      }
      const b = body(part.content, false);
      const mention = index === 0 && t.user ? `<@${t.user}> ` : '';
      if (mention && mention.length + part.content.length <= MESSAGE_LIMIT) {
        b.content = mention + part.content;
        b.allowed_mentions = { parse: [], users: [t.user!] };
      }
      await api.createMessage(t.channel, b, part.files);
      return;
    }
    const b = body(part.content, false);
    const reference = index === 0 && t.reference ? { message_id: t.reference, fail_if_not_exists: false } : undefined;
    if (!t.fallback) {
      await api.createMessage(t.channel, reference ? { ...b, message_reference: reference } : b, part.files);
      return;
    }
    try {
      await api.createMessage(t.channel, b, part.files);
    } catch (err) {
      if (!channelGone(err)) throw err;
      logger.warn({ channel: t.channel }, 'discord thread unavailable; replying in the channel');
      await api.createMessage(t.fallback, reference ? { ...b, message_reference: reference } : b, part.files);
    }
  }

  async function deliverPart(t: ReplyTarget, index: number, part: Part, editOriginal: boolean): Promise<void> {
    if (tokenLive(t)) {
      try {
        if (editOriginal) await api.editOriginal(t.applicationId, t.token, body(part.content, true), part.files);
        else await api.followUp(t.applicationId, t.token, body(part.content, false), part.files);
        return;
      } catch (err) {
        if (!tokenRejected(err) || !api.hasBotToken) throw err;
        logger.warn('discord interaction token rejected; posting to the channel');
      }
    }
    await toChannel(t, index, part);
  }

  const retryable = (err: unknown) => isAgentVmError(err) && err.retryable;
  /** Why Discord refused a part, in words for the thread: a missing permission (50013) named, so someone can give it. */
  const refusedWhy = (err: unknown, withFiles: boolean) => {
    if (discordErrorOf(err)?.code === 50013) {
      return `Discord refused it: the bot lacks the ${withFiles ? 'Attach Files' : 'Send Messages'} permission here (give it in the channel's or the bot role's permissions)`;
    }
    return `Discord refused it: ${printable(describeError(err), 200)}`;
  };
  const codeOf = (err: unknown) => {
    const e = discordErrorOf(err);
    return e ? String(e.code ?? `HTTP ${e.status}`) : isAgentVmError(err) ? err.code : 'error';
  };

  /**
   * One part, with what to do when Discord refuses it for good: a part with files goes again
   * without them plus a note naming them; a text part is replaced by a note. Returns whether
   * the part itself arrived (false: a note stands in for it, or nothing could be posted).
   */
  async function deliverGuarded(msg: OutboundMessage, t: ReplyTarget, index: number, part: Part, editOriginal: boolean): Promise<boolean> {
    await opts.opened(t.channel);
    try {
      await deliverPart(t, index, part, editOriginal);
      return true;
    } catch (err) {
      if (retryable(err)) {
        opts.report({ kind: kindOf(msg), step: part.files.length > 0 ? 'file' : 'text', code: codeOf(err), retryable: true, shown: false }, { eventId: msg.eventId, err });
        throw err;
      }
      const why = refusedWhy(err, part.files.length > 0);
      if (part.files.length > 0) {
        const note = notSentText(part.files.map((f) => ({ name: f.name, reason: why })));
        const content = [part.content, note].filter(Boolean).join('\n\n');
        const shown = await deliverPart(t, index, { content: splitMessage(content)[0] ?? note, files: [] }, editOriginal).then(() => true, () => false);
        opts.report({ kind: kindOf(msg), step: 'file', code: codeOf(err), retryable: false, shown }, { eventId: msg.eventId, err });
        if (shown) return true;
        throw err;
      }
      const shown = await deliverPart(t, index, { content: `The answer could not be posted here (${why}).`, files: [] }, editOriginal).then(() => true, () => false);
      opts.report({ kind: kindOf(msg), step: 'text', code: codeOf(err), retryable: false, shown }, { eventId: msg.eventId, err });
      throw err;
    }
  }

  async function deliverParts(msg: OutboundMessage, st: EventState, parts: Part[]): Promise<void> {
    const t = targetOf(msg);
    const start = st.resumeKind === msg.kind ? st.delivered : 0;
    st.resumeKind = msg.kind;
    for (let i = start; i < parts.length; i++) {
      await deliverGuarded(msg, t, i, parts[i]!, !st.answered);
      st.delivered = i + 1;
      st.answered = true;
    }
    st.resumeKind = undefined;
    st.delivered = 0;
  }

  /** A reply completing a live answer: its messages edited to the final text, then the rest. */
  async function completeLive(msg: Extract<OutboundMessage, { kind: 'reply' }>, st: EventState, live: LiveMessages): Promise<void> {
    const t = targetOf(msg);
    const writer = liveWriter(api, t);
    const plan = planAttachments(msg.files, msg.heldBack, opts.maxUploadBytes, opts.maxFileBytes);
    const text = [msg.text.trim(), notSentText(plan.notSent)].filter(Boolean).join('\n\n');
    const chunks = splitMessage(text);
    // As an answer that was not streamed: the first batch of files on the last text message.
    const withFiles = chunks.length - 1;
    for (const [i, chunk] of chunks.entries()) {
      if (st.done.has(`text:${i}`)) continue;
      const files = i === withFiles ? (plan.batches[0] ?? []) : [];
      if (i < live.ids.length) {
        if (live.contents[i] !== chunk || files.length > 0) {
          try {
            await writer.edit(live.ids[i]!, chunk, files);
          } catch (err) {
            if (retryable(err)) {
              opts.report({ kind: 'reply', step: 'edit', code: codeOf(err), retryable: true, shown: false }, { eventId: msg.eventId, err });
              throw err;
            }
            // The message cannot be edited (the interaction expired, or Discord refuses the edit):
            // the final text (and its files) go out as a new message instead of being lost.
            await deliverGuarded(msg, t, i, { content: chunk, files }, false);
          }
          opts.limiter.note(writer.channel);
          live.contents[i] = chunk;
        }
      } else {
        await deliverGuarded(msg, t, i, { content: chunk, files }, false);
      }
      st.done.add(`text:${i}`);
    }
    // Streamed further than the final text reaches (it got shorter): nothing stale stays.
    for (let i = chunks.length; i < live.ids.length; i++) {
      if (st.done.has(`text:${i}`) || live.contents[i] === '…') continue;
      await writer.edit(live.ids[i]!, '…').catch(() => undefined);
      st.done.add(`text:${i}`);
    }
    for (const [b, batch] of plan.batches.slice(1).entries()) {
      if (st.done.has(`files:${b}`)) continue;
      await deliverGuarded(msg, t, chunks.length + b, { content: '', files: batch }, false);
      st.done.add(`files:${b}`);
    }
  }

  async function partial(msg: Extract<OutboundMessage, { kind: 'partial' }>, st: EventState): Promise<void> {
    st.partialQueued = false;
    const text = st.latest;
    st.latest = undefined;
    if (text === undefined || st.finished || !text.trim()) return;
    const t = targetOf(msg);
    // Past the interaction token's safe life the answer waits for the final reply (channel fallback).
    if (t.kind === 'interaction' && !tokenLive(t)) return;
    if (t.kind === 'channel' && !api.hasBotToken) return;
    await opts.opened(t.channel);
    const live = st.live ?? { ids: [], contents: [] };
    try {
      await showPartial(live, liveWriter(api, t), opts.limiter, text);
    } catch (err) {
      opts.report({ kind: 'partial', step: 'edit', code: codeOf(err), retryable: true, shown: false }, { eventId: msg.eventId, err });
    }
    if (live.ids.length > 0) {
      st.live = live;
      st.answered = true;
    }
  }

  async function finished(msg: OutboundMessage, st: EventState, ok: boolean): Promise<void> {
    st.finished = true;
    const t = replyTargetOf(msg.replyTo, msg.conversation);
    if (t?.kind === 'channel' && t.reference) await opts.reactions.ended(t.fallback ?? t.channel, t.reference, ok);
  }

  async function progress(msg: Extract<OutboundMessage, { kind: 'progress' }>, st: EventState): Promise<void> {
    if (st.answered || st.finished || now() - st.lastProgressAt < opts.progressIntervalMs) return;
    st.lastProgressAt = now();
    const t = targetOf(msg);
    try {
      if (tokenLive(t)) {
        await api.editOriginal(t.applicationId, t.token, { content: progressText(msg.text), allowed_mentions: NO_MENTIONS });
      } else if (api.hasBotToken) {
        await api.triggerTyping(t.channel);
      }
    } catch (err) {
      // Progress is best effort; the answer still goes out.
      logger.debug({ err, eventId: msg.eventId }, 'discord progress update failed');
    }
  }

  function replyParts(msg: Extract<OutboundMessage, { kind: 'reply' }>): Part[] {
    const plan = planAttachments(msg.files, msg.heldBack, opts.maxUploadBytes, opts.maxFileBytes);
    const answer = msg.text.trim() || (plan.batches.length > 0 ? '' : '(the agent gave no answer)');
    const text = [answer, notSentText(plan.notSent)].filter(Boolean).join('\n\n');
    const chunks = splitMessage(text);
    const parts: Part[] = chunks.map((content, i) => ({ content, files: i === chunks.length - 1 ? (plan.batches[0] ?? []) : [] }));
    for (const batch of plan.batches.slice(1)) parts.push({ content: '', files: batch });
    return parts;
  }

  return {
    send(msg: OutboundMessage): Promise<void> {
      const st = stateOf(msg.eventId);
      if (msg.kind === 'partial') {
        // Only the newest text matters: one queued call shows whatever is newest when it runs.
        st.latest = msg.text;
        if (st.partialQueued) return Promise.resolve();
        st.partialQueued = true;
      }
      const run = async () => {
        if (msg.kind === 'partial') return partial(msg, st);
        if (msg.kind === 'progress') return progress(msg, st);
        if (msg.kind === 'reply') {
          if (st.finished && st.resumeKind === undefined) return; // delivered already: one reply per turn
          if (st.live) await completeLive(msg, st, st.live);
          else await deliverParts(msg, st, replyParts(msg));
          return finished(msg, st, true);
        }
        await deliverParts(msg, st, splitMessage(msg.text.trim() || '(no details)').map((content) => ({ content, files: [] })));
        return finished(msg, st, false);
      };
      const result = st.chain.then(run);
      st.chain = result.catch(() => undefined);
      return result;
    },
  };
}

function kindOf(msg: OutboundMessage): 'reply' | 'notice' | 'progress' | 'partial' {
  return msg.kind;
}
