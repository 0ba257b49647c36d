/**
 * Reactions on the person's message that show where their request is: 👀 when it is taken in,
 * ✅ when answered, ⚠️ when it failed (👀 removed then). Cosmetic, so never in the way: errors
 * are reported, never thrown, and a token that may not react (no `reactions:write`) is told to
 * the operator once and then left alone.
 */
import type { Logger } from '../../log.js';
import type { ReportFailure } from '../delivery.js';
import { failureCode, neededScope, slackErrorCode, type SlackApi } from './api.js';

/** Errors that mean "this token may not react here or anywhere": stop trying. */
const UNAVAILABLE = new Set(['missing_scope', 'not_allowed_token_type', 'no_permission', 'access_denied', 'restricted_action']);
/** Errors that mean the state is already what we wanted. */
const HARMLESS = new Set(['already_reacted', 'no_reaction', 'message_not_found', 'too_many_reactions']);

export interface Reactions {
  received(channel: string, ts: string): Promise<void>;
  answered(channel: string, ts: string): Promise<void>;
  failed(channel: string, ts: string): Promise<void>;
}

export function createReactions(deps: { api: SlackApi; logger: Logger; report: ReportFailure }): Reactions {
  let unavailable = false;

  async function one(method: 'reactions.add' | 'reactions.remove', channel: string, ts: string, name: string): Promise<void> {
    if (unavailable) return;
    try {
      await deps.api.call(method, { channel, timestamp: ts, name });
    } catch (err) {
      const code = slackErrorCode(err);
      if (code && HARMLESS.has(code)) return;
      if (code && UNAVAILABLE.has(code)) {
        unavailable = true;
        const scope = neededScope(err) ?? 'reactions:write';
        deps.logger.warn({ code, scope }, `slack: reactions are off: the app cannot react (${code}); add the ${scope} scope to show 👀/✅/⚠️ on requests`);
        return;
      }
      deps.report({ kind: 'reaction', step: method, code: failureCode(err), retryable: false, shown: false }, { err });
    }
  }

  return {
    received: (channel, ts) => one('reactions.add', channel, ts, 'eyes'),
    async answered(channel, ts) {
      await one('reactions.remove', channel, ts, 'eyes');
      await one('reactions.add', channel, ts, 'white_check_mark');
    },
    async failed(channel, ts) {
      await one('reactions.remove', channel, ts, 'eyes');
      await one('reactions.add', channel, ts, 'warning');
    },
  };
}
