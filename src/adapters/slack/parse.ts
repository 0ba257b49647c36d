/**
 * Slack Events API envelopes → `InboundEvent`. Shared by the HTTP endpoint and Socket Mode (whose
 * `events_api` payload is the same `event_callback` envelope).
 *
 * Handled: `url_verification`, `app_mention` (channels) and `message` in DMs (`channel_type: im`),
 * plain or with files. Ignored on purpose: bot messages (ours included, so the agent never answers
 * itself), edits, deletions, joins and every other subtype or event type.
 */
import { z } from 'zod';
import type { InboundAttachment, InboundEvent } from '../types.js';

const fileSchema = z.looseObject({
  id: z.string().optional(),
  name: z.string().optional(),
  title: z.string().optional(),
  mimetype: z.string().optional(),
  size: z.number().optional(),
  url_private: z.string().optional(),
  url_private_download: z.string().optional(),
});

const eventSchema = z.looseObject({
  type: z.string(),
  subtype: z.string().optional(),
  channel: z.string().optional(),
  channel_type: z.string().optional(),
  user: z.string().optional(),
  bot_id: z.string().optional(),
  team: z.string().optional(),
  text: z.string().optional(),
  ts: z.string().optional(),
  thread_ts: z.string().optional(),
  files: z.array(fileSchema).optional(),
});

const envelopeSchema = z.looseObject({
  type: z.string(),
  challenge: z.string().optional(),
  team_id: z.string().optional(),
  event_id: z.string().optional(),
  event: eventSchema.optional(),
  authorizations: z
    .array(z.looseObject({ user_id: z.string().optional(), is_bot: z.boolean().optional() }))
    .optional(),
});

export type SlackEnvelope = z.infer<typeof envelopeSchema>;
export type SlackEvent = z.infer<typeof eventSchema>;

export type ParseResult =
  | { kind: 'challenge'; challenge: string }
  | { kind: 'event'; event: InboundEvent }
  | { kind: 'ignore'; reason: string }
  | { kind: 'invalid'; reason: string };

/** Validates the outer shape of a (verified) Events API payload. */
export function readEnvelope(payload: unknown): SlackEnvelope | undefined {
  const r = envelopeSchema.safeParse(payload);
  return r.success ? r.data : undefined;
}

/** True when the envelope carries an event we might answer, i.e. one that needs the bot user id. */
export function isCandidate(env: SlackEnvelope): boolean {
  const e = env.event;
  if (env.type !== 'event_callback' || !e) return false;
  return e.type === 'app_mention' || (e.type === 'message' && e.channel_type === 'im');
}

/** The bot user id Slack put in the envelope itself, when present (saves an auth.test call). */
export function botUserIdFromEnvelope(env: SlackEnvelope): string | undefined {
  return env.authorizations?.find((a) => a.is_bot)?.user_id;
}

/** Subtypes that are a person saying something new; everything else (edits, joins...) is ignored. */
const ANSWERED_SUBTYPES = new Set([undefined, 'file_share']);

export function parseEnvelope(env: SlackEnvelope, ctx: { botUserId?: string; receivedAt: string }): ParseResult {
  if (env.type === 'url_verification') {
    return env.challenge ? { kind: 'challenge', challenge: env.challenge } : { kind: 'invalid', reason: 'no challenge' };
  }
  if (env.type !== 'event_callback') return { kind: 'ignore', reason: `envelope ${env.type}` };
  const e = env.event;
  if (!e) return { kind: 'invalid', reason: 'event_callback without event' };
  if (!isCandidate(env)) return { kind: 'ignore', reason: `event ${e.type}${e.channel_type ? `/${e.channel_type}` : ''}` };
  if (!ANSWERED_SUBTYPES.has(e.subtype)) return { kind: 'ignore', reason: `subtype ${e.subtype}` };
  if (e.bot_id || (ctx.botUserId !== undefined && e.user === ctx.botUserId)) return { kind: 'ignore', reason: 'bot message' };
  const team = env.team_id ?? e.team;
  if (!env.event_id || !team || !e.channel || !e.ts || !e.user) {
    return { kind: 'invalid', reason: 'event lacks event_id, team, channel, ts or user' };
  }
  const attachments = (e.files ?? []).flatMap((f): InboundAttachment[] => {
    const ref = f.url_private_download ?? f.url_private;
    if (!ref) return []; // tombstoned or Slack Connect files without a URL
    return [{
      ref,
      name: f.name ?? f.title ?? f.id ?? 'file',
      ...(f.size !== undefined ? { size: f.size } : {}),
      ...(f.mimetype !== undefined ? { mimeType: f.mimetype } : {}),
    }];
  });
  const event: InboundEvent = {
    id: `slack:${env.event_id}`,
    platform: 'slack',
    address: { platform: 'slack', team, channel: e.channel },
    conversation: encodeConversation(team, e.channel, e.thread_ts ?? e.ts),
    ...(decodeReplyTo(encodeReplyTo(e.ts, e.user)) ? { replyTo: encodeReplyTo(e.ts, e.user) } : {}),
    user: { id: e.user },
    text: cleanText(e.text ?? '', ctx.botUserId),
    receivedAt: ctx.receivedAt,
  };
  if (attachments.length > 0) event.attachments = attachments;
  return { kind: 'event', event };
}

/**
 * Slack's message text → what a person typed: the bot's own mention removed, links unwrapped,
 * entities decoded. Other mentions stay as `<@U…>` so the agent can tell people apart. Without a
 * known bot id, only a leading mention is removed (that is where Slack puts the one addressing us).
 */
export function cleanText(text: string, botUserId: string | undefined): string {
  let t = botUserId
    ? text.replace(new RegExp(`<@${escapeRegExp(botUserId)}(\\|[^>]*)?>`, 'g'), ' ')
    : text.replace(/^\s*<@[UW][A-Z0-9]+(\|[^>]*)?>/, ' ');
  t = t
    .replace(/<((?:https?|mailto):[^|>]+)\|([^>]+)>/g, (_m, url: string, label: string) => (label === url ? url : `${label} (${url})`))
    .replace(/<((?:https?|mailto):[^>]+)>/g, '$1')
    .replace(/<#[CG][A-Z0-9]+\|([^>]+)>/g, '#$1')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
  return t.replace(/[ \t]{2,}/g, ' ').trim();
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The opaque conversation id: `slack:<team>:<channel>:<thread_ts>`. Only this adapter decodes it. */
export function encodeConversation(team: string, channel: string, threadTs: string): string {
  return `slack:${team}:${channel}:${threadTs}`;
}

/**
 * The person's own message inside the thread, as `replyTo`: its `ts` (reactions go on it, thread
 * context ends before it) and who wrote it (the recipient of a streamed answer).
 */
export function encodeReplyTo(ts: string, user: string): string {
  return `slack-msg:${ts}:${user}`;
}

/** Whether this adapter made `replyTo` (a Slack message reference), whatever its content. */
export function isOwnReplyTo(replyTo: string): boolean {
  return replyTo.startsWith('slack-msg:');
}

export function decodeReplyTo(replyTo: string | undefined): { ts: string; user: string } | undefined {
  const m = replyTo === undefined ? null : /^slack-msg:(\d+\.\d+):([A-Z0-9]{1,32})$/.exec(replyTo);
  return m ? { ts: m[1]!, user: m[2]! } : undefined;
}

export function decodeConversation(conversation: string): { team: string; channel: string; threadTs: string } | undefined {
  const m = /^slack:([^:]+):([^:]+):(\d+\.\d+)$/.exec(conversation);
  if (!m) return undefined;
  return { team: m[1]!, channel: m[2]!, threadTs: m[3]! };
}
