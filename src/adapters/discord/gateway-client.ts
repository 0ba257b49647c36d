/**
 * @mentions and direct messages through the Discord gateway (discord.js), when a bot token is
 * configured. A mention in a guild text channel opens a thread on the message, and that thread
 * is the conversation; later messages in a thread the bot owns continue it without a mention.
 * In DMs and in existing threads the channel itself is the conversation. Bindings match the
 * parent channel, so binding a channel covers its threads.
 *
 * Deliberately left out: message edits and deletes (a turn runs on the message as sent), and
 * messages from bots and webhooks (never answered, so two bots cannot loop).
 */
import { ChannelType, Client, Events, GatewayIntentBits, Partials, type Message } from 'discord.js';
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { InboundAttachment, InboundEvent, Intake } from '../types.js';
import { discordErrorOf, normalizeApiUrl, type DiscordApi } from './api.js';
import { mentionToEvent, stripBotMention, type MentionMessage } from './parse.js';

/** Discord: "A thread has already been created for this message". */
const THREAD_ALREADY_EXISTS = 160004;
const THREAD_NAME_MAX = 100;

export interface GatewayClientOptions {
  botToken: string;
  apiUrl: string;
  intake: Intake;
  api: DiscordApi;
  logger: Logger;
  /** A mention was stored as a new turn (after which the thread is opened): e.g. react 👀. */
  onAccepted?(event: InboundEvent): void;
  /** Tells deliveries to this channel to wait until the thread the bot is opening exists. */
  opening?(channelId: string, done: Promise<unknown>): void;
}

export interface GatewayClient {
  readonly client: Client;
  /** Resolves when the handler for every message received so far has finished (for tests and shutdown). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

function threadName(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  if (!line) return 'Agent conversation';
  return line.length > THREAD_NAME_MAX ? `${line.slice(0, THREAD_NAME_MAX - 1)}…` : line;
}

function attachmentsOf(message: Message): InboundAttachment[] {
  return [...message.attachments.values()].map((a) => {
    const att: InboundAttachment = { ref: a.url, name: a.name, size: a.size };
    if (a.contentType) att.mimeType = a.contentType;
    return att;
  });
}

/** Whether this message is for the bot, and if so where its conversation lives. Null: ignore it. */
export function classifyMessage(message: Message, botUserId: string): { openThread: boolean; routeChannelId: string } | null {
  if (message.author.bot || message.system || message.webhookId) return null;
  const channel = message.channel;
  if (channel.isDMBased()) return { openThread: false, routeChannelId: message.channelId };
  if (channel.isThread()) {
    const addressed = message.mentions.users.has(botUserId) || channel.ownerId === botUserId;
    return addressed ? { openThread: false, routeChannelId: channel.parentId ?? message.channelId } : null;
  }
  if (!message.mentions.users.has(botUserId)) return null;
  const threadable = channel.type === ChannelType.GuildText || channel.type === ChannelType.GuildAnnouncement;
  return { openThread: threadable, routeChannelId: message.channelId };
}

export async function startGatewayClient(opts: GatewayClientOptions): Promise<GatewayClient> {
  const { intake, api, logger } = opts;
  const client = new Client({
    intents: [
      GatewayIntentBits.Guilds,
      GatewayIntentBits.GuildMessages,
      GatewayIntentBits.MessageContent,
      GatewayIntentBits.DirectMessages,
    ],
    // DM channels are not cached before their first message; without this those messages are dropped.
    partials: [Partials.Channel],
    rest: { api: normalizeApiUrl(opts.apiUrl), version: '10' },
  });
  const inFlight = new Set<Promise<void>>();

  async function openThread(message: Message, text: string): Promise<string> {
    try {
      const thread = await message.startThread({ name: threadName(text), autoArchiveDuration: 1440 });
      return thread.id;
    } catch (err) {
      // A redelivered message already has its thread, with the message's id.
      if (discordErrorOf(err)?.code === THREAD_ALREADY_EXISTS) return message.id;
      logger.warn({ err: describeError(err), channel: message.channelId }, 'discord: could not open a thread; answering in the channel');
      return message.channelId;
    }
  }

  async function handle(message: Message): Promise<void> {
    const me = client.user;
    if (!me) return;
    const kind = classifyMessage(message, me.id);
    if (!kind) return;
    const text = stripBotMention(message.content, me.id);
    // Stored first, opened after: a thread made from a message has the message's id, so the
    // conversation is known before Discord is asked for anything (and a slow API holds nothing).
    const conversationChannelId = kind.openThread ? message.id : message.channelId;
    const input: MentionMessage = {
      id: message.id,
      content: message.content,
      botUserId: me.id,
      author: { id: message.author.id, name: message.member?.displayName ?? message.author.globalName ?? message.author.username },
      guildId: message.guildId,
      channelId: message.channelId,
      routeChannelId: kind.routeChannelId,
      conversationChannelId,
      attachments: attachmentsOf(message),
      createdAt: message.createdAt,
      ...(message.channel.isThread() ? { inThread: true } : {}),
      ...(message.reference?.messageId ? { replyingTo: message.reference.messageId } : {}),
    };
    const event = mentionToEvent(input);
    const result = await intake.accept(event);
    logger.info({ eventId: event.id, status: result.status }, 'discord mention taken in');
    let channel = conversationChannelId;
    if (kind.openThread && result.status !== 'duplicate') {
      const opened = openThread(message, text);
      opts.opening?.(conversationChannelId, opened);
      channel = await opened;
    }
    if (result.status === 'accepted') opts.onAccepted?.(event);
    if (result.status === 'rejected') {
      await api.createMessage(channel, {
        content: result.message,
        allowed_mentions: { parse: [] },
        ...(channel === message.channelId ? { message_reference: { message_id: message.id, fail_if_not_exists: false } } : {}),
      });
    }
  }

  client.on(Events.MessageCreate, (message) => {
    const p = handle(message)
      .catch((err: unknown) => logger.error({ err: describeError(err), messageId: message.id }, 'discord message handling failed'))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  });
  client.on(Events.Error, (err) => logger.error({ err: describeError(err) }, 'discord gateway error'));
  client.on(Events.ShardDisconnect, (ev, shard) => logger.warn({ code: ev.code, shard }, 'discord gateway disconnected for good'));

  try {
    await client.login(opts.botToken);
  } catch (err) {
    await client.destroy().catch(() => undefined);
    throw new AgentVmError('discord_login_failed', `Discord gateway login failed: ${describeError(err)}`, {
      status: 502,
      retryable: !/token/i.test(describeError(err)),
      cause: err,
    });
  }

  let closed = false;
  return {
    client,
    async idle() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
    async close() {
      if (closed) return;
      closed = true;
      await client.destroy();
    },
  };
}
