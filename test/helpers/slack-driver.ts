/**
 * A person in Slack, against a test gateway and the fake Slack Web API: signed `app_mention`
 * events into `/slack/events`, signed button presses into `/slack/interactivity`, and what the
 * fake recorded in a thread read back (messages, streamed pieces and their edits).
 */
import { randomBytes } from 'node:crypto';
import { signSlackRequest } from '../../src/adapters/slack/index.js';
import type { FakeMessage, FakeSlack } from '../fakes/slack-api.js';
import type { TestGateway } from './gateway.js';
import { until } from './wait.js';

export interface SlackDriver {
  /** A fresh message timestamp (also the thread's, for a top-level mention). */
  nextTs(): string;
  /** Posts a signed mention; returns the gateway's event id (`slack:<event_id>`). */
  mention(o: { channel: string; ts: string; text: string }): Promise<{ eventId: string }>;
  /** Waits for the approval request with buttons in the thread. */
  approvalIn(channel: string, ts: string, timeoutMs?: number): Promise<FakeMessage>;
  /** The approval id the request's buttons carry. */
  approvalId(asking: FakeMessage): string;
  /** Presses a button of that request as the person. */
  press(asking: FakeMessage, action: 'agentvm_approve' | 'agentvm_deny'): Promise<void>;
  /** Everything the bot wrote in the thread: every message's texts (edits included) and streamed pieces. */
  threadText(channel: string, ts: string): string;
  /** The Web API methods called so far (for timeout messages). */
  calls(): string;
}

export function slackDriver(o: { gw: TestGateway; slack: FakeSlack; secret: string; team: string; user: string }): SlackDriver {
  let seq = 0;
  const signed = (path: string, body: string, contentType: string) => {
    const ts = String(Math.floor(Date.now() / 1000));
    return o.gw.running.app.request(path, {
      method: 'POST',
      headers: { 'content-type': contentType, 'x-slack-request-timestamp': ts, 'x-slack-signature': signSlackRequest(o.secret, ts, body) },
      body,
    });
  };
  const buttonsOf = (m: FakeMessage) => JSON.stringify(m.blocks ?? []);
  const approvalId = (m: FakeMessage) => {
    const value = /"value":"([^"]+)"/.exec(buttonsOf(m))?.[1];
    if (!value) throw new Error('the approval request has no button value');
    return value;
  };
  return {
    nextTs() {
      seq++;
      return `${Math.floor(Date.now() / 1000)}.${String(seq).padStart(6, '0')}`;
    },
    async mention({ channel, ts, text }) {
      const id = `EvPRE${randomBytes(5).toString('hex').toUpperCase()}`;
      const envelope = {
        token: 'x',
        team_id: o.team,
        api_app_id: 'AFAKE',
        type: 'event_callback',
        event_id: id,
        event_time: Math.floor(Date.now() / 1000),
        authorizations: [{ user_id: o.slack.botUserId, is_bot: true }],
        event: { type: 'app_mention', user: o.user, text: `<@${o.slack.botUserId}> ${text}`, ts, channel, team: o.team },
      };
      const res = await signed('/slack/events', JSON.stringify(envelope), 'application/json');
      if (res.status !== 200) throw new Error(`the mention was answered ${res.status}: ${await res.text()}`);
      return { eventId: `slack:${id}` };
    },
    approvalIn(channel, ts, timeoutMs = 180_000) {
      return until(
        'the approval request with buttons in the thread',
        () => o.slack.messages.find((m) => m.channel === channel && m.thread_ts === ts && buttonsOf(m).includes('agentvm_approve')),
        { timeoutMs },
      );
    },
    approvalId,
    async press(asking, action) {
      const value = approvalId(asking);
      const payload = {
        type: 'block_actions',
        user: { id: o.user, team_id: o.team },
        team: { id: o.team },
        channel: { id: asking.channel },
        container: { type: 'message', channel_id: asking.channel, message_ts: asking.ts, thread_ts: asking.thread_ts },
        actions: [{ action_id: action, block_id: 'agentvm_approval', value, type: 'button', action_ts: `${Math.floor(Date.now() / 1000)}.000001` }],
      };
      const res = await signed('/slack/interactivity', `payload=${encodeURIComponent(JSON.stringify(payload))}`, 'application/x-www-form-urlencoded');
      if (res.status !== 200) throw new Error(`the press was answered ${res.status}: ${await res.text()}`);
    },
    threadText(channel, ts) {
      return o.slack.messages
        .filter((m) => m.channel === channel && (m.thread_ts === ts || m.ts === ts))
        .flatMap((m) => [...m.history, m.text, ...(m.pieces ?? [])])
        .join('\n');
    },
    calls: () => o.slack.calls.map((c) => c.method).join(', '),
  };
}
