/**
 * Thread context for a Slack turn: when the agent is mentioned inside an existing thread, the
 * thread's earlier messages (`conversations.replies`, bounded by `ThreadContextLimits`) go into
 * its prompt; later turns in the same thread get only the messages since its last turn (the
 * conversation's cursor is the `ts` of the last message it was given).
 *
 * A token without the history scope (`channels:history`, `groups:history`, `im:history`) gets
 * no context and the agent is told why; the operator is told once.
 */
import type { Logger } from '../../log.js';
import { renderThread, type ThreadMessage } from '../thread.js';
import type { InboundEvent, ThreadContextLimits, ThreadCursors } from '../types.js';
import { failureCode, neededScope, slackErrorCode, type SlackApi } from './api.js';
import { decodeConversation, decodeReplyTo } from './parse.js';

/** Pages of `conversations.replies` read for one turn at most (200 messages each). */
const MAX_PAGES = 5;

interface SlackMessage {
  ts?: unknown;
  user?: unknown;
  bot_id?: unknown;
  username?: unknown;
  bot_profile?: { name?: unknown } | null;
  text?: unknown;
  files?: Array<{ name?: unknown; title?: unknown }> | null;
  subtype?: unknown;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Slack ts strings compare as numbers ("1700000000.000100"); as strings they differ in length only past 2286. */
function tsLess(a: string, b: string): boolean {
  return Number(a) < Number(b);
}

function toThreadMessage(m: SlackMessage, botUserId: string | undefined): ThreadMessage {
  const user = str(m.user);
  const bot = str(m.bot_id) !== undefined;
  const name = bot ? (str(m.bot_profile?.name) ?? str(m.username) ?? 'a bot') : undefined;
  const author = user === botUserId && botUserId ? 'agent-vm (an agent)' : user ? `<@${user}>${name ? ` (${name})` : ''}` : (name ?? 'someone');
  const files = (m.files ?? []).map((f) => str(f.name) ?? str(f.title) ?? 'file');
  const ts = str(m.ts);
  return { author, text: str(m.text) ?? '', files, ...(ts ? { at: new Date(Number(ts) * 1000) } : {}) };
}

export function createThreadContext(deps: { api: SlackApi; logger: Logger; cursors?: ThreadCursors; limits: ThreadContextLimits; botUserId: () => string | undefined }) {
  let warnedScope = false;

  /** The prompt section for this turn, or undefined (no thread, nothing new, or no cursor store). */
  return async function threadContext(event: InboundEvent): Promise<string | undefined> {
    if (!deps.cursors || deps.limits.maxMessages <= 0) return undefined;
    const conv = decodeConversation(event.conversation);
    const own = decodeReplyTo(event.replyTo);
    if (!conv || !own) return undefined;
    const cursor = await deps.cursors.getCursor(event.conversation);
    // A mention that starts its thread has no history; remember where the thread begins.
    if (own.ts === conv.threadTs && cursor === undefined) {
      await deps.cursors.putCursor(event.conversation, own.ts);
      return undefined;
    }
    if (cursor !== undefined && !tsLess(cursor, own.ts)) return undefined; // a retried turn: given already
    const messages: SlackMessage[] = [];
    let next: string | undefined;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        const res = await deps.api.call('conversations.replies', {
          channel: conv.channel,
          ts: conv.threadTs,
          latest: own.ts,
          inclusive: false,
          limit: 200,
          ...(cursor !== undefined ? { oldest: cursor } : {}),
          ...(next ? { cursor: next } : {}),
        });
        messages.push(...((Array.isArray(res.messages) ? res.messages : []) as SlackMessage[]));
        next = str((res.response_metadata as { next_cursor?: unknown } | undefined)?.next_cursor);
        if (!next || res.has_more === false) break;
      }
    } catch (err) {
      const code = slackErrorCode(err);
      if (code === 'missing_scope' || code === 'not_in_channel' || code === 'channel_not_found') {
        const scope = neededScope(err) ?? 'channels:history, groups:history and im:history';
        if (!warnedScope) deps.logger.warn({ code, scope }, `slack: thread context unavailable (${code}); add the ${scope} scope`);
        warnedScope = true;
        return `(The earlier messages of this Slack thread could not be read: ${code === 'missing_scope' ? `the app lacks the ${scope} scope` : code}.)`;
      }
      deps.logger.warn({ code: failureCode(err) }, 'slack: reading the thread failed; no thread context this turn');
      return undefined;
    }
    const bot = deps.botUserId();
    const earlier = messages
      .filter((m) => {
        const ts = str(m.ts);
        if (!ts || !tsLess(ts, own.ts) || (cursor !== undefined && !tsLess(cursor, ts))) return false;
        // Later turns: the agent's own answers are already in its session.
        if (cursor !== undefined && bot && str(m.user) === bot) return false;
        return m.subtype === undefined || m.subtype === 'file_share' || m.subtype === 'bot_message' || m.subtype === 'thread_broadcast';
      })
      .sort((a, b) => Number(a.ts) - Number(b.ts));
    await deps.cursors.putCursor(event.conversation, own.ts);
    return renderThread(
      earlier.map((m) => toThreadMessage(m, bot)),
      deps.limits,
      { first: cursor === undefined },
    );
  };
}
