/**
 * Issue 10, item 1: a file leaves only into the conversation whose turn wrote it. One profile,
 * bound to Slack, Discord, ClickUp and local at once, answers two conversations at the same time
 * through each adapter (real gateway, runsc sandbox with the reference agent, the platform fakes),
 * on PGlite and on PostgreSQL + Redis: conversation A writes `fromA.txt` while B, started 0.3 s
 * later, writes `fromB.txt`; each file is uploaded only where its conversation lives, each reply
 * carries only its own file, and the transcripts agree.
 *
 * Under runsc the sandbox used to die (exit code 2) while the two turns overlapped: the host pids
 * limit counted the sentry's threads, not the agent's processes (hardening.ts, pidsLimits). If it
 * ever dies again, the gateway restarts the agent and runs the interrupted turns once more
 * (converse.ts, agentGone), and the files still leave once, each into its own place.
 *
 * The hostile half (an agent in one conversation writing into another's directory) is in
 * conversation-isolation-hostile.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signSlackRequest } from '../src/adapters/slack/index.js';
import type { TurnOutcome } from '../src/adapters/types.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { startFakeDiscord, type FakeDiscord } from './fakes/discord-api.js';
import { describeCalls } from './fakes/http.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { commentPostedBody, deliverWebhook } from './helpers/clickup.js';
import { PUBLIC_KEY_HEX, postInteraction, slashCommand } from './helpers/discord.js';
import { manifest, profileId, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { slackDriver, type SlackDriver } from './helpers/slack-driver.js';

const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const SLACK_SECRET = 'iso-slack-secret';
const CU_SECRET = 'iso-clickup-secret';
const TEAM = 'T0ISO';
const CHANNEL = 'C0ISOA001';
const DM = 'D0ISOB001';
const HUMAN = 'UISOHUMAN';
const GUILD = '930000000000000001';
const DC_A = '930000000000000002';
const DC_B = '930000000000000003';
const DC_USER = '930000000000000004';
const CU_TEAM = '9301';
const CU_SPACE = '9302';
const TRIGGER = '@iso';

/** The issue's reproduction: A writes at ~2 s and ends at ~5 s; B (0.3 s later) writes at ~1 s and ends at ~4 s. */
const A_TEXT = 'sh sleep 2; printf A1 > outbox/fromA.txt; sleep 3; echo A-done';
const B_TEXT = 'sh sleep 1; printf B1 > outbox/fromB.txt; sleep 3; echo B-done';
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(['pglite', 'postgres+redis'] as const)('two conversations of one profile at once, on %s', (backend) => {
  const id = profileId(`iso-${backend === 'pglite' ? 'pg' : 'rd'}`);
  let slack: FakeSlack;
  let discord: FakeDiscord;
  let clickup: FakeClickUp;
  let db: TestDatabase | undefined;
  let gw: TestGateway;
  let sl: SlackDriver;

  beforeAll(async () => {
    slack = await startFakeSlack();
    discord = await startFakeDiscord({ guilds: [{ id: GUILD, channels: [{ id: DC_A, name: 'a' }, { id: DC_B, name: 'b' }] }] });
    clickup = await startFakeClickUp();
    const env: Record<string, string> = {
      SLACK_SIGNING_SECRET: SLACK_SECRET, SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url,
      DISCORD_PUBLIC_KEY: PUBLIC_KEY_HEX, DISCORD_APPLICATION_ID: discord.applicationId, DISCORD_BOT_TOKEN: discord.botToken, DISCORD_API_URL: discord.url,
      CLICKUP_TOKEN: clickup.token, CLICKUP_WEBHOOK_SECRET: CU_SECRET, CLICKUP_API_URL: clickup.url,
    };
    if (backend === 'postgres+redis') {
      db = await createTestDatabase();
      Object.assign(env, { DATABASE_URL: db.url, REDIS_URL: redisUrl });
    }
    gw = await startTestGateway({
      manifests: [
        manifest(id, {
          bindings: [
            { platform: 'slack', team: TEAM },
            { platform: 'discord', guild: GUILD, channels: [DC_A, DC_B], command: 'ask' },
            { platform: 'clickup', team: CU_TEAM, space: CU_SPACE, trigger: TRIGGER },
            { platform: 'local', channels: ['*'] },
          ],
        }),
      ],
      env,
    });
    sl = slackDriver({ gw, slack, secret: SLACK_SECRET, team: TEAM, user: HUMAN });
    // Wake the sandbox first, so the two turns below overlap in the agent, not in its start.
    const warm = await gw.send({ profile: id, text: 'echo awake' });
    expect(warm.outcome).toMatchObject({ kind: 'reply', text: 'awake' });
  });

  afterAll(async () => {
    await gw?.close();
    await db?.drop();
    await Promise.all([slack?.close(), discord?.close(), clickup?.close()]);
  });

  /** A direct message to the bot, as Slack sends it (`message` with `channel_type: im`). */
  async function dm(ts: string, text: string): Promise<{ eventId: string }> {
    const eventId = `EvISO${randomBytes(5).toString('hex').toUpperCase()}`;
    const body = JSON.stringify({
      token: 'x', team_id: TEAM, api_app_id: 'AFAKE', type: 'event_callback', event_id: eventId, event_time: Math.floor(Date.now() / 1000),
      authorizations: [{ user_id: slack.botUserId, is_bot: true }],
      event: { type: 'message', channel_type: 'im', user: HUMAN, text, ts, channel: DM, team: TEAM },
    });
    const stamp = String(Math.floor(Date.now() / 1000));
    const res = await gw.running.app.request('/slack/events', {
      method: 'POST', body,
      headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signSlackRequest(SLACK_SECRET, stamp, body) },
    });
    expect(res.status).toBe(200);
    return { eventId: `slack:${eventId}` };
  }

  /** Both events settled, then each event's transcript: its reply and the names of its files. */
  async function transcripts(eventA: string, eventB: string, calls: () => string) {
    await gw.settled(eventA, id, calls);
    await gw.settled(eventB, id, calls);
    const of = async (eventId: string) => {
      const rows = await gw.ctx.store.gateway.eventTranscript(eventId);
      if (!rows.some((r) => r.kind === 'reply')) throw new Error(`${eventId}: ${JSON.stringify(await gw.ctx.store.gateway.getEvent(eventId))} ${JSON.stringify(rows)}`);
      return { reply: rows.filter((r) => r.kind === 'reply').map((r) => r.text), files: rows.filter((r) => r.kind === 'file').map((r) => r.text) };
    };
    const [a, b] = [await of(eventA), await of(eventB)];
    expect(a).toEqual({ reply: ['exit 0\nA-done\n'], files: ['fromA.txt'] });
    expect(b).toEqual({ reply: ['exit 0\nB-done\n'], files: ['fromB.txt'] });
    for (const e of [eventA, eventB]) expect((await gw.ctx.store.gateway.getEvent(e))?.status).toBe('delivered');
  }

  it('Slack: a channel thread and a DM each get only their own file', async () => {
    const tsA = sl.nextTs();
    const a = await sl.mention({ channel: CHANNEL, ts: tsA, text: A_TEXT });
    await pause(300);
    const tsB = sl.nextTs();
    const b = await dm(tsB, B_TEXT);
    await transcripts(a.eventId, b.eventId, sl.calls);

    const completes = slack.callsTo('files.completeUploadExternal').map((c) => ({ channel_id: c.body.channel_id, thread_ts: c.body.thread_ts, files: JSON.stringify(c.body.files) }));
    expect(completes).toHaveLength(2);
    const uploads = slack.uploads.filter((u) => u.completed).map((u) => ({ name: u.filename, data: u.data?.toString(), channel_id: u.channel_id, thread_ts: u.thread_ts }));
    expect(uploads.sort((x, y) => x.name.localeCompare(y.name))).toEqual([
      { name: 'fromA.txt', data: 'A1', channel_id: CHANNEL, thread_ts: tsA },
      { name: 'fromB.txt', data: 'B1', channel_id: DM, thread_ts: tsB },
    ]);
    expect(sl.threadText(CHANNEL, tsA)).toContain('A-done');
    expect(sl.threadText(CHANNEL, tsA)).not.toContain('B-done');
    expect(sl.threadText(DM, tsB)).toContain('B-done');
    expect(sl.threadText(DM, tsB)).not.toContain('A-done');
  });

  it('Discord: slash commands in two channels each get only their own attachment', async () => {
    const pa = slashCommand({ applicationId: discord.applicationId, guild: GUILD, channel: DC_A, user: DC_USER }, A_TEXT);
    const pb = slashCommand({ applicationId: discord.applicationId, guild: GUILD, channel: DC_B, user: DC_USER }, B_TEXT);
    expect(await (await postInteraction(gw.running.app, pa)).json()).toEqual({ type: 5 });
    await pause(300);
    expect(await (await postInteraction(gw.running.app, pb)).json()).toEqual({ type: 5 });
    await transcripts(`discord:${pa.id}`, `discord:${pb.id}`, () => describeCalls(discord.calls));

    const attached = (token: string) => discord.calls.filter((c) => c.path.includes(token)).flatMap((c) => c.files.map((f) => `${f.filename}=${f.data.toString()}`));
    expect(attached(pa.token)).toEqual(['fromA.txt=A1']);
    expect(attached(pb.token)).toEqual(['fromB.txt=B1']);
    // Nothing went out by another way (bot messages in either channel).
    expect(discord.calls.filter((c) => c.method === 'POST' && c.path.startsWith('/channels/') && c.files.length > 0)).toEqual([]);
    const said = (token: string) => discord.calls.filter((c) => c.path.includes(token)).map((c) => (c.json as { content?: string } | undefined)?.content ?? '').join('\n');
    expect(said(pa.token)).toContain('A-done');
    expect(said(pa.token)).not.toContain('B-done');
    expect(said(pb.token)).toContain('B-done');
    expect(said(pb.token)).not.toContain('A-done');
  });

  it('ClickUp: comments on two tasks each get only their own attachment', async () => {
    const task = () => {
      const t = `t${randomBytes(4).toString('hex')}`;
      clickup.tasks.set(t, { id: t, name: `Task ${t}`, team_id: CU_TEAM, space: { id: CU_SPACE }, folder: { id: '9303' }, list: { id: '9304' } });
      return t;
    };
    const comment = async (taskId: string, text: string) => {
      const historyId = String(BigInt('2900000000000000000') + BigInt(randomBytes(4).readUInt32BE()));
      const body = commentPostedBody({ historyId, taskId, parentId: taskId, user: { id: 931, username: 'Ann', email: 'ann@example.com' }, text: `${TRIGGER} ${text}\n`, date: String(Date.now()) });
      expect((await deliverWebhook(gw.running.app, body, CU_SECRET)).status).toBe(200);
      return `clickup:${historyId}`;
    };
    const [ta, tb] = [task(), task()];
    const a = await comment(ta, A_TEXT);
    await pause(300);
    const b = await comment(tb, B_TEXT);
    await transcripts(a, b, () => describeCalls(clickup.calls));

    const attachments = clickup.calls.filter((c) => c.method === 'POST' && c.path.endsWith('/attachment')).map((c) => `${c.path} ${c.files.map((f) => `${f.name}=${f.data.toString()}`).join(',')}`);
    expect(attachments.sort()).toEqual([`/task/${ta}/attachment fromA.txt=A1`, `/task/${tb}/attachment fromB.txt=B1`].sort());
    const replies = (t: string) => clickup.find('POST', `/task/${t}/comment`).filter((c) => c.status === 200).map((c) => (c.json as { comment_text: string }).comment_text);
    expect(replies(ta)).toEqual([expect.stringMatching(/A-done[\s\S]*fromA\.txt/)]);
    expect(replies(tb)).toEqual([expect.stringMatching(/B-done[\s\S]*fromB\.txt/)]);
    expect(replies(ta).join()).not.toContain('fromB');
    expect(replies(tb).join()).not.toContain('fromA');
  });

  it('local: two conversations each get only their own reply file', async () => {
    const ca = `a-${randomBytes(3).toString('hex')}`;
    const cb = `b-${randomBytes(3).toString('hex')}`;
    const pa = gw.send({ profile: id, conversation: ca, text: A_TEXT });
    await pause(300);
    const pb = gw.send({ profile: id, conversation: cb, text: B_TEXT });
    const [ra, rb] = await Promise.all([pa, pb]);
    const files = (o: TurnOutcome) => (o.kind === 'reply' ? o.files.map((f) => `${f.name}=${f.data.toString()}`) : [`<${o.kind}: ${o.text}>`]);
    expect(files(ra.outcome)).toEqual(['fromA.txt=A1']);
    expect(files(rb.outcome)).toEqual(['fromB.txt=B1']);
    await transcripts(ra.eventId, rb.eventId, () => 'local');
  });
});
