/**
 * `send()` for Discord: where each outbound message goes and in what order.
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
import { AgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { OutboundFile, OutboundMessage } from '../types.js';
import { discordErrorOf, type DiscordApi, type MessageBody } from './api.js';
import { replyTargetOf, type ReplyTarget } from './parse.js';
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
}

export interface DelivererOptions {
  api: DiscordApi;
  logger: Logger;
  now: () => number;
  progressIntervalMs: number;
  maxUploadBytes: number;
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
      st = { lastProgressAt: Number.NEGATIVE_INFINITY, delivered: 0, resumeKind: undefined, answered: false, chain: Promise.resolve() };
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

  async function deliverParts(msg: OutboundMessage, st: EventState, parts: Part[]): Promise<void> {
    const t = targetOf(msg);
    const start = st.resumeKind === msg.kind ? st.delivered : 0;
    st.resumeKind = msg.kind;
    for (let i = start; i < parts.length; i++) {
      await deliverPart(t, i, parts[i]!, !st.answered);
      st.delivered = i + 1;
      st.answered = true;
    }
    st.resumeKind = undefined;
    st.delivered = 0;
  }

  async function progress(msg: Extract<OutboundMessage, { kind: 'progress' }>, st: EventState): Promise<void> {
    if (st.answered || now() - st.lastProgressAt < opts.progressIntervalMs) return;
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
    const plan = planAttachments(msg.files, msg.heldBack, opts.maxUploadBytes);
    const answer = msg.text.trim() || (plan.batches.length > 0 ? '' : '(the agent gave no answer)');
    const text = [answer, notSentText(plan.notSent)].filter(Boolean).join('\n\n');
    const chunks = splitMessage(text);
    const parts: Part[] = chunks.map((content, i) => ({ content, files: i === chunks.length - 1 ? (plan.batches[0] ?? []) : [] }));
    for (const batch of plan.batches.slice(1)) parts.push({ content: '', files: batch });
    return parts;
  }

  return {
    send(msg: OutboundMessage): Promise<void> {
      if (msg.kind === 'partial') return Promise.resolve(); // edited in place as it grows: issue 14
      const st = stateOf(msg.eventId);
      const run = async () => {
        if (msg.kind === 'progress') return progress(msg, st);
        if (msg.kind === 'reply') return deliverParts(msg, st, replyParts(msg));
        return deliverParts(msg, st, splitMessage(msg.text.trim() || '(no details)').map((content) => ({ content, files: [] })));
      };
      const result = st.chain.then(run);
      st.chain = result.catch(() => undefined);
      return result;
    },
  };
}
