/**
 * Discord payloads → `InboundEvent`, and the adapter-owned encodings of `conversation` and
 * `replyTo`. Nothing outside this folder parses these strings.
 *
 * Message components (approval buttons) are read here only as far as `data.custom_id`; they never
 * start turns (approvals.ts answers them).
 *
 * Deliberately left out: modal and context-menu interactions (only chat-input slash commands start
 * turns), and any knowledge of which profile serves an address.
 */
import { z } from 'zod';
import type { InboundAttachment, InboundEvent } from '../types.js';

export const InteractionType = { Ping: 1, ApplicationCommand: 2, Component: 3, Autocomplete: 4, Modal: 5 } as const;
export const ResponseType = { Pong: 1, Message: 4, Deferred: 5, DeferredUpdate: 6, UpdateMessage: 7, AutocompleteResult: 8 } as const;
/** Message component types: an action row holds up to five buttons. */
export const ComponentType = { ActionRow: 1, Button: 2 } as const;
/** Button styles (https://discord.com/developers/docs/components/reference#button-button-styles). */
export const ButtonStyle = { Primary: 1, Secondary: 2, Success: 3, Danger: 4, Link: 5 } as const;
export const OptionType = { SubCommand: 1, SubCommandGroup: 2, String: 3, Attachment: 11 } as const;
/** Interaction response flag: only the invoking user sees the message. */
export const EPHEMERAL = 64;
/** Channel types that are threads (announcement, public, private). */
const THREAD_TYPES = new Set([10, 11, 12]);
/** Guild is '@me' for direct messages, so a conversation id always has three parts. */
export const DM_GUILD = '@me';

const snowflake = z.string().regex(/^\d{1,25}$/);

const userSchema = z.looseObject({
  id: snowflake,
  username: z.string().optional(),
  global_name: z.string().nullish(),
  bot: z.boolean().optional(),
});

interface CommandOption {
  name: string;
  type: number;
  value?: unknown;
  options?: CommandOption[];
}
const optionSchema: z.ZodType<CommandOption> = z.lazy(() =>
  z.looseObject({
    name: z.string(),
    type: z.number().int(),
    value: z.unknown().optional(),
    options: z.array(optionSchema).optional(),
  }),
);

const attachmentSchema = z.looseObject({
  id: snowflake,
  filename: z.string(),
  size: z.number().optional(),
  url: z.string(),
  content_type: z.string().optional(),
});

export const interactionSchema = z.looseObject({
  id: snowflake,
  application_id: snowflake,
  type: z.number().int(),
  token: z.string().min(1).optional(),
  guild_id: snowflake.optional(),
  channel_id: snowflake.optional(),
  channel: z.looseObject({ id: snowflake, type: z.number().int(), parent_id: snowflake.nullish() }).optional(),
  member: z.looseObject({ user: userSchema, nick: z.string().nullish() }).optional(),
  user: userSchema.optional(),
  /** The message a component was attached to (component interactions only). */
  message: z.looseObject({ id: snowflake, channel_id: snowflake.optional() }).optional(),
  data: z
    .looseObject({
      /** Command interactions: the command's name. */
      name: z.string().optional(),
      type: z.number().int().optional(),
      /** Component interactions: the pressed component's `custom_id` and type. */
      custom_id: z.string().optional(),
      component_type: z.number().int().optional(),
      options: z.array(optionSchema).optional(),
      resolved: z.looseObject({ attachments: z.record(z.string(), attachmentSchema).optional() }).optional(),
    })
    .optional(),
});
export type Interaction = z.infer<typeof interactionSchema>;

/**
 * What a turn may read before the message (thread context): `at` bounds the history (the
 * person's message, or the interaction: snowflakes are time-ordered), `thread` says the
 * conversation's channel is a thread that existed before (its history counts), `chain` names a
 * message the person replied to (followed up its reply chain).
 */
export interface ContextHints {
  at?: string;
  thread?: boolean;
  chain?: string;
}

/** Where a reply goes. Encoded into `InboundEvent.replyTo`; opaque to everyone else. */
export type ReplyTarget =
  /** The interaction webhook, valid 15 minutes after `issuedAt`; `channel` is the fallback. */
  | ({ kind: 'interaction'; applicationId: string; token: string; issuedAt: number; channel: string; user?: string } & ContextHints)
  /** A channel or thread, with the bot token. `fallback` is used when `channel` is gone (a thread never opened). */
  | ({ kind: 'channel'; channel: string; reference?: string; fallback?: string } & ContextHints);

const hints = { at: snowflake.optional(), thread: z.boolean().optional(), chain: snowflake.optional() };
const replyTargetSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('interaction'),
    applicationId: snowflake,
    token: z.string().min(1),
    issuedAt: z.number(),
    channel: snowflake,
    user: snowflake.optional(),
    ...hints,
  }),
  z.object({ kind: z.literal('channel'), channel: snowflake, reference: snowflake.optional(), fallback: snowflake.optional(), ...hints }),
]);

const REPLY_PREFIX = 'dc1.';

export function encodeReplyTo(target: ReplyTarget): string {
  return REPLY_PREFIX + Buffer.from(JSON.stringify(target), 'utf8').toString('base64url');
}

/** Null when the string is not ours or is damaged; callers then fall back to the conversation. */
export function decodeReplyTo(value: string | undefined): ReplyTarget | null {
  if (!value?.startsWith(REPLY_PREFIX)) return null;
  try {
    const parsed = replyTargetSchema.safeParse(JSON.parse(Buffer.from(value.slice(REPLY_PREFIX.length), 'base64url').toString('utf8')));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export function conversationId(guild: string, channel: string): string {
  return `discord:${guild}:${channel}`;
}

/** The channel (or thread) a conversation lives in, or null when the id is not a Discord conversation. */
export function conversationChannel(conversation: string): { guild: string; channel: string } | null {
  const m = /^discord:(\d{1,25}|@me):(\d{1,25})$/.exec(conversation);
  return m ? { guild: m[1]!, channel: m[2]! } : null;
}

/**
 * Where a message of a conversation goes: the encoded `replyTo` when there is one, else the
 * conversation's channel. Null (refused) when either is not ours: a `replyTo` this adapter did
 * not encode is never replaced by a guess.
 */
export function replyTargetOf(replyTo: string | undefined, conversation: string): ReplyTarget | null {
  const conv = conversationChannel(conversation);
  if (!conv) return null;
  if (replyTo === undefined) return { kind: 'channel', channel: conv.channel };
  return decodeReplyTo(replyTo);
}

function displayName(user: z.infer<typeof userSchema>): string | undefined {
  return user.global_name ?? user.username ?? undefined;
}

/** Options of the invoked (sub)command, subcommand groups flattened. */
function leafOptions(options: CommandOption[] | undefined): CommandOption[] {
  const out: CommandOption[] = [];
  for (const o of options ?? []) {
    if (o.type === OptionType.SubCommand || o.type === OptionType.SubCommandGroup) out.push(...leafOptions(o.options));
    else out.push(o);
  }
  return out;
}

/** `prompt` when the command has it; otherwise every string option, in order. */
export function commandText(options: CommandOption[] | undefined): string {
  const leaves = leafOptions(options).filter((o) => o.type === OptionType.String && typeof o.value === 'string');
  const prompt = leaves.find((o) => o.name === 'prompt');
  if (prompt) return (prompt.value as string).trim();
  return leaves.map((o) => (o.value as string).trim()).filter(Boolean).join('\n');
}

function commandAttachments(interaction: Interaction): InboundAttachment[] {
  const resolved = interaction.data?.resolved?.attachments ?? {};
  return leafOptions(interaction.data?.options)
    .filter((o) => o.type === OptionType.Attachment && typeof o.value === 'string')
    .flatMap((o) => {
      const a = resolved[o.value as string];
      if (!a) return [];
      const att: InboundAttachment = { ref: a.url, name: a.filename };
      if (a.size !== undefined) att.size = a.size;
      if (a.content_type !== undefined) att.mimeType = a.content_type;
      return [att];
    });
}

/**
 * A chat-input command interaction → event. Inside a thread the conversation is the thread and
 * the address is its parent channel, so channel bindings keep matching.
 */
export function commandToEvent(interaction: Interaction, issuedAt: number): InboundEvent | null {
  const user = interaction.member?.user ?? interaction.user;
  if (!interaction.data?.name || !interaction.token || !interaction.channel_id || !user) return null;
  const guild = interaction.guild_id ?? DM_GUILD;
  const inThread = interaction.channel !== undefined && THREAD_TYPES.has(interaction.channel.type);
  const routeChannel = inThread && interaction.channel?.parent_id ? interaction.channel.parent_id : interaction.channel_id;
  const name = interaction.member?.nick ?? displayName(user);
  const attachments = commandAttachments(interaction);
  const event: InboundEvent = {
    id: `discord:${interaction.id}`,
    platform: 'discord',
    address: { platform: 'discord', guild, channel: routeChannel, command: interaction.data.name },
    conversation: conversationId(guild, interaction.channel_id),
    replyTo: encodeReplyTo({
      kind: 'interaction',
      applicationId: interaction.application_id,
      token: interaction.token,
      issuedAt,
      channel: interaction.channel_id,
      user: user.id,
      at: interaction.id,
      ...(inThread ? { thread: true } : {}),
    }),
    user: name === undefined ? { id: user.id } : { id: user.id, name },
    text: commandText(interaction.data.options),
    receivedAt: new Date(issuedAt).toISOString(),
  };
  if (attachments.length > 0) event.attachments = attachments;
  return event;
}

/** What the gateway client knows about a message that addressed the bot. */
export interface MentionMessage {
  id: string;
  content: string;
  botUserId: string;
  author: { id: string; name?: string };
  /** Null in direct messages. */
  guildId: string | null;
  /** The channel the message was posted in (a thread, a text channel or a DM). */
  channelId: string;
  /** The channel bindings match: the parent of a thread, else `channelId`. */
  routeChannelId: string;
  /** Where the turn's replies go: the thread the bot opens (its id is the message id), or `channelId`. */
  conversationChannelId: string;
  attachments: InboundAttachment[];
  createdAt: Date;
  /** The message was posted in a thread that existed before (not one the bot opens for it). */
  inThread?: boolean;
  /** The message it replies to, if any. */
  replyingTo?: string;
}

/** Removes mentions of the bot (`<@id>`, `<@!id>`) and tidies the whitespace they leave. */
export function stripBotMention(content: string, botUserId: string): string {
  return content.replace(new RegExp(`<@!?${botUserId}>`, 'g'), ' ').replace(/[ \t]+/g, ' ').trim();
}

export function mentionToEvent(m: MentionMessage): InboundEvent {
  const guild = m.guildId ?? DM_GUILD;
  const newThread = m.conversationChannelId !== m.channelId;
  const event: InboundEvent = {
    id: `discord:msg:${m.id}`,
    platform: 'discord',
    address: { platform: 'discord', guild, channel: m.routeChannelId },
    conversation: conversationId(guild, m.conversationChannelId),
    replyTo: encodeReplyTo({
      ...(newThread
        ? { kind: 'channel' as const, channel: m.conversationChannelId, reference: m.id, fallback: m.channelId }
        : { kind: 'channel' as const, channel: m.channelId, reference: m.id }),
      at: m.id,
      ...(m.inThread ? { thread: true } : {}),
      ...(m.replyingTo && /^\d{1,25}$/.test(m.replyingTo) ? { chain: m.replyingTo } : {}),
    }),
    user: m.author.name === undefined ? { id: m.author.id } : { id: m.author.id, name: m.author.name },
    text: stripBotMention(m.content, m.botUserId),
    receivedAt: m.createdAt.toISOString(),
  };
  if (m.attachments.length > 0) event.attachments = m.attachments;
  return event;
}
