/**
 * Conversations agent-vm starts itself on Discord (a schedule's `post`), with the bot token:
 *
 *   - a new one: the opener is a channel message, then a thread is started on it (the thread's id
 *     is the message's, as for a mention), and the thread is the conversation. Where the channel
 *     refuses threads (its type, a missing permission), the conversation is the channel itself
 *     and the answer replies to the opener (a reply chain), as a mention there would be answered;
 *   - an existing thread (`target.thread`): checked to be a thread of the target's channel in
 *     the target's guild (`GET /channels/{id}`), then named; nothing is posted.
 *
 * Failures are reported (kind `opener`) and thrown, so the scheduler records the run as failed;
 * a refused thread is reported as shown (the answer still appears, in the channel).
 */
import { AgentVmError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ReportFailure } from '../delivery.js';
import type { OpenedThread, ThreadTarget } from '../types.js';
import { discordErrorOf, type DiscordApi } from './api.js';
import { conversationId, encodeReplyTo } from './parse.js';

const SNOWFLAKE = /^\d{1,25}$/;
const THREAD_TYPES = new Set([10, 11, 12]);
const THREAD_NAME_MAX = 100;
const DISCORD_EPOCH = 1420070400000n;
const NO_MENTIONS = { parse: [] as string[] };

/** A snowflake for this moment: bounds the thread history an existing thread's first run reads. */
export function snowflakeAt(ms: number): string {
  return ((BigInt(ms) - DISCORD_EPOCH) << 22n).toString();
}

function codeOf(err: unknown): string {
  const e = discordErrorOf(err);
  return e ? String(e.code ?? `HTTP ${e.status}`) : isAgentVmError(err) ? err.code : 'error';
}

export function createDiscordOpener(deps: { api: DiscordApi; logger: Logger; report: ReportFailure; now: () => number }) {
  const { api, logger } = deps;

  async function existing(guild: string, channel: string, thread: string): Promise<OpenedThread> {
    const c = await api.channel(thread);
    if (!THREAD_TYPES.has(c.type) || c.parentId !== channel || c.guildId !== guild) {
      throw new AgentVmError('discord_bad_target', `channel ${thread} is not a thread of channel ${channel} in guild ${guild}`, { status: 400 });
    }
    const at = snowflakeAt(deps.now());
    return { conversation: conversationId(guild, thread), replyTo: encodeReplyTo({ kind: 'channel', channel: thread, at, thread: true }) };
  }

  async function fresh(guild: string, channel: string, opener: string, idHint: string): Promise<OpenedThread> {
    const msg = await api.createMessage(channel, { content: opener.slice(0, 2000), allowed_mentions: NO_MENTIONS });
    if (!msg) throw new AgentVmError('discord_api_error', 'Discord channel message: no message id in the answer', { status: 502 });
    try {
      const line = opener.replace(/\s+/g, ' ').trim() || 'Scheduled run';
      const thread = await api.startThread(channel, msg.id, line.length > THREAD_NAME_MAX ? `${line.slice(0, THREAD_NAME_MAX - 1)}…` : line);
      logger.info({ channel, thread }, 'discord: opened a thread for a scheduled run');
      return {
        conversation: conversationId(guild, thread),
        replyTo: encodeReplyTo({ kind: 'channel', channel: thread, reference: msg.id, fallback: channel, at: msg.id }),
      };
    } catch (err) {
      // A channel without threads (its type, or no Create Public Threads permission): a reply chain.
      deps.report({ kind: 'opener', step: 'thread', code: codeOf(err), retryable: false, shown: true }, { eventId: idHint, err });
      return { conversation: conversationId(guild, channel), replyTo: encodeReplyTo({ kind: 'channel', channel, reference: msg.id, at: msg.id }) };
    }
  }

  return async function openThread(target: ThreadTarget, opener: string): Promise<OpenedThread> {
    const a = target.address;
    try {
      if (a.platform !== 'discord' || !SNOWFLAKE.test(a.guild) || !SNOWFLAKE.test(a.channel)) {
        throw new AgentVmError('discord_bad_target', 'a Discord thread needs a Discord address (guild and channel ids)', { status: 400 });
      }
      if (target.thread !== undefined && !SNOWFLAKE.test(target.thread)) {
        throw new AgentVmError('discord_bad_target', `not a Discord thread id: ${target.thread.slice(0, 40)}`, { status: 400 });
      }
      return target.thread !== undefined ? await existing(a.guild, a.channel, target.thread) : await fresh(a.guild, a.channel, opener, target.idHint);
    } catch (err) {
      deps.report({ kind: 'opener', step: target.thread !== undefined ? 'thread' : 'post', code: codeOf(err), retryable: false, shown: false }, { eventId: target.idHint, err });
      throw err;
    }
  };
}
