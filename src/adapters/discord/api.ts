/**
 * The Discord REST calls the adapter makes, through @discordjs/rest (which queues per route and
 * waits out 429s by `Retry-After`), pointed at `apiUrl` so tests and proxies can stand in.
 * Errors become `AgentVmError('discord_api_error')`, retryable for 429, 5xx and network failures.
 *
 * Interaction webhooks are called without the bot token (the interaction token is the
 * credential); a second REST instance carries the bot token, so a 401 on one never clears the
 * other's token.
 */
import { DiscordAPIError, HTTPError, RateLimitError, REST, type RawFile } from '@discordjs/rest';
import { AgentVmError } from '../../errors.js';
import type { OutboundFile } from '../types.js';

/** The JSON part of a message we send. `allowed_mentions` is always set by the adapter. */
export interface MessageBody {
  content?: string;
  flags?: number;
  allowed_mentions?: { parse: string[]; users?: string[]; replied_user?: boolean };
  message_reference?: { message_id: string; fail_if_not_exists?: boolean };
  /** Message components (action rows of buttons); `[]` on an edit removes them. */
  components?: unknown[];
}

/** What Discord answered about a message it created. Null when the answer did not say. */
export type SentMessage = { id: string; channelId: string | null } | null;

function sentMessage(res: unknown): SentMessage {
  const m = res as { id?: unknown; channel_id?: unknown } | null;
  if (!m || typeof m.id !== 'string') return null;
  return { id: m.id, channelId: typeof m.channel_id === 'string' ? m.channel_id : null };
}

export interface ApplicationCommandBody {
  name: string;
  description: string;
  type?: number;
  options?: unknown[];
  [key: string]: unknown;
}

export interface DiscordApiOptions {
  apiUrl: string;
  botToken?: string;
  /** Per request, ms. Default 15 s. */
  timeoutMs?: number;
  /** Retries of 5xx and network failures per request (429s are always waited out). Default 2. */
  retries?: number;
}

/** Discord's own error code (e.g. 50027 invalid webhook token, 10003 unknown channel), when there is one. */
export function discordErrorOf(err: unknown): { status: number; code: number | string | undefined } | null {
  const cause = err instanceof AgentVmError ? err.cause : err;
  if (cause instanceof DiscordAPIError) return { status: cause.status, code: cause.code };
  if (cause instanceof HTTPError) return { status: cause.status, code: undefined };
  return null;
}

export function toDiscordError(err: unknown, what: string): AgentVmError {
  if (err instanceof AgentVmError) return err;
  if (err instanceof DiscordAPIError) {
    const retryable = err.status === 429 || err.status >= 500;
    return new AgentVmError('discord_api_error', `Discord ${what} failed: ${err.status} ${err.message} (code ${String(err.code)})`, {
      status: 502,
      retryable,
      cause: err,
    });
  }
  if (err instanceof HTTPError) {
    return new AgentVmError('discord_api_error', `Discord ${what} failed: ${err.status} ${err.message}`, {
      status: 502,
      retryable: err.status === 429 || err.status >= 500,
      cause: err,
    });
  }
  if (err instanceof RateLimitError) {
    return new AgentVmError('discord_api_error', `Discord ${what} rate limited`, { status: 502, retryable: true, cause: err });
  }
  // Network errors, timeouts (AbortError): the request may or may not have landed; retrying is the lesser harm.
  const message = err instanceof Error ? err.message : String(err);
  return new AgentVmError('discord_api_error', `Discord ${what} failed: ${message}`, { status: 502, retryable: true, cause: err });
}

function rawFiles(files: OutboundFile[]): RawFile[] {
  return files.map((f, i) => ({ name: f.name, data: f.data, key: `files[${i}]` }));
}

/** Adds the `attachments` array Discord needs to pair `files[n]` with their names. */
function withAttachments(body: MessageBody, files: OutboundFile[]): Record<string, unknown> {
  return files.length === 0 ? { ...body } : { ...body, attachments: files.map((f, i) => ({ id: i, filename: f.name })) };
}

/** A message as `GET /channels/{id}/messages` returns it (fields read defensively by callers). */
export interface DiscordMessage {
  id?: unknown;
  content?: unknown;
  author?: { id?: unknown; username?: unknown; global_name?: unknown; bot?: unknown } | null;
  attachments?: Array<{ filename?: unknown }> | null;
  timestamp?: unknown;
  message_reference?: { message_id?: unknown; channel_id?: unknown } | null;
  type?: unknown;
}

export interface DiscordApi {
  readonly hasBotToken: boolean;
  /** The bot user (`GET /users/@me`), to check the bot token. */
  me(): Promise<{ id: string; username: string }>;
  /** Messages of a channel, newest first (at most 100), before or after a message id. */
  messages(channelId: string, q: { before?: string; after?: string; limit: number }): Promise<DiscordMessage[]>;
  message(channelId: string, messageId: string): Promise<DiscordMessage>;
  /** Adds (or removes) the bot's reaction, a unicode emoji. */
  react(channelId: string, messageId: string, emoji: string, on: boolean): Promise<void>;
  editOriginal(applicationId: string, token: string, body: MessageBody, files?: OutboundFile[]): Promise<void>;
  followUp(applicationId: string, token: string, body: MessageBody, files?: OutboundFile[]): Promise<SentMessage>;
  createMessage(channelId: string, body: MessageBody, files?: OutboundFile[]): Promise<SentMessage>;
  /** Edits a message the interaction webhook created (a follow-up), by id; `files` are added to it. */
  editWebhookMessage(applicationId: string, token: string, messageId: string, body: MessageBody, files?: OutboundFile[]): Promise<void>;
  /** Edits a message the bot (or the application's interactions) posted, with the bot token; `files` are added to it. */
  editMessage(channelId: string, messageId: string, body: MessageBody, files?: OutboundFile[]): Promise<void>;
  triggerTyping(channelId: string): Promise<void>;
  /** Starts a thread on a message (its id becomes the thread's); returns the thread channel id. */
  startThread(channelId: string, messageId: string, name: string): Promise<string>;
  /** A channel or thread (`GET /channels/{id}`): its type, guild and parent. */
  channel(channelId: string): Promise<{ id: string; type: number; guildId: string | null; parentId: string | null }>;
  putCommands(applicationId: string, guildId: string | undefined, commands: ApplicationCommandBody[]): Promise<unknown>;
  close(): void;
}

export function normalizeApiUrl(apiUrl: string): string {
  return apiUrl.replace(/\/+$/, '');
}

export function createDiscordApi(opts: DiscordApiOptions): DiscordApi {
  const base = {
    api: normalizeApiUrl(opts.apiUrl),
    version: '10',
    timeout: opts.timeoutMs ?? 15_000,
    retries: opts.retries ?? 2,
  };
  const webhooks = new REST(base);
  const bot = opts.botToken ? new REST(base).setToken(opts.botToken) : null;

  function needBot(what: string): REST {
    if (!bot) {
      throw new AgentVmError('discord_not_configured', `Discord ${what} needs DISCORD_BOT_TOKEN`, { status: 500, retryable: false });
    }
    return bot;
  }

  async function call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw toDiscordError(err, what);
    }
  }

  return {
    hasBotToken: bot !== null,

    async me() {
      const rest = needBot('checking the bot token');
      const u = (await call('bot user lookup', () => rest.get('/users/@me'))) as { id?: unknown; username?: unknown };
      return { id: String(u.id), username: typeof u.username === 'string' ? u.username : String(u.id) };
    },

    async messages(channelId, q) {
      const rest = needBot('reading a channel');
      const query = new URLSearchParams({ limit: String(Math.min(Math.max(q.limit, 1), 100)) });
      if (q.before) query.set('before', q.before);
      if (q.after) query.set('after', q.after);
      const res = await call('channel history', () => rest.get(`/channels/${channelId}/messages`, { query }));
      return Array.isArray(res) ? (res as DiscordMessage[]) : [];
    },

    async message(channelId, messageId) {
      const rest = needBot('reading a message');
      return (await call('message lookup', () => rest.get(`/channels/${channelId}/messages/${messageId}`))) as DiscordMessage;
    },

    async react(channelId, messageId, emoji, on) {
      const rest = needBot('reacting');
      const route = `/channels/${channelId}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}/@me` as const;
      await call('reaction', () => (on ? rest.put(route) : rest.delete(route)));
    },

    async editOriginal(applicationId, token, body, files = []) {
      await call('edit of the interaction response', () =>
        webhooks.patch(`/webhooks/${applicationId}/${token}/messages/@original`, {
          auth: false,
          body: withAttachments(body, files),
          files: rawFiles(files),
        }),
      );
    },

    async followUp(applicationId, token, body, files = []) {
      const res = await call('interaction follow-up', () =>
        webhooks.post(`/webhooks/${applicationId}/${token}`, { auth: false, body: withAttachments(body, files), files: rawFiles(files) }),
      );
      return sentMessage(res);
    },

    async createMessage(channelId, body, files = []) {
      const rest = needBot('posting to a channel');
      const res = await call('channel message', () =>
        rest.post(`/channels/${channelId}/messages`, { body: withAttachments(body, files), files: rawFiles(files) }),
      );
      return sentMessage(res);
    },

    async editWebhookMessage(applicationId, token, messageId, body, files = []) {
      await call('edit of an interaction follow-up', () =>
        webhooks.patch(`/webhooks/${applicationId}/${token}/messages/${messageId}`, { auth: false, body: withAttachments(body, files), files: rawFiles(files) }),
      );
    },

    async editMessage(channelId, messageId, body, files = []) {
      const rest = needBot('editing a channel message');
      await call('message edit', () => rest.patch(`/channels/${channelId}/messages/${messageId}`, { body: withAttachments(body, files), files: rawFiles(files) }));
    },

    async triggerTyping(channelId) {
      const rest = needBot('typing');
      await call('typing indicator', () => rest.post(`/channels/${channelId}/typing`));
    },

    async startThread(channelId, messageId, name) {
      const rest = needBot('opening a thread');
      const res = (await call('thread start', () => rest.post(`/channels/${channelId}/messages/${messageId}/threads`, { body: { name, auto_archive_duration: 1440 } }))) as { id?: unknown };
      return typeof res?.id === 'string' ? res.id : messageId;
    },

    async channel(channelId) {
      const rest = needBot('reading a channel');
      const c = (await call('channel lookup', () => rest.get(`/channels/${channelId}`))) as { id?: unknown; type?: unknown; guild_id?: unknown; parent_id?: unknown };
      return {
        id: String(c.id),
        type: typeof c.type === 'number' ? c.type : -1,
        guildId: typeof c.guild_id === 'string' ? c.guild_id : null,
        parentId: typeof c.parent_id === 'string' ? c.parent_id : null,
      };
    },

    async putCommands(applicationId, guildId, commands) {
      const rest = needBot('registering commands');
      const route = guildId ? `/applications/${applicationId}/guilds/${guildId}/commands` : `/applications/${applicationId}/commands`;
      return call('command registration', () => rest.put(route as `/${string}`, { body: commands }));
    },

    close() {
      for (const r of [webhooks, bot]) {
        r?.clearHashSweeper();
        r?.clearHandlerSweeper();
      }
    },
  };
}
