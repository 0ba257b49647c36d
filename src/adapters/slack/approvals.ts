/**
 * Approval requests in Slack: a message in the turn's thread with Approve / Deny buttons
 * (Block Kit), answered through interactivity (`block_actions`, over HTTP or Socket Mode). The
 * button carries only the approval id; the desk checks that the person who pressed it is one of
 * the request's approvers, and a refusal is told to that person alone (an ephemeral message).
 * When the request is answered or expires, the message is rewritten without buttons.
 *
 * https://docs.slack.dev/reference/interaction-payloads/block_actions-payload
 */
import { z } from 'zod';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ApprovalDesk, ApprovalOutcome, ApprovalPrompt } from '../types.js';
import type { SlackApi } from './api.js';
import { escapeText } from './mrkdwn.js';
import { decodeConversation } from './parse.js';

export const APPROVE_ACTION = 'agentvm_approve';
export const DENY_ACTION = 'agentvm_deny';
const MAX_TRACKED = 5000;

const blockActionsSchema = z.looseObject({
  type: z.literal('block_actions'),
  user: z.looseObject({ id: z.string() }),
  channel: z.looseObject({ id: z.string() }).optional(),
  container: z.looseObject({ channel_id: z.string().optional(), message_ts: z.string().optional(), thread_ts: z.string().optional() }).optional(),
  actions: z.array(z.looseObject({ action_id: z.string(), value: z.string().optional() })),
});

export interface SlackApprovals {
  ask(prompt: ApprovalPrompt): Promise<void>;
  settled(prompt: ApprovalPrompt, outcome: ApprovalOutcome): Promise<void>;
  /** Handles one interactivity payload (already verified). Never throws. */
  interact(payload: unknown): Promise<void>;
}

export function createSlackApprovals(deps: { api: SlackApi; logger: Logger; desk?: ApprovalDesk; now: () => number }): SlackApprovals {
  const { api, logger } = deps;
  /** Where each request was posted, so the settle step rewrites the same message. */
  const posted = new Map<string, { channel: string; ts: string }>();

  function whoMayAnswer(p: ApprovalPrompt): string {
    if (p.approvers.length === 0) return 'The operator (through the agent-vm API)';
    return p.approvers.map((u) => `<@${u}>`).join(', ');
  }

  function header(p: ApprovalPrompt): string {
    const args = p.summary ? `\n\`\`\`${p.summary.replace(/```/g, "'''")}\`\`\`` : '';
    return `*Approval needed*: the agent wants to call \`${escapeText(p.tool)}\`${escapeText(args)}`;
  }

  return {
    async ask(p) {
      const c = decodeConversation(p.conversation);
      if (!c) return;
      const seconds = Math.max(1, Math.round((p.expiresAt.getTime() - deps.now()) / 1000));
      const footer = `${whoMayAnswer(p)} can answer within ${seconds} s; no answer means denied.`;
      const res = await api.call('chat.postMessage', {
        channel: c.channel,
        thread_ts: c.threadTs,
        text: `Approval needed: the agent wants to call ${p.tool}. ${footer}`,
        blocks: [
          { type: 'section', text: { type: 'mrkdwn', text: header(p) } },
          { type: 'context', elements: [{ type: 'mrkdwn', text: footer }] },
          {
            type: 'actions',
            block_id: 'agentvm_approval',
            elements: [
              { type: 'button', action_id: APPROVE_ACTION, style: 'primary', value: p.id, text: { type: 'plain_text', text: 'Approve' } },
              { type: 'button', action_id: DENY_ACTION, style: 'danger', value: p.id, text: { type: 'plain_text', text: 'Deny' } },
            ],
          },
        ],
      });
      if (typeof res.ts === 'string') {
        posted.set(p.id, { channel: c.channel, ts: res.ts });
        if (posted.size > MAX_TRACKED) posted.delete(posted.keys().next().value!);
      }
    },

    async settled(p, outcome) {
      const at = posted.get(p.id);
      posted.delete(p.id);
      if (!at) return;
      const by = outcome.by?.startsWith('slack:') ? `<@${outcome.by.slice('slack:'.length)}>` : outcome.by === 'local:api' ? 'the operator' : undefined;
      const verdict =
        outcome.decision === 'approved'
          ? `:white_check_mark: Approved${by ? ` by ${by}` : ''}.`
          : outcome.decision === 'denied'
            ? `:no_entry: Denied${by ? ` by ${by}` : ''}.`
            : ':hourglass: Nobody answered in time, so the call was denied.';
      await api.call('chat.update', {
        channel: at.channel,
        ts: at.ts,
        text: `${p.tool}: ${verdict}`,
        blocks: [
          { type: 'section', text: { type: 'mrkdwn', text: header(p) } },
          { type: 'context', elements: [{ type: 'mrkdwn', text: verdict }] },
        ],
      });
    },

    async interact(payload) {
      const parsed = blockActionsSchema.safeParse(payload);
      if (!parsed.success) return; // other interactions (shortcuts, modals) are not ours
      const p = parsed.data;
      const action = p.actions.find((a) => a.action_id === APPROVE_ACTION || a.action_id === DENY_ACTION);
      if (!action?.value) return;
      const channel = p.channel?.id ?? p.container?.channel_id;
      const tell = async (text: string) => {
        if (!channel) return;
        const threadTs = p.container?.thread_ts;
        await api.call('chat.postEphemeral', { channel, user: p.user.id, text, ...(threadTs ? { thread_ts: threadTs } : {}) });
      };
      try {
        if (!deps.desk) {
          await tell('Approvals are not answered from Slack on this agent-vm.');
          return;
        }
        const decision = action.action_id === APPROVE_ACTION ? 'approved' : 'denied';
        const result = await deps.desk.answer(action.value, decision, { platform: 'slack', user: p.user.id });
        logger.info({ approval: action.value, decision, status: result.status }, 'slack: approval answered');
        if (result.status === 'not_allowed') {
          const who = result.approvers.filter((a) => a.startsWith('slack:')).map((a) => `<@${a.slice(6)}>`);
          await tell(`Only ${who.length > 0 ? who.join(', ') : 'the operator'} can answer this request.`);
        } else if (result.status === 'unknown') {
          await tell('This request is no longer waiting: it was answered already or has expired.');
        }
      } catch (err) {
        logger.warn({ approval: action.value, err: describeError(err) }, 'slack: approval answer failed');
      }
    },
  };
}
