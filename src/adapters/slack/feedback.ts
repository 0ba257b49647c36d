/**
 * 👍/👎 under answers: Slack's feedback buttons (a `context_actions` block with a
 * `feedback_buttons` element) on the last message of a reply, and the presses, stored with the
 * turn through the `FeedbackSink`. A button's value carries the rating and the turn's event id;
 * Slack signs the interaction, and the value is checked against the shape we wrote, so a forged
 * or foreign value stores nothing.
 *
 * https://docs.slack.dev/reference/block-kit/block-elements/feedback-buttons-element
 */
import { z } from 'zod';
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { FeedbackSink } from '../types.js';
import type { SlackApi } from './api.js';

export const FEEDBACK_ACTION = 'agentvm_feedback';
const VALUE = /^(positive|negative)\|(slack:[A-Za-z0-9._-]{1,100})$/;

export function feedbackBlocks(eventId: string): unknown[] {
  return [
    {
      type: 'context_actions',
      elements: [
        {
          type: 'feedback_buttons',
          action_id: FEEDBACK_ACTION,
          positive_button: { text: { type: 'plain_text', text: '👍' }, accessibility_label: 'This answer was helpful', value: `positive|${eventId}` },
          negative_button: { text: { type: 'plain_text', text: '👎' }, accessibility_label: 'This answer was not helpful', value: `negative|${eventId}` },
        },
      ],
    },
  ];
}

const pressSchema = z.looseObject({
  type: z.literal('block_actions'),
  user: z.looseObject({ id: z.string().max(64) }),
  channel: z.looseObject({ id: z.string() }).optional(),
  container: z.looseObject({ channel_id: z.string().optional(), thread_ts: z.string().optional() }).optional(),
  actions: z.array(z.looseObject({ action_id: z.string(), value: z.string().max(300).optional() })),
});

export interface SlackFeedback {
  /** Handles a verified interaction if it is a feedback press; false when it is not one. Never throws. */
  interact(payload: unknown): Promise<boolean>;
}

export function createSlackFeedback(deps: { api: SlackApi; logger: Logger; sink?: FeedbackSink }): SlackFeedback {
  return {
    async interact(payload) {
      const parsed = pressSchema.safeParse(payload);
      if (!parsed.success) return false;
      const action = parsed.data.actions.find((a) => a.action_id === FEEDBACK_ACTION);
      if (!action) return false;
      const m = VALUE.exec(action.value ?? '');
      if (!m) {
        deps.logger.warn('slack: a feedback press with a value agent-vm did not write; ignored');
        return true;
      }
      const value = m[1] as 'positive' | 'negative';
      const eventId = m[2]!;
      if (!deps.sink) return true;
      try {
        await deps.sink.record({ eventId, platform: 'slack', userId: parsed.data.user.id, value });
        deps.logger.info({ eventId, value }, 'slack: feedback recorded');
        const channel = parsed.data.channel?.id ?? parsed.data.container?.channel_id;
        const threadTs = parsed.data.container?.thread_ts;
        if (channel) {
          await deps.api
            .call('chat.postEphemeral', { channel, user: parsed.data.user.id, text: 'Thanks, your feedback was recorded.', ...(threadTs ? { thread_ts: threadTs } : {}) })
            .catch(() => undefined);
        }
      } catch (err) {
        deps.logger.warn({ eventId, err: describeError(err) }, 'slack: storing feedback failed');
      }
      return true;
    },
  };
}
