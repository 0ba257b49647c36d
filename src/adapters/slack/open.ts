/**
 * Conversations agent-vm starts itself on Slack (a schedule's `post`): the opener is a channel
 * message (`chat.postMessage`), and its ts is the new thread and the conversation key, exactly as
 * a person's top-level mention would make it; the turn's answer goes into that thread. An
 * existing thread (`target.thread`, a ts) is checked (`conversations.replies`) and named, nothing
 * posted. The workspace is the bot token's: a target naming another team is refused before any
 * message is sent.
 *
 * Failures are reported (kind `opener`, never retried here: WebClient already waited out 429s)
 * and thrown, so the scheduler records the run as failed.
 */
import { AgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ReportFailure } from '../delivery.js';
import type { OpenedThread, ThreadTarget } from '../types.js';
import { failureCode, type SlackApi } from './api.js';
import { escapeText } from './mrkdwn.js';
import { encodeConversation } from './parse.js';

const TS = /^\d{1,12}\.\d{1,8}$/;
const ID = /^[A-Z0-9]{1,32}$/;

export function createSlackOpener(deps: { api: SlackApi; logger: Logger; report: ReportFailure; team: () => Promise<string | undefined> }) {
  async function open(target: ThreadTarget, opener: string): Promise<OpenedThread> {
    const a = target.address;
    if (a.platform !== 'slack' || !ID.test(a.team) || !ID.test(a.channel)) {
      throw new AgentVmError('slack_bad_target', 'a Slack thread needs a Slack address (team and channel ids)', { status: 400 });
    }
    if (target.thread !== undefined && !TS.test(target.thread)) {
      throw new AgentVmError('slack_bad_target', `not a Slack thread ts: ${target.thread.slice(0, 40)}`, { status: 400 });
    }
    const team = await deps.team();
    if (team === undefined) throw new AgentVmError('slack_unavailable', 'could not learn the bot token\'s workspace (auth.test)', { status: 503, retryable: true });
    if (team !== a.team) {
      throw new AgentVmError('slack_wrong_team', `the bot token belongs to workspace ${team}, not ${a.team}`, { status: 400 });
    }
    if (target.thread !== undefined) {
      const r = await deps.api.call('conversations.replies', { channel: a.channel, ts: target.thread, limit: 1, inclusive: true });
      const found = Array.isArray(r.messages) && r.messages.some((m) => (m as { ts?: unknown }).ts === target.thread);
      if (!found) throw new AgentVmError('slack_api_error', `conversations.replies: thread_not_found (${target.thread} in ${a.channel})`, { status: 404 });
      return { conversation: encodeConversation(a.team, a.channel, target.thread) };
    }
    const r = await deps.api.call('chat.postMessage', { channel: a.channel, text: escapeText(opener), unfurl_links: false, unfurl_media: false });
    const ts = typeof r.ts === 'string' && TS.test(r.ts) ? r.ts : undefined;
    if (!ts) throw new AgentVmError('slack_api_error', 'chat.postMessage: no ts in the answer', { status: 502 });
    deps.logger.info({ channel: a.channel, ts }, 'slack: opened a thread for a scheduled run');
    return { conversation: encodeConversation(a.team, a.channel, ts) };
  }

  return async function openThread(target: ThreadTarget, opener: string): Promise<OpenedThread> {
    try {
      return await open(target, opener);
    } catch (err) {
      deps.report({ kind: 'opener', step: target.thread !== undefined ? 'thread' : 'post', code: failureCode(err), retryable: false, shown: false }, { eventId: target.idHint, err });
      throw err;
    }
  };
}
