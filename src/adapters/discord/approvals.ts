/**
 * Approval requests in Discord: a message in the turn's conversation with Approve / Deny buttons
 * (message components), answered through `POST /discord/interactions` (a MESSAGE_COMPONENT
 * interaction). The button's `custom_id` carries only the approval id; the desk checks that the
 * person who pressed it is one of the request's approvers, and a refusal is told to that person
 * alone (an ephemeral response). When the request is answered or expires, the message is edited
 * to the verdict without buttons.
 *
 * The request goes where the turn's other messages go: a follow-up on the interaction webhook
 * while the interaction token lives (14 minutes), else a channel post with the bot token. The
 * settle edit uses the same route while it can, and the channel edit endpoint (bot token) after.
 * Nobody is pinged: approvers are named with `<@id>` but `allowed_mentions` is empty.
 *
 * https://discord.com/developers/docs/components/reference#button
 * https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-interaction-callback-type
 */
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ApprovalDesk, ApprovalOutcome, ApprovalPrompt } from '../types.js';
import type { DiscordApi, MessageBody, SentMessage } from './api.js';
import { channelGone, INTERACTION_TOKEN_SAFE_MS, tokenRejected } from './deliver.js';
import { ButtonStyle, ComponentType, replyTargetOf, EPHEMERAL, ResponseType, type Interaction, type ReplyTarget } from './parse.js';

export const APPROVE_PREFIX = 'agentvm_approve:';
export const DENY_PREFIX = 'agentvm_deny:';
const MAX_TRACKED = 5000;
/** Room left in Discord's 2,000-character message for the rest of the text. */
const SUMMARY_MAX = 1500;
const NO_MENTIONS = { parse: [] as string[] };

/** Where a request was posted, so the settle step edits the same message. */
type Posted =
  | { via: 'webhook'; applicationId: string; token: string; issuedAt: number; channel: string; messageId: string }
  | { via: 'channel'; channel: string; messageId: string };

export interface InteractionResponse {
  type: number;
  data?: { content: string; flags: number; allowed_mentions: { parse: string[] } };
}

export interface DiscordApprovals {
  ask(prompt: ApprovalPrompt): Promise<void>;
  settled(prompt: ApprovalPrompt, outcome: ApprovalOutcome): Promise<void>;
  /** Answers one (verified) MESSAGE_COMPONENT interaction within the ack deadline. Never throws. */
  interact(interaction: Interaction): Promise<InteractionResponse>;
}

export interface DiscordApprovalsOptions {
  api: DiscordApi;
  logger: Logger;
  desk?: ApprovalDesk;
  now: () => number;
  /** Past this the press is answered "try again" without the desk's verdict. */
  ackDeadlineMs: number;
}

function tell(content: string): InteractionResponse {
  return { type: ResponseType.Message, data: { content, flags: EPHEMERAL, allowed_mentions: NO_MENTIONS } };
}

/** Inline code can't hold a backtick; a code block can't hold a fence. */
function header(p: ApprovalPrompt): string {
  const tool = p.tool.replace(/`/g, "'");
  const summary = p.summary.length > SUMMARY_MAX ? `${p.summary.slice(0, SUMMARY_MAX - 1)}…` : p.summary;
  const args = summary ? `\n\`\`\`\n${summary.replace(/```/g, "'''")}\n\`\`\`` : '';
  return `**Approval needed**: the agent wants to call \`${tool}\`${args}`;
}

function whoMayAnswer(approvers: string[]): string {
  return approvers.length === 0 ? 'The operator (through the agent-vm API)' : approvers.map((u) => `<@${u}>`).join(', ');
}

export function verdictText(outcome: ApprovalOutcome): string {
  const by = outcome.by?.startsWith('discord:') ? `<@${outcome.by.slice('discord:'.length)}>` : outcome.by === 'local:api' ? 'the operator' : undefined;
  if (outcome.decision === 'approved') return `✅ Approved${by ? ` by ${by}` : ''}.`;
  if (outcome.decision === 'denied') return `⛔ Denied${by ? ` by ${by}` : ''}.`;
  return '⌛ Nobody answered in time, so the call was denied.';
}

function buttons(id: string): unknown[] {
  return [
    {
      type: ComponentType.ActionRow,
      components: [
        { type: ComponentType.Button, style: ButtonStyle.Success, label: 'Approve', custom_id: `${APPROVE_PREFIX}${id}` },
        { type: ComponentType.Button, style: ButtonStyle.Danger, label: 'Deny', custom_id: `${DENY_PREFIX}${id}` },
      ],
    },
  ];
}

/** The approval id and decision a button's `custom_id` carries, or null when the button is not ours. */
export function parseCustomId(customId: string | undefined): { id: string; decision: 'approved' | 'denied' } | null {
  if (!customId) return null;
  if (customId.startsWith(APPROVE_PREFIX)) return { id: customId.slice(APPROVE_PREFIX.length), decision: 'approved' };
  if (customId.startsWith(DENY_PREFIX)) return { id: customId.slice(DENY_PREFIX.length), decision: 'denied' };
  return null;
}

export function createDiscordApprovals(deps: DiscordApprovalsOptions): DiscordApprovals {
  const { api, logger, now } = deps;
  const posted = new Map<string, Posted>();

  function targetOf(p: ApprovalPrompt): ReplyTarget {
    const t = replyTargetOf(p.replyTo, p.conversation);
    if (t) return t;
    throw new AgentVmError('discord_bad_target', `no Discord channel for approval ${p.id}`, { status: 500, retryable: false });
  }

  function live(issuedAt: number): boolean {
    return now() - issuedAt < INTERACTION_TOKEN_SAFE_MS;
  }

  async function toChannel(channel: string, fallback: string | undefined, body: MessageBody): Promise<Posted | null> {
    const at = (sent: SentMessage, ch: string): Posted | null => (sent ? { via: 'channel', channel: sent.channelId ?? ch, messageId: sent.id } : null);
    try {
      return at(await api.createMessage(channel, body), channel);
    } catch (err) {
      if (!fallback || !channelGone(err)) throw err;
      logger.warn({ channel }, 'discord thread unavailable; asking for approval in the channel');
      return at(await api.createMessage(fallback, body), fallback);
    }
  }

  async function post(t: ReplyTarget, body: MessageBody): Promise<Posted | null> {
    if (t.kind === 'channel') return toChannel(t.channel, t.fallback, body);
    if (live(t.issuedAt)) {
      try {
        const sent = await api.followUp(t.applicationId, t.token, body);
        if (!sent) return null;
        return { via: 'webhook', applicationId: t.applicationId, token: t.token, issuedAt: t.issuedAt, channel: sent.channelId ?? t.channel, messageId: sent.id };
      } catch (err) {
        if (!tokenRejected(err) || !api.hasBotToken) throw err;
        logger.warn('discord interaction token rejected; asking for approval in the channel');
      }
    }
    if (!api.hasBotToken) {
      throw new AgentVmError(
        'discord_token_expired',
        'the interaction token expired (15 minutes) and DISCORD_BOT_TOKEN is not set, so the approval request cannot be posted',
        { status: 502, retryable: false },
      );
    }
    return toChannel(t.channel, undefined, body);
  }

  async function edit(at: Posted, body: MessageBody): Promise<void> {
    if (at.via === 'webhook' && live(at.issuedAt)) {
      try {
        await api.editWebhookMessage(at.applicationId, at.token, at.messageId, body);
        return;
      } catch (err) {
        if (!tokenRejected(err) || !api.hasBotToken) throw err;
      }
    }
    if (!api.hasBotToken) {
      throw new AgentVmError('discord_token_expired', 'the interaction token expired and DISCORD_BOT_TOKEN is not set, so the approval request cannot be updated', {
        status: 502,
        retryable: false,
      });
    }
    // A follow-up the application sent is the bot's message, so the channel endpoint edits it too.
    await api.editMessage(at.channel, at.messageId, body);
  }

  /** The desk's verdict on one press, told to the presser. */
  async function answer(desk: ApprovalDesk, id: string, decision: 'approved' | 'denied', user: string): Promise<InteractionResponse> {
    const verdict = Promise.resolve().then(() => desk.answer(id, decision, { platform: 'discord', user }));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), deps.ackDeadlineMs);
    });
    const result = await Promise.race([verdict, late]).finally(() => clearTimeout(timer));
    if (result === 'late') {
      void verdict
        .then((r) => logger.info({ approval: id, decision, status: r.status }, 'discord: approval answered after the ack deadline'))
        .catch((err: unknown) => logger.warn({ approval: id, err: describeError(err) }, 'discord: approval answer failed'));
      return tell('Could not record the answer; try again.');
    }
    logger.info({ approval: id, decision, status: result.status }, 'discord: approval answered');
    if (result.status === 'answered') return { type: ResponseType.DeferredUpdate };
    if (result.status === 'unknown') return tell('This request is no longer waiting: it was answered already or has expired.');
    const who = result.approvers.filter((a) => a.startsWith('discord:')).map((a) => `<@${a.slice('discord:'.length)}>`);
    return tell(`Only ${who.length > 0 ? who.join(', ') : 'the operator'} can answer this request.`);
  }

  return {
    async ask(p) {
      const seconds = Math.max(1, Math.round((p.expiresAt.getTime() - now()) / 1000));
      const content = `${header(p)}\n${whoMayAnswer(p.approvers)} can answer within ${seconds} s; no answer means denied.`;
      const at = await post(targetOf(p), { content, allowed_mentions: NO_MENTIONS, components: buttons(p.id) });
      if (!at) {
        logger.warn({ approval: p.id }, 'discord: the approval request was posted but Discord returned no message id; it will not be updated');
        return;
      }
      posted.set(p.id, at);
      if (posted.size > MAX_TRACKED) posted.delete(posted.keys().next().value!);
    },

    async settled(p, outcome) {
      const at = posted.get(p.id);
      posted.delete(p.id);
      if (!at) return;
      await edit(at, { content: `${header(p)}\n${verdictText(outcome)}`, allowed_mentions: NO_MENTIONS, components: [] });
    },

    async interact(interaction) {
      const pressed = parseCustomId(interaction.data?.custom_id);
      // Not one of our buttons: acknowledge without changing anything.
      if (!pressed) return { type: ResponseType.DeferredUpdate };
      if (!deps.desk) return tell('Approvals are not answered from Discord on this agent-vm.');
      const user = interaction.member?.user.id ?? interaction.user?.id;
      if (!user || !pressed.id) return tell('agent-vm could not read this button press.');
      try {
        return await answer(deps.desk, pressed.id, pressed.decision, user);
      } catch (err) {
        logger.warn({ approval: pressed.id, err: describeError(err) }, 'discord: approval answer failed');
        return tell('Could not record the answer; try again.');
      }
    },
  };
}
