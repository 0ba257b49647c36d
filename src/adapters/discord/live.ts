/**
 * The answer while the agent writes it, on Discord: the deferred response (or, for a mention, a
 * reply to the person's message) is edited as the text grows, continuing in further messages
 * past 2,000 characters. Writes are throttled per channel to Discord's limit for message writes
 * (5 per 5 s): a partial that finds no room is skipped, the next one (or the final reply, which
 * edits the same messages) shows the newer text. Agent text never pings anyone.
 *
 * Deliberately left out: streaming through an interaction token that is about to expire (the
 * final reply falls back to the channel as before) and editing files in place.
 */
import type { OutboundFile } from '../types.js';
import type { DiscordApi, MessageBody } from './api.js';
import type { ReplyTarget } from './parse.js';
import { splitMessage } from './render.js';

const NO_MENTIONS = { parse: [] as string[] };

/** The messages showing an answer: the interaction's original is `@original`. */
export interface LiveMessages {
  ids: string[];
  contents: string[];
}

/** At most `max` writes per channel in any `windowMs` (Discord: 5 message writes per 5 s per channel). */
export function createWindowLimiter(now: () => number, max = 5, windowMs = 5000) {
  const writes = new Map<string, number[]>();
  return {
    /** Takes a slot if one is free. */
    tryTake(channel: string): boolean {
      const t = now();
      const recent = (writes.get(channel) ?? []).filter((x) => t - x < windowMs);
      if (recent.length >= max) {
        writes.set(channel, recent);
        return false;
      }
      recent.push(t);
      writes.set(channel, recent);
      if (writes.size > 5000) writes.delete(writes.keys().next().value!);
      return true;
    },
    /** Counts a write made without asking (the final reply). */
    note(channel: string): void {
      const t = now();
      writes.set(channel, [...(writes.get(channel) ?? []).filter((x) => t - x < windowMs), t]);
    },
  };
}

export type WindowLimiter = ReturnType<typeof createWindowLimiter>;

/** Writes to the messages of one answer, wherever its target says they live. */
export function liveWriter(api: DiscordApi, t: ReplyTarget) {
  const body = (content: string, first: boolean): MessageBody => {
    const b: MessageBody = { content, allowed_mentions: NO_MENTIONS };
    if (first && t.kind === 'channel' && t.reference && !t.fallback) b.message_reference = { message_id: t.reference, fail_if_not_exists: false };
    return b;
  };
  return {
    channel: t.channel,
    async create(index: number, content: string): Promise<string> {
      if (t.kind === 'interaction') {
        if (index === 0) {
          await api.editOriginal(t.applicationId, t.token, body(content, true));
          return '@original';
        }
        const sent = await api.followUp(t.applicationId, t.token, body(content, false));
        return sent?.id ?? '';
      }
      const sent = await api.createMessage(t.channel, body(content, index === 0));
      return sent?.id ?? '';
    },
    /** Edits a message's text; `files` are attached to it in the same edit. */
    async edit(id: string, content: string, files: OutboundFile[] = []): Promise<void> {
      const b = { content, allowed_mentions: NO_MENTIONS };
      if (t.kind === 'interaction') {
        if (id === '@original') await api.editOriginal(t.applicationId, t.token, b, files);
        else await api.editWebhookMessage(t.applicationId, t.token, id, b, files);
        return;
      }
      await api.editMessage(t.channel, id, b, files);
    },
  };
}

/**
 * Shows `text` in `live`'s messages, within the channel's write budget. Returns false when a
 * write was skipped for lack of budget (nothing else is wrong). Throws what Discord throws.
 */
export async function showPartial(live: LiveMessages, writer: ReturnType<typeof liveWriter>, limiter: WindowLimiter, text: string): Promise<boolean> {
  const parts = splitMessage(text.trim());
  for (const [i, part] of parts.entries()) {
    if (!part) continue;
    if (i < live.ids.length) {
      if (live.contents[i] === part) continue;
      if (!limiter.tryTake(writer.channel)) return false;
      await writer.edit(live.ids[i]!, part);
      live.contents[i] = part;
    } else {
      if (!limiter.tryTake(writer.channel)) return false;
      const id = await writer.create(i, part);
      if (!id) return false;
      live.ids.push(id);
      live.contents.push(part);
    }
  }
  return true;
}
