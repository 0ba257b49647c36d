/**
 * Thread context limits are settings (AGENTVM_THREAD_CONTEXT_MESSAGES, default 50, and
 * AGENTVM_THREAD_CONTEXT_CHARS, default 20,000) and every platform keeps to them: a first turn in
 * a long thread gets the newest messages that fit both limits, and is told how many older ones
 * were left out. Checked for Slack (conversations.replies), Discord (channel messages) and ClickUp
 * (task comments) against their fakes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClickUpAdapter, encodeReplyTo as clickupReplyTo } from '../src/adapters/clickup/index.js';
import { createDiscordAdapter } from '../src/adapters/discord/index.js';
import { encodeReplyTo as discordReplyTo } from '../src/adapters/discord/parse.js';
import { createSlackAdapter, encodeReplyTo as slackReplyTo } from '../src/adapters/slack/index.js';
import type { ChannelAdapter, InboundEvent, ThreadContextLimits, ThreadCursors } from '../src/adapters/types.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { RecordingIntake } from './contracts/channel-adapter.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { startFakeDiscord, type FakeDiscord } from './fakes/discord-api.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { PUBLIC_KEY_HEX } from './helpers/discord.js';

const logger = createLogger('silent');
const cursors = (): ThreadCursors => {
  const m = new Map<string, string>();
  return { getCursor: async (c) => m.get(c), putCursor: async (c, v) => void m.set(c, v) };
};
/** 30 earlier messages of ~400 characters, numbered oldest first. */
const N = 30;
const body = (i: number) => `message ${String(i).padStart(2, '0')} ${'x'.repeat(390)}`;
const shownNumbers = (preamble: string) => [...preamble.matchAll(/message (\d\d) x/g)].map((m) => Number(m[1]));

let slack: FakeSlack;
let discord: FakeDiscord;
let clickup: FakeClickUp;
const adapters: ChannelAdapter[] = [];

beforeAll(async () => {
  [slack, discord, clickup] = await Promise.all([startFakeSlack(), startFakeDiscord(), startFakeClickUp()]);
  clickup.tasks.set('t1', { id: 't1', name: 'Long task', team_id: '9001', space: { id: '1' }, folder: { id: '2' }, list: { id: '3' } });
});
afterAll(async () => {
  for (const a of adapters) await a.close?.();
  await Promise.all([slack.close(), discord.close(), clickup.close()]);
});

/** The preamble a first turn gets in a thread of N messages, per platform. */
const platforms: Record<string, (limits: ThreadContextLimits) => Promise<string>> = {
  async slack(limits) {
    const a = createSlackAdapter({ signingSecret: 's', botToken: slack.botToken, apiUrl: slack.url, intake: new RecordingIntake(), logger, botUserId: slack.botUserId, threads: cursors(), threadLimits: limits });
    adapters.push(a);
    const root = slack.addThreadMessage({ channel: 'CLIM', user: 'UALICE', text: body(0) });
    for (let i = 1; i < N; i++) slack.addThreadMessage({ channel: 'CLIM', threadTs: root, user: 'UBOB', text: body(i) });
    const mine = slack.addThreadMessage({ channel: 'CLIM', threadTs: root, user: 'UHUMAN1', text: `<@${slack.botUserId}> summarise` });
    const event: InboundEvent = {
      id: `slack:Ev${mine}`, platform: 'slack', address: { platform: 'slack', team: slack.teamId, channel: 'CLIM' }, conversation: `slack:${slack.teamId}:CLIM:${root}`,
      replyTo: slackReplyTo(mine, 'UHUMAN1'), user: { id: 'UHUMAN1' }, text: 'summarise', receivedAt: new Date().toISOString(),
    };
    return (await a.fetchContext(event, { maxFileBytes: 1, maxFiles: 1 })).preamble ?? '';
  },
  async discord(limits) {
    const a = createDiscordAdapter({ publicKey: PUBLIC_KEY_HEX, applicationId: discord.applicationId, botToken: discord.botToken, apiUrl: discord.url, intake: new RecordingIntake(), logger, threads: cursors(), threadLimits: limits });
    adapters.push(a);
    const ch = String(920000000000000000n + BigInt(adapters.length));
    for (let i = 0; i < N; i++) discord.addMessage(ch, { author: { id: '11', username: 'ann' }, content: body(i) });
    const at = discord.addMessage(ch, { content: 'the command' });
    const event: InboundEvent = {
      id: `discord:${at}`, platform: 'discord', address: { platform: 'discord', guild: '1', channel: ch }, conversation: `discord:1:${ch}`,
      replyTo: discordReplyTo({ kind: 'interaction', applicationId: discord.applicationId, token: 'tok', issuedAt: 0, channel: ch, at, thread: true }),
      user: { id: '12' }, text: 'summarise', receivedAt: '',
    };
    return (await a.fetchContext(event, { maxFileBytes: 1, maxFiles: 1 })).preamble ?? '';
  },
  async clickup(limits) {
    const a = createClickUpAdapter({ webhookSecret: 's', token: clickup.token, apiUrl: clickup.url, intake: new RecordingIntake(), logger, sleep: async () => undefined, threads: cursors(), threadLimits: limits });
    adapters.push(a);
    const t0 = Date.UTC(2025, 0, 1);
    for (let i = 0; i < N; i++) clickup.addComment('t1', { user: { id: 7, username: 'ann' }, text: body(i), date: t0 + i * 1000 });
    const ask = clickup.addComment('t1', { user: { id: 183, username: 'John' }, text: '@support summarise', date: t0 + N * 1000 });
    const event: InboundEvent = {
      id: 'clickup:lim', platform: 'clickup', address: { platform: 'clickup', team: '9001' }, conversation: 'clickup:t1', replyTo: clickupReplyTo(ask.id, ask.date),
      user: { id: '183' }, text: 'summarise', receivedAt: '',
    };
    return (await a.fetchContext!(event, { maxFileBytes: 1, maxFiles: 1 })).preamble ?? '';
  },
};

describe('thread context limits', () => {
  it('are read from AGENTVM_THREAD_CONTEXT_MESSAGES and AGENTVM_THREAD_CONTEXT_CHARS (defaults 50 and 20,000)', () => {
    expect(loadConfig({}).threadContext).toEqual({ maxMessages: 50, maxChars: 20_000 });
    expect(loadConfig({ AGENTVM_THREAD_CONTEXT_MESSAGES: '7', AGENTVM_THREAD_CONTEXT_CHARS: '3000' }).threadContext).toEqual({ maxMessages: 7, maxChars: 3000 });
  });

  for (const [platform, firstTurn] of Object.entries(platforms)) {
    it(`${platform}: a first turn gets the newest messages within the character limit, and the count of older ones left out`, async () => {
      const pre = await firstTurn({ maxMessages: 50, maxChars: 2000 });
      const shown = shownNumbers(pre);
      // ~420 characters a message: four fit in 2,000, the newest, oldest first.
      expect(shown).toEqual([N - 4, N - 3, N - 2, N - 1]);
      const thread = pre.slice(pre.indexOf('Earlier in this thread')); // ClickUp puts the task first
      expect(thread).toMatch(new RegExp(`^Earlier in this thread \\(4 messages, oldest first; ${N - 4} older not shown\\)`));
      expect(thread.length).toBeLessThan(2000 + 300); // the header and framing on top of the limit
    });

    it(`${platform}: and at most the message limit`, async () => {
      const pre = await firstTurn({ maxMessages: 3, maxChars: 20_000 });
      expect(shownNumbers(pre)).toEqual([N - 3, N - 2, N - 1]);
    });
  }
});
