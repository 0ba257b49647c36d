/**
 * Slack end to end: signed Events API requests into the real gateway app (PGlite, in-process
 * queue), the reference agent in a runsc sandbox, and everything it says back recorded by the
 * local fake of the Slack Web API.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signSlackRequest } from '../src/adapters/slack/index.js';
import { startFakeSlack, type FakeMessage, type FakeSlack } from './fakes/slack-api.js';
import { manifest, profileId, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { until } from './helpers/wait.js';

const SECRET = 'slack-e2e-signing-secret';
const TEAM = 'T0FAKE';
const BOUND = 'C0BOUND01';
const UNBOUND = 'C0NOBODY1';
const OTHER = 'C0OTHER01';
const HUMAN = 'UHUMAN001';

const main = profileId('slack-main');
const spare = profileId('slack-spare');
let fake: FakeSlack;
let gw: TestGateway;

beforeAll(async () => {
  fake = await startFakeSlack();
  gw = await startTestGateway({
    manifests: [
      manifest(main, { bindings: [{ platform: 'slack', team: TEAM, channels: [BOUND] }] }),
      // Bound elsewhere and never addressed: it must stay asleep throughout.
      manifest(spare, { bindings: [{ platform: 'slack', team: TEAM, channels: [OTHER] }] }),
    ],
    env: { SLACK_SIGNING_SECRET: SECRET, SLACK_BOT_TOKEN: fake.botToken, SLACK_API_URL: fake.url },
  });
});

afterAll(async () => {
  await gw?.close();
  await fake?.close();
});

let seq = 0;
/** A fresh thread timestamp and event id for each message. */
function ids(): { ts: string; eventId: string } {
  seq++;
  return { ts: `${Math.floor(Date.now() / 1000)}.${String(seq).padStart(6, '0')}`, eventId: `EvE2E${randomBytes(5).toString('hex').toUpperCase()}` };
}

function envelope(o: { eventId: string; ts: string; text: string; channel?: string; files?: unknown[] }) {
  return {
    token: 'x',
    team_id: TEAM,
    api_app_id: 'AFAKE',
    type: 'event_callback',
    event_id: o.eventId,
    event_time: Math.floor(Date.now() / 1000),
    authorizations: [{ user_id: fake.botUserId, is_bot: true }],
    event: {
      type: 'app_mention',
      user: HUMAN,
      text: `<@${fake.botUserId}> ${o.text}`,
      ts: o.ts,
      channel: o.channel ?? BOUND,
      team: TEAM,
      ...(o.files ? { files: o.files } : {}),
    },
  };
}

async function post(payload: unknown, o: { secret?: string; headers?: Record<string, string> } = {}): Promise<Response> {
  const raw = JSON.stringify(payload);
  const ts = String(Math.floor(Date.now() / 1000));
  return gw.running.app.request('/slack/events', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-slack-request-timestamp': ts,
      'x-slack-signature': signSlackRequest(o.secret ?? SECRET, ts, raw),
      ...o.headers,
    },
    body: raw,
  });
}

const slackCalls = () => fake.calls.map((c) => c.method).join(', ');

const inThread = (ts: string): FakeMessage[] => fake.messages.filter((m) => m.channel === BOUND && m.thread_ts === ts);
const postsTo = (ts: string, channel = BOUND) => fake.callsTo('chat.postMessage').filter((c) => c.body.channel === channel && c.body.thread_ts === ts);
/** Messages started in the thread: a post, or a stream (an answer streams when the turn outlasts the first progress). */
const startedIn = (ts: string, channel = BOUND) => [...postsTo(ts, channel), ...fake.callsTo('chat.startStream').filter((c) => c.body.channel === channel && c.body.thread_ts === ts)];

const settled = (eventId: string) => gw.settled(`slack:${eventId}`, main, slackCalls);

describe('Slack end to end', () => {
  it('answers a mention in an unbound channel in its thread, and wakes no sandbox', async () => {
    const { ts, eventId } = ids();
    const res = await post(envelope({ eventId, ts, text: 'echo anyone?', channel: UNBOUND }));
    expect(res.status).toBe(200);
    const [notice] = await until(
      'the rejection notice',
      () => {
        const m = fake.messages.filter((x) => x.channel === UNBOUND && x.thread_ts === ts);
        return m.length > 0 ? m : undefined;
      },
      { timeoutMs: 30_000 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}; Slack calls: ${slackCalls()}`);
    });
    expect(notice!.text).toContain('No agent is bound here');
    expect((await gw.ctx.store.gateway.getEvent(`slack:${eventId}`))?.status).toBe('rejected');
    // This runs first in the file: nothing has woken any sandbox of these profiles.
    for (const p of [main, spare]) expect((await gw.ctx.driver.status(p)).state).toBe('missing');
    const ours = (await gw.ctx.driver.list()).filter((s) => s.agentId === main || s.agentId === spare);
    expect(ours).toEqual([]);
  });

  it('puts an attached file in the agent inbox and answers in the thread with what it read', async () => {
    const { ts, eventId } = ids();
    const url = fake.addFile('notes.txt', 'the launch code is 4242\n', { mimetype: 'text/plain' });
    const file = { id: 'F0NOTES01', name: 'notes.txt', mimetype: 'text/plain', size: 24, url_private: url, url_private_download: url };
    // The gateway appends the saved paths to the prompt; `; exit 0` keeps the shell from running those lines.
    // The shell runs in the conversation's own directory, where its inbox is.
    const dir = `inbox/slack_${eventId}`;
    const res = await post(envelope({ eventId, ts, text: `sh cat ${dir}/notes.txt; exit 0`, files: [file] }));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    await settled(eventId);

    // Downloaded with the bot token from the fake.
    expect(fake.downloads.some((d) => d.path.includes('notes.txt') && d.authorization === `Bearer ${fake.botToken}`)).toBe(true);
    const answer = inThread(ts);
    expect(answer).toHaveLength(1);
    expect(answer[0]!.text).toContain('the launch code is 4242');
    expect(answer[0]!.text).toMatch(/^exit 0\n/);
    // The prompt the agent got named where the file was saved.
    const prompt = (await gw.ctx.store.gateway.eventTranscript(`slack:${eventId}`)).find((t) => t.kind === 'prompt');
    expect(prompt?.text).toBe(`sh cat ${dir}/notes.txt; exit 0`);
    expect((await gw.ctx.store.gateway.getEvent(`slack:${eventId}`))?.status).toBe('delivered');
  });

  it('shows progress in the thread while the agent works (assistant status, then a placeholder)', async () => {
    // 1. Assistant threads: setStatus while working, cleared after the answer.
    const a = ids();
    expect((await post(envelope({ ...a, text: 'progress 3' }))).status).toBe(200);
    await settled(a.eventId);
    const statuses = fake.callsTo('assistant.threads.setStatus').filter((c) => c.body.thread_ts === a.ts);
    expect(statuses.length).toBeGreaterThanOrEqual(3);
    // "is thinking…" as soon as the mention is taken in, then the agent's own progress.
    expect(statuses[0]!.body).toMatchObject({ channel_id: BOUND, status: 'is thinking…' });
    expect(statuses[1]!.body).toMatchObject({ channel_id: BOUND, status: expect.stringMatching(/^plan \d\/3/) });
    expect(statuses.at(-1)!.body.status).toBe('');
    expect(inThread(a.ts).map((m) => m.text)).toEqual(['done 3']);

    // 2. A token without assistant access: a "Working on it…" placeholder, replaced by the answer.
    fake.assistantStatus = 'not_allowed_token_type';
    const b = ids();
    expect((await post(envelope({ ...b, text: 'progress 3' }))).status).toBe(200);
    await settled(b.eventId);
    const msgs = inThread(b.ts);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]!.history[0]).toMatch(/^Working on it… plan \d\/3/);
    expect(msgs[0]!.text).toBe('done 3');
    expect(fake.callsTo('chat.update').some((c) => c.body.ts === msgs[0]!.ts && c.body.text === 'done 3')).toBe(true);
  });

  it('uploads a file the agent wrote into the thread through the three-step upload', async () => {
    const { ts, eventId } = ids();
    expect((await post(envelope({ eventId, ts, text: 'write report.txt quarterly numbers are up' }))).status).toBe(200);
    await settled(eventId);
    expect(inThread(ts).map((m) => m.text)).toEqual(['wrote report.txt (24 bytes)']);
    const upload = fake.uploads.find((u) => u.filename === 'report.txt');
    expect(upload).toBeDefined();
    expect(upload!.data?.toString()).toBe('quarterly numbers are up');
    expect(upload).toMatchObject({ completed: true, channel_id: BOUND, thread_ts: ts, length: 24 });
    const order = fake.calls.map((c) => c.method).filter((m) => m.startsWith('files.'));
    expect(order.slice(-2)).toEqual(['files.getUploadURLExternal', 'files.completeUploadExternal']);
    expect(fake.callsTo('files.completeUploadExternal').at(-1)!.body).toMatchObject({ channel_id: BOUND, thread_ts: ts });
  });

  it('runs one turn for an event Slack delivers three times', async () => {
    const { ts, eventId } = ids();
    const body = envelope({ eventId, ts, text: 'echo only once' });
    const first = await post(body);
    const second = await post(body, { headers: { 'x-slack-retry-num': '1', 'x-slack-retry-reason': 'http_timeout' } });
    const third = await post(body, { headers: { 'x-slack-retry-num': '2', 'x-slack-retry-reason': 'http_timeout' } });
    expect([first.status, second.status, third.status]).toEqual([200, 200, 200]);
    await settled(eventId);
    // A straggling duplicate would have had time to queue a second turn by now.
    await new Promise((r) => setTimeout(r, 500));
    await gw.running.gateway.units.get(main)!.idle();
    expect(inThread(ts).map((m) => m.text)).toEqual(['only once']);
    expect(startedIn(ts)).toHaveLength(1);
    const rows = await gw.ctx.store.gateway.eventTranscript(`slack:${eventId}`);
    expect(rows.filter((r) => r.kind === 'prompt')).toHaveLength(1);
    expect(rows.filter((r) => r.kind === 'reply')).toHaveLength(1);
  });

  it('still answers when Slack rate-limits chat.postMessage once', async () => {
    const { ts, eventId } = ids();
    // The answer starts with a post, or with a stream when its text arrives before the reply
    // (timing): whichever comes first is refused once.
    fake.failNext('chat.postMessage|chat.startStream', { status: 429, retryAfter: 1 });
    expect((await post(envelope({ eventId, ts, text: 'echo after the wait' }))).status).toBe(200);
    await settled(eventId);
    const started = startedIn(ts);
    expect(started).toHaveLength(2); // the 429, then the retry after Retry-After
    expect(started[1]!.method).toBe(started[0]!.method);
    expect(inThread(ts).map((m) => m.text)).toEqual(['after the wait']);
    expect((await gw.ctx.store.gateway.getEvent(`slack:${eventId}`))?.status).toBe('delivered');
  });

  it('refuses a bad signature with 401 and stores nothing', async () => {
    const { ts, eventId } = ids();
    const res = await post(envelope({ eventId, ts, text: 'echo forged' }), { secret: 'not-the-secret' });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: 'slack_signature_invalid' });
    expect(await gw.ctx.store.gateway.getEvent(`slack:${eventId}`)).toBeUndefined();
    const unsigned = await gw.running.app.request('/slack/events', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(envelope({ eventId, ts, text: 'echo x' })) });
    expect(unsigned.status).toBe(401);
    expect(await gw.ctx.store.gateway.getEvent(`slack:${eventId}`)).toBeUndefined();
  });
});
