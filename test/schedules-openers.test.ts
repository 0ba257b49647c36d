/**
 * Scheduled runs opening their threads on Slack, Discord and ClickUp (`openThread`), through the
 * real adapters against the platform fakes and the real scheduler's `fire` (a one-shot tick): the
 * opener is posted where `post` says and the run's event names that thread; an existing thread is
 * checked and named; a post the platform refuses is a failed run (its row, an `error` audit row,
 * an error log line, a delivery failure of kind `opener`), never silent; a post the router
 * refuses posts nothing.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClickUpAdapter } from '../src/adapters/clickup/index.js';
import { createDiscordAdapter } from '../src/adapters/discord/index.js';
import { decodeReplyTo as discordReplyTo } from '../src/adapters/discord/parse.js';
import { createSlackAdapter } from '../src/adapters/slack/index.js';
import type { ChannelAdapter, DeliveryFailure, HoldingIntake, InboundEvent, Platform } from '../src/adapters/types.js';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createScheduler } from '../src/schedules/index.js';
import type { Store } from '../src/store/index.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { startFakeDiscord, type FakeDiscord } from './fakes/discord-api.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { PUBLIC_KEY_HEX } from './helpers/discord.js';
import { storeBackends } from './helpers/stores.js';

const GUILD = '930000000000000001';
const TEXT = '930000000000000002';
const VOICE = '930000000000000003';
const OTHER = '930000000000000004';
const TEAM_CU = '9101';

let store: Store;
let closeStore: () => Promise<void>;
let slack: FakeSlack;
let discord: FakeDiscord;
let clickup: FakeClickUp;
const logs: Array<{ level: number; msg: string; reason?: string }> = [];
const logger = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (logs.push(JSON.parse(c.toString()) as (typeof logs)[number]), cb()) }));
const failures: DeliveryFailure[] = [];
const adapters = new Map<Platform, ChannelAdapter>();
const accepted: InboundEvent[] = [];

const intake: HoldingIntake = {
  async accept(e) {
    accepted.push(e);
    await store.gateway.insertEvent({ id: e.id, platform: e.platform, profile: 'x', conversation: e.conversation, status: 'queued', payload: e });
    return { status: 'accepted', profile: 'x' };
  },
  hold: async () => ({ status: 'held' }),
  route: async () => ({ status: 'accepted', profile: 'x' }),
  drop: async () => {},
  held: async () => [],
};

beforeAll(async () => {
  ({ store, close: closeStore } = await storeBackends('sched-open')[0]!.open());
  [slack, discord, clickup] = await Promise.all([
    startFakeSlack(),
    startFakeDiscord({ guilds: [{ id: GUILD, channels: [{ id: TEXT, name: 'general' }, { id: VOICE, name: 'voice', type: 2 }, { id: OTHER, name: 'other' }] }] }),
    startFakeClickUp(),
  ]);
  const onDeliveryFailure = (f: DeliveryFailure) => failures.push(f);
  adapters.set('slack', createSlackAdapter({ signingSecret: 's', botToken: slack.botToken, apiUrl: slack.url, intake, logger, onDeliveryFailure, retryConfig: { retries: 0 } }));
  adapters.set('discord', createDiscordAdapter({ publicKey: PUBLIC_KEY_HEX, applicationId: discord.applicationId, botToken: discord.botToken, apiUrl: discord.url, intake, logger, onDeliveryFailure }));
  adapters.set('clickup', createClickUpAdapter({ token: clickup.token, apiUrl: clickup.url, intake, logger, onDeliveryFailure, sleep: async () => {} }));
});

afterAll(async () => {
  for (const a of adapters.values()) await a.close?.();
  await Promise.all([slack?.close(), discord?.close(), clickup?.close()]);
  await closeStore?.();
});

function profileWith(post: Record<string, unknown>, binding: Record<string, unknown>): Profile {
  const id = `so-${randomBytes(3).toString('hex')}`;
  const v = validateProfile({
    version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L0',
    bindings: [binding],
    schedules: [{ name: 'daily', cron: '0 9 * * *', prompt: 'the daily report', post }],
  }, 'p.yaml');
  if (!v.profile) throw new Error(JSON.stringify(v.issues));
  return v.profile;
}

/** One tick of the profile's schedule; `routeTo` is the profile the router would pick. */
async function tick(p: Profile, routeTo: string = p.id) {
  const s = createScheduler({
    profiles: () => new Map([[p.id, p]]),
    intake,
    route: () => ({ ok: true, profile: { id: routeTo } }),
    adapters,
    store: { scheduleRuns: store.scheduleRuns, events: store.gateway },
    audit: createAuditLog(store.audit),
    logger,
  });
  const t = new Date(Math.floor(Date.now() / 1000) * 1000);
  const before = { failures: failures.length, logs: logs.length, accepted: accepted.length };
  const outcome = await s.fire(p.id, 'daily', t);
  await s.close();
  const audit = (await store.audit.tail(50)).find((r) => r.profile === p.id && r.action === 'schedule.run');
  return {
    outcome,
    run: await store.scheduleRuns.last(p.id, 'daily'),
    audit,
    event: accepted.slice(before.accepted)[0],
    failures: failures.slice(before.failures),
    errors: logs.slice(before.logs).filter((l) => l.level >= 50).map((l) => l.msg),
  };
}

/** A failed run, seen everywhere an operator looks. */
function expectFailed(r: Awaited<ReturnType<typeof tick>>, reason: RegExp, platform: Platform) {
  expect(r.outcome).toMatchObject({ status: 'failed', reason: expect.stringMatching(reason) });
  expect(r.run).toMatchObject({ status: 'failed', reason: expect.stringMatching(reason) });
  expect(r.audit).toMatchObject({ decision: 'error', reason: expect.stringMatching(reason) });
  expect(r.errors).toEqual(expect.arrayContaining(['schedule run failed', `${platform}: delivery failed and nobody in the thread was told`]));
  expect(r.failures).toEqual([expect.objectContaining({ platform, kind: 'opener', shown: false })]);
  expect(r.event).toBeUndefined();
}

describe('Slack', () => {
  const bind = () => ({ platform: 'slack', team: slack.teamId, channels: ['C0SCHED01'] });

  it('posts the opener in the channel; its ts is the thread and the conversation, and the answer lands in it', async () => {
    const r = await tick(profileWith({ platform: 'slack', team: slack.teamId, channel: 'C0SCHED01' }, bind()));
    expect(r.outcome.status).toBe('started');
    const opener = slack.messages.filter((m) => m.channel === 'C0SCHED01' && !m.thread_ts).at(-1)!;
    expect(opener.text).toMatch(/^Scheduled run "daily" \(/);
    expect(r.event).toMatchObject({ platform: 'slack', conversation: `slack:${slack.teamId}:C0SCHED01:${opener.ts}`, text: 'the daily report' });
    expect(r.run).toMatchObject({ status: 'started', conversation: r.event!.conversation });
    await adapters.get('slack')!.send({ kind: 'reply', conversation: r.event!.conversation, eventId: r.event!.id, text: 'report done', files: [], heldBack: [] });
    expect(slack.messages.filter((m) => m.thread_ts === opener.ts).map((m) => m.text).join('\n')).toContain('report done');
  });

  it('names an existing thread without posting; an unknown thread is a failed run', async () => {
    const ts = slack.addThreadMessage({ channel: 'C0SCHED01', user: 'UHUMAN', text: 'weekly thread' });
    const posts = slack.callsTo('chat.postMessage').length;
    const ok = await tick(profileWith({ platform: 'slack', team: slack.teamId, channel: 'C0SCHED01', thread: ts }, bind()));
    expect(ok.event?.conversation).toBe(`slack:${slack.teamId}:C0SCHED01:${ts}`);
    const bad = await tick(profileWith({ platform: 'slack', team: slack.teamId, channel: 'C0SCHED01', thread: '1.000001' }, bind()));
    expectFailed(bad, /thread_not_found/, 'slack');
    expect(slack.callsTo('chat.postMessage').length).toBe(posts);
  });

  it('a post Slack refuses (channel_not_found), or in another workspace, is a failed run', async () => {
    slack.failNext('chat.postMessage', { error: 'channel_not_found' });
    expectFailed(await tick(profileWith({ platform: 'slack', team: slack.teamId, channel: 'C0SCHED01' }, bind())), /chat\.postMessage: channel_not_found/, 'slack');
    const posts = slack.callsTo('chat.postMessage').length;
    expectFailed(await tick(profileWith({ platform: 'slack', team: 'T0ELSEWHERE', channel: 'C0SCHED01' }, { platform: 'slack', team: 'T0ELSEWHERE', channels: ['C0SCHED01'] })), /belongs to workspace/, 'slack');
    expect(slack.callsTo('chat.postMessage').length).toBe(posts);
  });

  it('a post the router sends to another profile posts nothing', async () => {
    const posts = slack.callsTo('chat.postMessage').length;
    const r = await tick(profileWith({ platform: 'slack', team: slack.teamId, channel: 'C0SCHED01' }, bind()), 'someone-else');
    expect(r.outcome).toMatchObject({ status: 'rejected' });
    expect(slack.callsTo('chat.postMessage').length).toBe(posts);
  });
});

describe('Discord', () => {
  const bind = { platform: 'discord', guild: GUILD, channels: [TEXT, VOICE] };

  it('posts the opener and opens a thread on it; the thread is the conversation and takes the answer', async () => {
    const r = await tick(profileWith({ platform: 'discord', guild: GUILD, channel: TEXT }, bind));
    expect(r.outcome.status).toBe('started');
    const opener = discord.allMessages().filter((m) => m.channel_id === TEXT).at(-1)!;
    expect(opener.content).toMatch(/^Scheduled run "daily"/);
    expect(discord.find('POST', `/channels/${TEXT}/messages/${opener.id}/threads`)).toHaveLength(1);
    expect(r.event).toMatchObject({ conversation: `discord:${GUILD}:${opener.id}` });
    expect(discordReplyTo(r.event!.replyTo)).toMatchObject({ kind: 'channel', channel: opener.id, fallback: TEXT, reference: opener.id });
    await adapters.get('discord')!.send({ kind: 'reply', conversation: r.event!.conversation, replyTo: r.event!.replyTo!, eventId: r.event!.id, text: 'report done', files: [], heldBack: [] });
    expect(discord.allMessages().filter((m) => m.channel_id === opener.id).map((m) => m.content)).toEqual(['report done']);
  });

  it('where the channel refuses threads, the conversation is the channel and the answer replies to the opener', async () => {
    const r = await tick(profileWith({ platform: 'discord', guild: GUILD, channel: VOICE }, bind));
    expect(r.outcome.status).toBe('started');
    const opener = discord.allMessages().filter((m) => m.channel_id === VOICE).at(-1)!;
    expect(r.event).toMatchObject({ conversation: `discord:${GUILD}:${VOICE}` });
    expect(r.failures).toEqual([expect.objectContaining({ kind: 'opener', step: 'thread', code: '50024', shown: true })]);
    await adapters.get('discord')!.send({ kind: 'reply', conversation: r.event!.conversation, replyTo: r.event!.replyTo!, eventId: r.event!.id, text: 'in the channel', files: [], heldBack: [] });
    expect(discord.allMessages().filter((m) => m.channel_id === VOICE).at(-1)).toMatchObject({ content: 'in the channel' });
    const call = discord.find('POST', `/channels/${VOICE}/messages`).at(-1)!;
    expect(call.json).toMatchObject({ message_reference: { message_id: opener.id } });
  });

  it('names an existing thread of the channel; a thread of another channel, or a refused post, is a failed run', async () => {
    const first = await tick(profileWith({ platform: 'discord', guild: GUILD, channel: TEXT }, bind));
    const thread = first.event!.conversation.split(':')[2]!;
    const posts = discord.find('POST', /^\/channels\/\d+\/messages$/).length;
    const ok = await tick(profileWith({ platform: 'discord', guild: GUILD, channel: TEXT, thread }, bind));
    expect(ok.event).toMatchObject({ conversation: `discord:${GUILD}:${thread}` });
    expect(discordReplyTo(ok.event!.replyTo)).toMatchObject({ kind: 'channel', channel: thread, thread: true });
    expectFailed(await tick(profileWith({ platform: 'discord', guild: GUILD, channel: VOICE, thread }, bind)), /is not a thread of channel/, 'discord');
    expect(discord.find('POST', /^\/channels\/\d+\/messages$/).length).toBe(posts);
    discord.failNext({ status: 403, code: 50013, match: /^POST \/channels\/\d+\/messages$/ });
    expectFailed(await tick(profileWith({ platform: 'discord', guild: GUILD, channel: TEXT }, bind)), /403/, 'discord');
  });
});

describe('ClickUp', () => {
  function task(list = '7301'): string {
    const id = `t${randomBytes(4).toString('hex')}`;
    clickup.tasks.set(id, { id, name: 'Weekly numbers', team_id: TEAM_CU, space: { id: '5301' }, folder: { id: '6301' }, list: { id: list } });
    return id;
  }
  const bind = { platform: 'clickup', team: TEAM_CU, space: '5301', trigger: '@helper' };

  it('comments the opener on the task; the task is the conversation, the opener stands where a comment would', async () => {
    const id = task();
    const r = await tick(profileWith({ platform: 'clickup', team: TEAM_CU, space: '5301', thread: id }, bind));
    expect(r.outcome.status).toBe('started');
    const [opener] = clickup.comments.get(id)!;
    expect(opener!.comment_text).toMatch(/^Scheduled run "daily"/);
    expect(r.event).toMatchObject({ conversation: `clickup:${id}`, replyTo: `clickup-comment:${opener!.id}:${opener!.date}`, text: '@helper the daily report' });
    await adapters.get('clickup')!.send({ kind: 'reply', conversation: r.event!.conversation, replyTo: r.event!.replyTo!, eventId: r.event!.id, text: 'report done', files: [], heldBack: [] });
    expect(clickup.comments.get(id)!.map((c) => c.comment_text)).toEqual([opener!.comment_text, 'report done']);
  });

  it('a task outside the post (another list), or a comment ClickUp refuses, is a failed run', async () => {
    const elsewhere = task('7999');
    expectFailed(await tick(profileWith({ platform: 'clickup', team: TEAM_CU, space: '5301', list: '7301', thread: elsewhere }, bind)), /is not in list 7301/, 'clickup');
    expect(clickup.comments.get(elsewhere)).toBeUndefined();
    clickup.failNext(404, 1, /^POST \/task\/.*\/comment$/);
    expectFailed(await tick(profileWith({ platform: 'clickup', team: TEAM_CU, space: '5301', thread: task() }, bind)), /404/, 'clickup');
  });
});
