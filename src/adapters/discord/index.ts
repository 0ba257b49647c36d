/**
 * The Discord channel adapter: slash commands over HTTP interactions (`POST /discord/interactions`,
 * Ed25519-verified), @mentions and DMs over the gateway when a bot token is set, answers and
 * files back through the interaction webhook or the channel.
 *
 * Message components: only the approval buttons (approvals.ts). A press comes in as a
 * MESSAGE_COMPONENT interaction on the same URL, is checked by the `ApprovalDesk` and acknowledged
 * within Discord's 3 s (a deferred update, or an ephemeral refusal told to the presser alone);
 * other components are acknowledged and ignored.
 *
 * Answers show while they are written (the deferred response or a reply, edited as the text
 * grows; deliver.ts, live.ts), mentions get 👀/✅/⚠️ (reactions.ts), and a turn in an existing
 * thread or reply chain reads it (context.ts). No Discord call happens before an interaction is
 * answered: the intake stores the event and Discord gets its deferral.
 *
 * Deliberately left out: which profile answers (the intake's router decides from `address`),
 * other message components, modals, and editing or deleting answers after the turn.
 */
import { Hono } from 'hono';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from '../../body-limit.js';
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { failureReporter } from '../delivery.js';
import type { ApprovalDesk, ChannelAdapter, CredentialCheck, DeliveryFailure, InboundEvent, Intake, IntakeResult, ThreadContextLimits, ThreadCursors, ThreadOpener } from '../types.js';
import { createDiscordApi, discordErrorOf } from './api.js';
import { createDiscordApprovals } from './approvals.js';
import { createDiscordThreadContext } from './context.js';
import { createDeliverer } from './deliver.js';
import { createWindowLimiter } from './live.js';
import { createDiscordOpener } from './open.js';
import { createReactions } from './reactions.js';
import { fetchAttachments } from './fetch.js';
import type { GatewayClient } from './gateway-client.js';
import { commandToEvent, decodeReplyTo, EPHEMERAL, interactionSchema, InteractionType, ResponseType, type Interaction } from './parse.js';
import { DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_UPLOAD_BYTES } from './render.js';
import { createInteractionVerifier } from './verify.js';

export { registerCommands, commandsForBindings, commandBody, DEFAULT_COMMAND, type CommandSpec, type RegisterCommandsOptions } from './commands.js';
export { createInteractionVerifier } from './verify.js';
export { INTERACTION_TOKEN_SAFE_MS } from './deliver.js';

export interface DiscordAdapterOptions {
  /** The application's Ed25519 public key, 64 hex characters (DISCORD_PUBLIC_KEY). */
  publicKey: string;
  applicationId: string;
  /** Enables @mentions/DMs (the gateway) and channel posts after the interaction token expires. */
  botToken?: string;
  /** REST base, e.g. https://discord.com/api (no version); the gateway URL is looked up through it. */
  apiUrl: string;
  intake: Intake;
  logger: Logger;
  /** Answers approval buttons (message components). Without it a press is told approvals are not answered here. */
  approvals?: ApprovalDesk;
  /** Clock for the interaction token's 15-minute life. */
  now?: () => number;
  /** At most one progress edit per event per interval. Default 1500 ms. */
  progressIntervalMs?: number;
  /** Per-message upload cap (the whole request). Default 25 MiB, Discord's cap for unboosted guilds. */
  maxUploadBytes?: number;
  /** Per-file cap; a larger file is named with its size instead. Default 10 MiB, Discord's limit for bots. */
  maxFileBytes?: number;
  /** Where thread cursors live; without it no thread context is fetched. */
  threads?: ThreadCursors;
  /** How much thread history a turn gets. Default 50 messages, 20,000 characters. */
  threadLimits?: ThreadContextLimits;
  /** Every delivery failure (see `DeliveryFailure`), e.g. for metrics. */
  onDeliveryFailure?: (f: DeliveryFailure) => void;
  /** Discord wants an answer within 3 s; past this the adapter defers without the intake's verdict. Default 2500 ms. */
  ackDeadlineMs?: number;
}

export interface DiscordAdapter extends ChannelAdapter, ThreadOpener {
  readonly platform: 'discord';
  readonly routes: Hono;
  /** The gateway client once `start()` connected it (tests use `idle()`). */
  readonly gateway: GatewayClient | null;
  start(): Promise<void>;
  fetchContext: NonNullable<ChannelAdapter['fetchContext']>;
  checkCredentials(): Promise<CredentialCheck>;
  close(): Promise<void>;
}

const NO_MENTIONS = { parse: [] as string[] };

function ephemeral(content: string) {
  return { type: ResponseType.Message, data: { content, flags: EPHEMERAL, allowed_mentions: NO_MENTIONS } };
}

export function createDiscordAdapter(opts: DiscordAdapterOptions): DiscordAdapter {
  const now = opts.now ?? Date.now;
  const logger = opts.logger;
  const verifier = createInteractionVerifier(opts.publicKey);
  const api = createDiscordApi({ apiUrl: opts.apiUrl, ...(opts.botToken ? { botToken: opts.botToken } : {}) });
  const report = failureReporter('discord', logger, opts.onDeliveryFailure);
  const reactions = createReactions({ api, logger, report });
  /** Threads the gateway client is opening, by their (future) channel id: deliveries wait for them. */
  const opening = new Map<string, Promise<unknown>>();
  let botUserId: string | undefined;
  const deliverer = createDeliverer({
    api,
    logger,
    now,
    progressIntervalMs: opts.progressIntervalMs ?? 1500,
    maxUploadBytes: opts.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES,
    maxFileBytes: opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES,
    limiter: createWindowLimiter(now),
    reactions,
    report,
    opened: (channel) => opening.get(channel) ?? Promise.resolve(),
  });
  const threadContext = createDiscordThreadContext({
    api,
    logger,
    ...(opts.threads ? { cursors: opts.threads } : {}),
    limits: opts.threadLimits ?? { maxMessages: 50, maxChars: 20_000 },
    botUserId: () => botUserId ?? gateway?.client.user?.id,
  });
  const ackDeadlineMs = opts.ackDeadlineMs ?? 2500;
  const approvals = createDiscordApprovals({ api, logger, now, ackDeadlineMs, ...(opts.approvals ? { desk: opts.approvals } : {}) });
  let gateway: GatewayClient | null = null;
  let closed = false;

  /** The intake's verdict, or 'late' when it did not come in time to answer Discord. */
  async function acceptInTime(event: InboundEvent, interaction: Interaction): Promise<IntakeResult | 'late'> {
    const verdict = opts.intake.accept(event);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), ackDeadlineMs);
    });
    const first = await Promise.race([verdict, late]).finally(() => clearTimeout(timer));
    if (first === 'late') {
      // Already deferred: a rejection can only be told by editing the (public) original.
      void verdict
        .then(async (r) => {
          if (r.status !== 'rejected' || !interaction.token) return;
          await api.editOriginal(interaction.application_id, interaction.token, { content: r.message, allowed_mentions: NO_MENTIONS });
        })
        .catch((err: unknown) => logger.error({ err: describeError(err), eventId: event.id }, 'discord: late intake failed'));
    }
    return first;
  }

  async function onCommand(interaction: Interaction) {
    const event = commandToEvent(interaction, now());
    if (!event) return ephemeral('agent-vm could not read this command.');
    if (!event.text && !event.attachments) return ephemeral('Tell the agent what you need: add a `prompt`.');
    let result: IntakeResult | 'late';
    try {
      result = await acceptInTime(event, interaction);
    } catch (err) {
      logger.error({ err: describeError(err), eventId: event.id }, 'discord: intake failed');
      return ephemeral('agent-vm could not take this request right now. Please try again in a moment.');
    }
    const status = result === 'late' ? 'late' : result.status;
    logger.info({ eventId: event.id, status, command: interaction.data?.name }, 'discord command taken in');
    if (result !== 'late' && result.status === 'rejected') return ephemeral(result.message);
    return { type: ResponseType.Deferred };
  }

  const routes = new Hono();
  // Interactions are a few KiB; the limit holds before the signature can be checked.
  routes.post('/discord/interactions', limitBody(DEFAULT_MAX_BODY_BYTES), async (c) => {
    const raw = new Uint8Array(await c.req.arrayBuffer());
    if (!verifier(c.req.header('x-signature-ed25519'), c.req.header('x-signature-timestamp'), raw)) {
      logger.warn('discord interaction with a missing or bad signature');
      throw new AgentVmError('invalid_signature', 'bad request signature', { status: 401 });
    }
    let parsed;
    try {
      parsed = interactionSchema.safeParse(JSON.parse(Buffer.from(raw).toString('utf8')));
    } catch {
      throw new AgentVmError('bad_request', 'body is not JSON', { status: 400 });
    }
    if (!parsed.success) throw new AgentVmError('bad_request', 'not a Discord interaction', { status: 400 });
    const interaction = parsed.data;
    if (interaction.application_id !== opts.applicationId) {
      logger.warn({ applicationId: interaction.application_id }, 'discord interaction for another application');
      throw new AgentVmError('wrong_application', 'interaction is for another application', { status: 400 });
    }
    switch (interaction.type) {
      case InteractionType.Ping:
        return c.json({ type: ResponseType.Pong });
      case InteractionType.ApplicationCommand:
        // Only chat-input commands start turns; user and message context menus are not offered.
        if (interaction.data?.type !== undefined && interaction.data.type !== 1) return c.json(ephemeral('This command type is not supported.'));
        return c.json(await onCommand(interaction));
      case InteractionType.Component:
        return c.json(await approvals.interact(interaction));
      case InteractionType.Autocomplete:
        return c.json({ type: ResponseType.AutocompleteResult, data: { choices: [] } });
      default:
        return c.json(ephemeral('This interaction is not supported.'));
    }
  });

  return {
    platform: 'discord',
    routes,
    get gateway() {
      return gateway;
    },

    async start() {
      if (gateway || closed) return;
      if (!opts.botToken) {
        logger.info('discord: no bot token; slash commands only (no @mentions, no channel posts after 15 minutes)');
        return;
      }
      // discord.js (~40 MB resident) is loaded only when the gateway connection is wanted.
      const { startGatewayClient } = await import('./gateway-client.js');
      gateway = await startGatewayClient({
        botToken: opts.botToken,
        apiUrl: opts.apiUrl,
        intake: opts.intake,
        api,
        logger,
        onAccepted(event) {
          const t = decodeReplyTo(event.replyTo);
          if (t?.kind === 'channel' && t.reference) void reactions.received(t.fallback ?? t.channel, t.reference);
        },
        opening(channel, done) {
          const settled = done.then(() => undefined, () => undefined).finally(() => {
            if (opening.get(channel) === settled) opening.delete(channel);
          });
          opening.set(channel, settled);
        },
      });
      logger.info('discord gateway connected');
    },

    send: (message) => deliverer.send(message),

    openThread: createDiscordOpener({ api, logger, report, now }),

    askApproval: (prompt) => approvals.ask(prompt),
    approvalSettled: (prompt, outcome) => approvals.settled(prompt, outcome),

    async fetchContext(event, limits) {
      const [ctx, preamble] = await Promise.all([fetchAttachments(event, limits), event.platform === 'discord' ? threadContext(event) : undefined]);
      return preamble ? { ...ctx, preamble } : ctx;
    },

    async checkCredentials(): Promise<CredentialCheck> {
      if (!opts.botToken) return { ok: true, platform: 'discord', identity: 'no bot token: slash commands only' };
      try {
        const me = await api.me();
        botUserId = me.id;
        return { ok: true, platform: 'discord', identity: me.username };
      } catch (err) {
        const e = discordErrorOf(err);
        const bad = e?.status === 401 || e?.status === 403;
        return { ok: false, platform: 'discord', setting: 'DISCORD_BOT_TOKEN', reason: bad ? `Discord refused the bot token (GET /users/@me: ${e.status})` : `could not reach Discord to check the bot token (${describeError(err)})`, transient: !bad };
      }
    },

    async close() {
      if (closed) return;
      closed = true;
      const g = gateway;
      gateway = null;
      try {
        await g?.close();
      } catch (err) {
        logger.warn({ err: describeError(err) }, 'discord gateway close failed');
      }
      api.close();
    },
  };
}
