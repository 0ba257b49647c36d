/**
 * Reactions on the person's message (mentions; slash commands have no message): 👀 when the
 * request is taken in, ✅ when answered, ⚠️ when it failed. Cosmetic, so never in the way: a bot
 * that may not react (50013 Missing Permissions, 50001 Missing Access: the "Add Reactions"
 * permission) is told to the operator once and then left alone; other errors are reported.
 */
import type { Logger } from '../../log.js';
import type { ReportFailure } from '../delivery.js';
import { discordErrorOf, type DiscordApi } from './api.js';

const EYES = '👀';
const DONE = '✅';
const FAILED = '⚠️';

export interface Reactions {
  received(channel: string, message: string): Promise<void>;
  ended(channel: string, message: string, ok: boolean): Promise<void>;
}

export function createReactions(deps: { api: DiscordApi; logger: Logger; report: ReportFailure }): Reactions {
  let unavailable = !deps.api.hasBotToken;

  async function one(channel: string, message: string, emoji: string, on: boolean): Promise<void> {
    if (unavailable) return;
    try {
      await deps.api.react(channel, message, emoji, on);
    } catch (err) {
      const e = discordErrorOf(err);
      if (e?.code === 10008 || e?.code === 10014) return; // the message or emoji is gone: nothing to show
      if (e?.code === 50013 || e?.code === 50001 || e?.status === 403) {
        unavailable = true;
        deps.logger.warn({ code: e.code }, 'discord: reactions are off: the bot may not react here; give it the Add Reactions and Read Message History permissions to show 👀/✅/⚠️');
        return;
      }
      deps.report({ kind: 'reaction', step: on ? 'add' : 'remove', code: String(e?.code ?? e?.status ?? 'error'), retryable: false, shown: false }, { err });
    }
  }

  return {
    received: (channel, message) => one(channel, message, EYES, true),
    async ended(channel, message, ok) {
      await one(channel, message, EYES, false);
      await one(channel, message, ok ? DONE : FAILED, true);
    },
  };
}
