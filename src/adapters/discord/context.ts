/**
 * Thread context for a Discord turn: when the agent is asked inside an existing thread (a
 * mention or a slash command there), the thread's earlier messages; when a mention replies to
 * another message, that reply chain; bounded by `ThreadContextLimits`. Later turns of the same
 * conversation get only the messages since the agent's last turn (the conversation's cursor is
 * the id of the message, or interaction, that started its last turn: snowflakes are ordered by
 * time). Needs the bot token (Read Message History; message text needs the Message Content intent).
 */
import type { Logger } from '../../log.js';
import { renderThread, type ThreadMessage } from '../thread.js';
import type { InboundEvent, ThreadContextLimits, ThreadCursors } from '../types.js';
import { discordErrorOf, type DiscordApi, type DiscordMessage } from './api.js';
import { conversationChannel, decodeReplyTo } from './parse.js';

const PAGE = 100;
const MAX_PAGES = 3;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const snow = (v: unknown): bigint | undefined => {
  const s = str(v);
  return s && /^\d{1,25}$/.test(s) ? BigInt(s) : undefined;
};

export function createDiscordThreadContext(deps: { api: DiscordApi; logger: Logger; cursors?: ThreadCursors; limits: ThreadContextLimits; botUserId: () => string | undefined }) {
  let warned = false;

  function toMessage(m: DiscordMessage): ThreadMessage {
    const bot = deps.botUserId();
    const id = str(m.author?.id);
    const name = str(m.author?.global_name) ?? str(m.author?.username) ?? 'someone';
    const author = id && id === bot ? 'agent-vm (an agent)' : `${name}${id ? ` (<@${id}>)` : ''}${m.author?.bot === true && id !== bot ? ' [bot]' : ''}`;
    const ts = str(m.timestamp);
    return { author, text: str(m.content) ?? '', files: (m.attachments ?? []).map((a) => str(a.filename) ?? 'file'), ...(ts ? { at: new Date(ts) } : {}) };
  }

  async function history(channel: string, o: { before?: string; after?: string }, max: number): Promise<DiscordMessage[]> {
    const out: DiscordMessage[] = [];
    let before = o.before;
    let after = o.after;
    for (let page = 0; page < MAX_PAGES && out.length <= max; page++) {
      const list = await deps.api.messages(channel, { ...(before ? { before } : {}), ...(after ? { after } : {}), limit: PAGE });
      out.push(...list);
      if (list.length < PAGE) break;
      const ids = list.map((m) => snow(m.id)).filter((x): x is bigint => x !== undefined);
      if (ids.length === 0) break;
      if (after) after = String(ids.reduce((a, b) => (a > b ? a : b)));
      else before = String(ids.reduce((a, b) => (a < b ? a : b)));
    }
    return out;
  }

  return async function threadContext(event: InboundEvent): Promise<string | undefined> {
    const t = decodeReplyTo(event.replyTo);
    const conv = conversationChannel(event.conversation);
    if (!deps.cursors || deps.limits.maxMessages <= 0 || !deps.api.hasBotToken || !t?.at || !conv) return undefined;
    const at = BigInt(t.at);
    const cursor = await deps.cursors.getCursor(event.conversation);
    if (cursor !== undefined && /^\d+$/.test(cursor) && BigInt(cursor) >= at) return undefined; // a retried turn: given already
    let found: DiscordMessage[] = [];
    try {
      if (cursor !== undefined) {
        const bot = deps.botUserId();
        found = (await history(conv.channel, { after: cursor }, deps.limits.maxMessages)).filter((m) => str(m.author?.id) !== bot);
      } else if (t.thread) {
        found = await history(conv.channel, { before: t.at }, deps.limits.maxMessages);
      } else if (t.chain) {
        const channel = t.kind === 'channel' ? (t.fallback ?? t.channel) : t.channel;
        let next: string | undefined = t.chain;
        while (next && found.length < deps.limits.maxMessages) {
          const m: DiscordMessage = await deps.api.message(channel, next);
          found.push(m);
          const ref = str(m.message_reference?.message_id);
          next = ref && (!m.message_reference?.channel_id || m.message_reference.channel_id === channel) ? ref : undefined;
        }
      }
    } catch (err) {
      const e = discordErrorOf(err);
      if (e?.code === 50001 || e?.code === 50013 || e?.status === 403) {
        if (!warned) deps.logger.warn({ code: e.code }, 'discord: thread context unavailable; give the bot Read Message History');
        warned = true;
        return '(The earlier messages of this Discord thread could not be read: the bot lacks the Read Message History permission.)';
      }
      deps.logger.warn({ code: e?.code ?? e?.status }, 'discord: reading the thread failed; no thread context this turn');
      return undefined;
    }
    const earlier = found
      .filter((m) => {
        const id = snow(m.id);
        return id !== undefined && id < at && (cursor === undefined || id > BigInt(cursor));
      })
      .sort((a, b) => (snow(a.id)! < snow(b.id)! ? -1 : 1));
    await deps.cursors.putCursor(event.conversation, t.at);
    return renderThread(earlier.map(toMessage), deps.limits, { first: cursor === undefined });
  };
}
