/**
 * Schedules posting to Slack, Discord and ClickUp through the whole gateway (startGatewayApp, the
 * platform fakes, the reference agent under runsc): one profile bound to all three, a schedule
 * every second on each (overlap: skip). Each run posts its opener where `post` says, the agent is
 * woken like by a message, and its answer lands in that same thread; the run's transcript has it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScheduleRunRow } from '../src/store/schedules.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { startFakeDiscord, type FakeDiscord } from './fakes/discord-api.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { PUBLIC_KEY_HEX } from './helpers/discord.js';
import { manifest, profileId, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { until } from './helpers/wait.js';

const GUILD = '940000000000000001';
const CHANNEL = '940000000000000002';
const SLACK_CHANNEL = 'C0SCHEDE2E';
const CU_TEAM = '9201';
const CU_SPACE = '5401';
const TASK = `t${randomBytes(4).toString('hex')}`;

const id = profileId('sched-plat');
let slack: FakeSlack;
let discord: FakeDiscord;
let clickup: FakeClickUp;
let gw: TestGateway;

beforeAll(async () => {
  [slack, discord, clickup] = await Promise.all([
    startFakeSlack(),
    startFakeDiscord({ guilds: [{ id: GUILD, channels: [{ id: CHANNEL, name: 'reports' }] }] }),
    startFakeClickUp(),
  ]);
  clickup.tasks.set(TASK, { id: TASK, name: 'Weekly numbers', team_id: CU_TEAM, space: { id: CU_SPACE }, folder: { id: '6401' }, list: { id: '7401' } });
  const every = (name: string, post: Record<string, unknown>) => ({ name, cron: '* * * * * *', prompt: `echo ${name}-answer`, post, overlap: 'skip' });
  gw = await startTestGateway({
    manifests: [
      manifest(id, {
        bindings: [
          { platform: 'slack', team: slack.teamId, channels: [SLACK_CHANNEL] },
          { platform: 'discord', guild: GUILD, channels: [CHANNEL], command: 'ask' },
          { platform: 'clickup', team: CU_TEAM, space: CU_SPACE, trigger: '@helper' },
        ],
        schedules: [
          every('slack', { platform: 'slack', team: slack.teamId, channel: SLACK_CHANNEL }),
          every('discord', { platform: 'discord', guild: GUILD, channel: CHANNEL }),
          every('clickup', { platform: 'clickup', team: CU_TEAM, space: CU_SPACE, thread: TASK }),
        ],
      }),
    ],
    env: {
      SLACK_SIGNING_SECRET: 'sched-e2e', SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url,
      DISCORD_PUBLIC_KEY: PUBLIC_KEY_HEX, DISCORD_APPLICATION_ID: discord.applicationId, DISCORD_BOT_TOKEN: discord.botToken, DISCORD_API_URL: discord.url,
      CLICKUP_TOKEN: clickup.token, CLICKUP_WEBHOOK_SECRET: 'sched-e2e', CLICKUP_API_URL: clickup.url,
    },
  });
}, 120_000);

afterAll(async () => {
  await gw?.close();
  await Promise.all([slack?.close(), discord?.close(), clickup?.close()]);
});

/** The first run of `schedule` whose turn was delivered. */
function delivered(schedule: string): Promise<ScheduleRunRow> {
  return until(
    `a delivered run of ${schedule}`,
    async () => {
      const runs = await gw.ctx.store.scheduleRuns.startedBefore(id, schedule, new Date(Date.now() + 60_000), 100);
      for (const r of runs.reverse()) {
        const ev = r.eventId ? await gw.ctx.store.gateway.getEvent(r.eventId) : undefined;
        if (ev?.status === 'delivered') return r;
      }
      return undefined;
    },
    { timeoutMs: 90_000, everyMs: 250 },
  );
}

async function transcriptHas(conversation: string, text: string): Promise<void> {
  const rows = await gw.ctx.store.gateway.transcript(conversation);
  expect(rows.map((t) => [t.kind, t.text])).toEqual(expect.arrayContaining([['reply', text]]));
}

describe('scheduled runs on the platforms', () => {
  it('Slack: the opener is a channel message and the answer is in its thread', async () => {
    const run = await delivered('slack');
    const ts = /^slack:[^:]+:[^:]+:(\d+\.\d+)$/.exec(run.conversation!)?.[1];
    const opener = slack.messages.find((m) => m.channel === SLACK_CHANNEL && m.ts === ts && !m.thread_ts);
    expect(opener?.text).toMatch(/^Scheduled run "slack"/);
    await until('the answer in the thread', () => (slack.messages.some((m) => m.thread_ts === ts && [m.text, ...(m.pieces ?? [])].join('').includes('slack-answer')) ? true : undefined));
    await transcriptHas(run.conversation!, 'slack-answer');
  }, 120_000);

  it('Discord: the opener is a channel message, the thread on it holds the answer', async () => {
    const run = await delivered('discord');
    const thread = run.conversation!.split(':')[2]!;
    const opener = discord.message(thread);
    expect(opener).toMatchObject({ channel_id: CHANNEL, content: expect.stringMatching(/^Scheduled run "discord"/) });
    expect(discord.find('POST', `/channels/${CHANNEL}/messages/${thread}/threads`)).toHaveLength(1);
    expect(discord.allMessages().filter((m) => m.channel_id === thread).map((m) => m.content).join('\n')).toContain('discord-answer');
    await transcriptHas(run.conversation!, 'discord-answer');
  }, 120_000);

  it('ClickUp: the opener and the answer are comments on the task', async () => {
    const run = await delivered('clickup');
    expect(run.conversation).toBe(`clickup:${TASK}`);
    const texts = (clickup.comments.get(TASK) ?? []).map((c) => c.comment_text);
    expect(texts[0]).toMatch(/^Scheduled run "clickup"/);
    expect(texts).toContain('clickup-answer');
    await transcriptHas(run.conversation!, 'clickup-answer');
    const audit = (await gw.ctx.store.audit.tail(1000)).filter((a) => a.profile === id && a.action === 'schedule.run' && a.decision === 'allow');
    expect(new Set(audit.map((a) => a.subject))).toEqual(new Set(['slack', 'discord', 'clickup']));
  }, 120_000);
});
