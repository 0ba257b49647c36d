/**
 * The Slack adapter against a recording Intake and a local fake of the Slack Web API: request
 * verification, event parsing, acknowledgement, progress, replies, files in and out, Socket Mode.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSlackAdapter, signSlackRequest, verifySlackSignature, type SlackAdapterOptions } from '../src/adapters/slack/index.js';
import { markdownToMrkdwn, splitMessage } from '../src/adapters/slack/mrkdwn.js';
import type { InboundEvent, Intake, IntakeResult, OutboundMessage } from '../src/adapters/types.js';
import { AgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { mounted } from './helpers/app.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';

const SECRET = 'test-signing-secret';
const NOW = 1_700_000_000_000;
const TEAM = 'T0FAKE';
const CHANNEL = 'C0CHAN';
const logger = createLogger('silent');

interface RecordingIntake extends Intake {
  events: InboundEvent[];
}

function recordingIntake(answer?: (e: InboundEvent) => IntakeResult | Promise<IntakeResult>): RecordingIntake {
  const seen = new Set<string>();
  const events: InboundEvent[] = [];
  return {
    events,
    async accept(e) {
      events.push(e);
      if (seen.has(e.id)) return { status: 'duplicate', profile: 'helper' };
      seen.add(e.id);
      return answer ? answer(e) : { status: 'accepted', profile: 'helper' };
    },
  };
}

let fake: FakeSlack;
let clock: number;
const adapters: Array<{ close(): Promise<void> }> = [];

beforeEach(async () => {
  fake = await startFakeSlack();
  clock = NOW;
});

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.close();
  await fake.close();
});

function makeAdapter(intake: Intake = recordingIntake(), extra: Partial<SlackAdapterOptions> = {}) {
  const adapter = createSlackAdapter({
    signingSecret: SECRET,
    botToken: fake.botToken,
    apiUrl: fake.url,
    intake,
    logger,
    now: () => clock,
    botUserId: fake.botUserId,
    retryConfig: { retries: 2, minTimeout: 10, maxTimeout: 50 },
    ...extra,
  });
  adapters.push(adapter);
  return adapter;
}

function envelope(event: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { token: 'x', team_id: TEAM, api_app_id: 'AFAKE', type: 'event_callback', event_id: 'Ev0001', event_time: NOW / 1000, event, ...extra };
}

function mention(extra: Record<string, unknown> = {}) {
  return { type: 'app_mention', user: 'UHUMAN1', text: `<@${'UBOT0001'}> summarize   this`, ts: '1699999999.000100', channel: CHANNEL, team: TEAM, ...extra };
}

async function post(
  adapter: ReturnType<typeof makeAdapter>,
  payload: unknown,
  o: { ts?: number; secret?: string; body?: (signed: string) => string; headers?: Record<string, string> } = {},
) {
  const raw = JSON.stringify(payload);
  const ts = String(o.ts ?? Math.floor(clock / 1000));
  const signature = signSlackRequest(o.secret ?? SECRET, ts, raw);
  return mounted(adapter.routes).request('/slack/events', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': ts, 'x-slack-signature': signature, ...o.headers },
    body: o.body ? o.body(raw) : raw,
  });
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const conv = (threadTs = '1699999999.000100') => `slack:${TEAM}:${CHANNEL}:${threadTs}`;
const reply = (text: string, extra: Partial<Extract<OutboundMessage, { kind: 'reply' }>> = {}): OutboundMessage => ({
  kind: 'reply', conversation: conv(), eventId: 'slack:Ev0001', text, files: [], heldBack: [], ...extra,
});
const progress = (text: string): OutboundMessage => ({ kind: 'progress', conversation: conv(), eventId: 'slack:Ev0001', text });

describe('signature verification', () => {
  it("accepts Slack's own worked example with an injected clock", () => {
    const body = 'token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c';
    const args = {
      signingSecret: '8f742231b10e8888abcd99yyyzzz85a5',
      timestamp: '1531420618',
      signature: 'v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503',
      body,
    };
    expect(signSlackRequest(args.signingSecret, args.timestamp, body)).toBe(args.signature);
    expect(verifySlackSignature({ ...args, nowMs: 1531420618_000 + 60_000 })).toEqual({ ok: true });
    expect(verifySlackSignature({ ...args, nowMs: 1531420618_000 + 6 * 60_000 })).toEqual({ ok: false, reason: 'stale timestamp' });
    expect(verifySlackSignature({ ...args, body: body.replace('roadrunner', 'coyote'), nowMs: 1531420618_000 })).toEqual({ ok: false, reason: 'signature mismatch' });
    expect(verifySlackSignature({ ...args, signature: undefined, nowMs: 1531420618_000 }).ok).toBe(false);
  });

  it.each([
    ['a bad signature', { secret: 'wrong-secret' }],
    ['a stale timestamp', { ts: NOW / 1000 - 301 }],
    ['a timestamp from the future', { ts: NOW / 1000 + 301 }],
    ['a body changed after signing', { body: (b: string) => b.replace('summarize', 'delete all') }],
  ])('answers 401 to %s and never calls intake', async (_name, o) => {
    const intake = recordingIntake();
    const res = await post(makeAdapter(intake), envelope(mention()), o);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: 'slack_signature_invalid' });
    expect(intake.events).toEqual([]);
  });

  it('refuses everything when no signing secret is configured (an empty key would let anyone sign)', async () => {
    const intake = recordingIntake();
    const res = await post(makeAdapter(intake, { signingSecret: '' }), envelope(mention()), { secret: '' });
    expect(res.status).toBe(401);
    expect(intake.events).toEqual([]);
  });

  it('answers 401 when the signature headers are missing', async () => {
    const intake = recordingIntake();
    const res = await mounted(makeAdapter(intake).routes).request('/slack/events', { method: 'POST', body: JSON.stringify(envelope(mention())) });
    expect(res.status).toBe(401);
    expect(intake.events).toEqual([]);
  });
});

describe('inbound events', () => {
  it('answers url_verification with the challenge', async () => {
    const res = await post(makeAdapter(), { token: 'x', challenge: 'c-123', type: 'url_verification' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ challenge: 'c-123' });
  });

  it('turns an app_mention into an InboundEvent: mention stripped, thread conversation, attachments', async () => {
    const intake = recordingIntake();
    const files = [
      { id: 'F1', name: 'report.pdf', mimetype: 'application/pdf', size: 1234, url_private: 'https://files.slack.com/files-pri/T-F1/report.pdf', url_private_download: 'https://files.slack.com/files-pri/T-F1/download/report.pdf' },
      { id: 'F2', name: 'notes.txt', mimetype: 'text/plain', size: 10, url_private: 'https://files.slack.com/files-pri/T-F2/notes.txt' },
      { id: 'F3', mode: 'tombstone' },
    ];
    const res = await post(makeAdapter(intake), envelope(mention({ thread_ts: '1699999000.000001', files, text: '<@UBOT0001> summarize &lt;this&gt; &amp; <https://x.test|that>' })));
    expect(res.status).toBe(200);
    expect(intake.events).toEqual([{
      id: 'slack:Ev0001',
      platform: 'slack',
      address: { platform: 'slack', team: TEAM, channel: CHANNEL },
      conversation: `slack:${TEAM}:${CHANNEL}:1699999000.000001`,
      replyTo: 'slack-msg:1699999999.000100:UHUMAN1',
      user: { id: 'UHUMAN1' },
      text: 'summarize <this> & that (https://x.test)',
      attachments: [
        { ref: files[0]!.url_private_download, name: 'report.pdf', size: 1234, mimeType: 'application/pdf' },
        { ref: files[1]!.url_private, name: 'notes.txt', size: 10, mimeType: 'text/plain' },
      ],
      receivedAt: new Date(NOW).toISOString(),
    }]);
  });

  it('starts a thread on the mention itself when it is not in one', async () => {
    const intake = recordingIntake();
    await post(makeAdapter(intake), envelope(mention()));
    expect(intake.events[0]!.conversation).toBe(conv('1699999999.000100'));
    expect(intake.events[0]!.text).toBe('summarize this');
  });

  it('takes direct messages (channel_type im), including file shares', async () => {
    const intake = recordingIntake();
    const dm = { type: 'message', channel_type: 'im', channel: 'D0DM', user: 'UHUMAN1', text: 'hello there', ts: '1699999999.000200', subtype: 'file_share', files: [] };
    const res = await post(makeAdapter(intake), envelope(dm, { event_id: 'EvDM' }));
    expect(res.status).toBe(200);
    expect(intake.events).toHaveLength(1);
    expect(intake.events[0]).toMatchObject({ id: 'slack:EvDM', address: { team: TEAM, channel: 'D0DM' }, conversation: `slack:${TEAM}:D0DM:1699999999.000200`, text: 'hello there' });
  });

  it.each([
    ['the bot’s own message', { type: 'message', channel_type: 'im', channel: 'D0DM', user: 'UBOT0001', text: 'my answer', ts: '1.1' }],
    ['another bot', { type: 'message', channel_type: 'im', channel: 'D0DM', user: 'UOTHER', bot_id: 'B9', text: 'beep', ts: '1.1' }],
    ['an edit', { type: 'message', channel_type: 'im', subtype: 'message_changed', channel: 'D0DM', message: { text: 'x' }, ts: '1.1' }],
    ['a deletion', { type: 'message', channel_type: 'im', subtype: 'message_deleted', channel: 'D0DM', ts: '1.1' }],
    ['a channel join', { type: 'message', channel_type: 'channel', subtype: 'channel_join', channel: CHANNEL, user: 'U1', ts: '1.1' }],
    ['a plain channel message', { type: 'message', channel_type: 'channel', channel: CHANNEL, user: 'U1', text: 'hi', ts: '1.1' }],
    ['a reaction', { type: 'reaction_added', user: 'U1', reaction: 'tada' }],
  ])('acknowledges and ignores %s', async (_name, event) => {
    const intake = recordingIntake();
    const res = await post(makeAdapter(intake), envelope(event));
    expect(res.status).toBe(200);
    expect(intake.events).toEqual([]);
  });

  it('passes Slack retries to intake, which answers duplicate; every delivery gets 200', async () => {
    const intake = recordingIntake();
    const adapter = makeAdapter(intake);
    const statuses = [];
    for (const retry of [undefined, '1', '2']) {
      const res = await post(adapter, envelope(mention()), retry ? { headers: { 'x-slack-retry-num': retry, 'x-slack-retry-reason': 'http_timeout' } } : {});
      statuses.push(res.status);
    }
    expect(statuses).toEqual([200, 200, 200]);
    expect(intake.events.map((e) => e.id)).toEqual(['slack:Ev0001', 'slack:Ev0001', 'slack:Ev0001']);
    // Once, for the accepted delivery, after its acknowledgement: "is thinking…" and 👀 on the message.
    await waitFor(() => fake.reactions.length === 1);
    expect(fake.calls.map((c) => [c.method, c.body.status ?? c.body.name])).toEqual([
      ['assistant.threads.setStatus', 'is thinking…'],
      ['reactions.add', 'eyes'],
    ]);
    expect(fake.reactions).toEqual([{ channel: CHANNEL, ts: '1699999999.000100', name: 'eyes' }]);
  });

  it('posts a rejected event’s message into its thread after acknowledging, and nothing else', async () => {
    const intake = recordingIntake(() => ({ status: 'rejected', reason: 'unbound', message: 'No agent works in this channel. Ask an admin to bind one.' }));
    const adapter = makeAdapter(intake);
    const res = await post(adapter, envelope(mention()));
    expect(res.status).toBe(200);
    await adapter.close(); // waits for the background notice
    expect(fake.calls.map((c) => c.method)).toEqual(['chat.postMessage']);
    expect(fake.messages).toEqual([
      expect.objectContaining({ channel: CHANNEL, thread_ts: '1699999999.000100', text: 'No agent works in this channel. Ask an admin to bind one.' }),
    ]);
  });

  it('answers 5xx when intake cannot store the event (so Slack retries), and when it is too slow', async () => {
    const broken = makeAdapter({ accept: () => Promise.reject(new Error('db down')) });
    expect((await post(broken, envelope(mention()))).status).toBe(503);
    const slow = makeAdapter({ accept: () => new Promise((r) => setTimeout(() => r({ status: 'accepted', profile: 'p' }), 300)) }, { ackDeadlineMs: 50 });
    const started = Date.now();
    expect((await post(slow, envelope(mention()))).status).toBe(503);
    expect(Date.now() - started).toBeLessThan(250);
  });

  it('never calls the Slack API before acknowledging: the bot id comes from the credential check or the envelope', async () => {
    const intake = recordingIntake();
    const adapter = makeAdapter(intake, { botUserId: undefined });
    fake.delay('*', 2000); // a slow Slack must not hold the acknowledgement
    await post(adapter, envelope(mention({ text: '<@UBOT0001> first' })));
    expect(fake.callsTo('auth.test')).toHaveLength(0);
    fake.delay('*', 0);
    expect(await adapter.checkCredentials()).toMatchObject({ ok: true, platform: 'slack' });
    await post(adapter, envelope(mention({ text: 'hey <@UBOT0001> and <@UOTHER1>' }), { event_id: 'Ev0002' }));
    expect(intake.events.map((e) => e.text)).toEqual(['first', 'hey and <@UOTHER1>']);
    expect(fake.callsTo('auth.test')).toHaveLength(1);
  });
});

describe('outbound', () => {
  it('shows progress with assistant.threads.setStatus, then replies and clears the status', async () => {
    const adapter = makeAdapter();
    await adapter.send(progress('reading the report'));
    await adapter.send(reply('Here is the **summary**.'));
    expect(fake.calls.map((c) => [c.method, c.body.status ?? c.body.text])).toEqual([
      ['assistant.threads.setStatus', 'reading the report'],
      ['chat.postMessage', 'Here is the *summary*.'],
      ['assistant.threads.setStatus', ''],
    ]);
    expect(fake.calls[0]!.body).toMatchObject({ channel_id: CHANNEL, thread_ts: '1699999999.000100' });
    expect(fake.calls[0]!.headers.authorization).toBe(`Bearer ${fake.botToken}`);
    expect(fake.messages[0]).toMatchObject({ channel: CHANNEL, thread_ts: '1699999999.000100' });
  });

  it('falls back to a throttled placeholder when setStatus is not allowed, and replaces it with the reply', async () => {
    fake.assistantStatus = 'not_allowed_token_type';
    const adapter = makeAdapter(undefined, { progressIntervalMs: 1500 });
    await adapter.send(progress('reading'));
    clock += 500;
    await adapter.send(progress('still reading')); // within 1.5 s: dropped
    clock += 1100;
    await adapter.send(progress('writing <!channel>'));
    await adapter.send(reply('Done: 3 findings.'));
    expect(fake.calls.map((c) => c.method)).toEqual([
      'assistant.threads.setStatus', 'chat.postMessage', 'chat.update', 'chat.update',
    ]);
    expect(fake.messages).toHaveLength(1);
    expect(fake.messages[0]!.thread_ts).toBe('1699999999.000100');
    expect(fake.messages[0]!.history).toEqual(['Working on it… reading', 'Working on it… writing &lt;!channel&gt;']);
    expect(fake.messages[0]!.text).toBe('Done: 3 findings.');
  });

  it('converts Markdown to mrkdwn and splits long replies on paragraph boundaries', async () => {
    const adapter = makeAdapter();
    const para = (i: number) => `Paragraph ${i}: ${'word '.repeat(150).trim()}`;
    const code = '```ts\nconst a = **not bold**;\n[x](y)\n```';
    const md = ['# Title', '**bold** and [a link](https://example.com) and ~~gone~~', ...Array.from({ length: 10 }, (_, i) => para(i)), code, para(99)].join('\n\n');
    await adapter.send(reply(md));
    const texts = fake.messages.map((m) => m.text);
    expect(texts.length).toBeGreaterThanOrEqual(2);
    for (const t of texts) expect(t.length).toBeLessThanOrEqual(3900);
    expect(texts[0]!.startsWith('*Title*\n\n*bold* and <https://example.com|a link> and ~gone~')).toBe(true);
    expect(texts.join('\n\n')).toContain('```\nconst a = **not bold**;\n[x](y)\n```');
    expect(fake.messages.every((m) => m.thread_ts === '1699999999.000100')).toBe(true);
    // Every paragraph arrives whole, in order.
    const all = texts.join('\n\n');
    for (let i = 0; i < 10; i++) expect(all).toContain(para(i));
    expect(all.indexOf(para(9))).toBeLessThan(all.indexOf(para(99)));
  });

  it('uploads files with the three-step upload into the thread and names held-back files', async () => {
    const adapter = makeAdapter();
    const csv = Buffer.from('a,b\n1,2\n');
    const png = Buffer.alloc(5000, 7);
    await adapter.send(reply('Files attached.', {
      files: [{ name: 'data.csv', data: csv }, { name: 'chart.png', data: png }],
      heldBack: [{ name: 'huge.bin', reason: 'too large (40 MB, limit 25 MB)' }, { name: '../etc/passwd', reason: 'unsafe name' }],
    }));
    expect(fake.calls.map((c) => c.method)).toEqual([
      'chat.postMessage',
      'files.getUploadURLExternal', 'files.completeUploadExternal',
      'files.getUploadURLExternal', 'files.completeUploadExternal',
      'chat.postMessage',
    ]);
    expect(fake.callsTo('files.getUploadURLExternal').map((c) => c.body)).toEqual([
      expect.objectContaining({ filename: 'data.csv', length: String(csv.length) }),
      expect.objectContaining({ filename: 'chart.png', length: String(png.length) }),
    ]);
    expect(fake.uploads.map((u) => [u.filename, u.completed, u.channel_id, u.thread_ts, u.data?.equals(u.filename === 'data.csv' ? csv : png)])).toEqual([
      ['data.csv', true, CHANNEL, '1699999999.000100', true],
      ['chart.png', true, CHANNEL, '1699999999.000100', true],
    ]);
    const note = fake.messages[1]!.text;
    expect(note).toContain('huge.bin');
    expect(note).toContain('too large (40 MB, limit 25 MB)');
    expect(note).toContain('../etc/passwd');
    expect(note).toContain('unsafe name');
  });

  it('waits out a 429 with Retry-After and the message still arrives', async () => {
    const adapter = makeAdapter();
    fake.failNext('chat.postMessage', { status: 429, retryAfter: 1 });
    const started = Date.now();
    await adapter.send(reply('after the rate limit'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(fake.callsTo('chat.postMessage')).toHaveLength(2);
    expect(fake.messages.map((m) => m.text)).toEqual(['after the rate limit']);
  });

  it('surfaces ok:false as an AgentVmError, retryable only for transient errors', async () => {
    const adapter = makeAdapter();
    fake.failNext('chat.postMessage', { error: 'channel_not_found' });
    const err = await adapter.send(reply('x')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentVmError);
    expect(err).toMatchObject({ code: 'slack_api_error', message: 'chat.postMessage: channel_not_found', retryable: false });
    fake.failNext('chat.postMessage', { error: 'internal_error' });
    await expect(adapter.send(reply('y', { eventId: 'slack:Ev0002' }))).rejects.toMatchObject({ message: 'chat.postMessage: internal_error', retryable: true });
  });

  it('resumes a half-delivered reply on retry instead of posting it twice', async () => {
    const adapter = makeAdapter();
    const msg = reply('The answer.', { files: [{ name: 'a.txt', data: Buffer.from('a') }] });
    fake.failNext('files.getUploadURLExternal', { error: 'internal_error' });
    await expect(adapter.send(msg)).rejects.toMatchObject({ retryable: true });
    await adapter.send(msg);
    await adapter.send(msg); // a third delivery of a finished reply does nothing
    expect(fake.messages.map((m) => m.text)).toEqual(['The answer.']);
    expect(fake.uploads.filter((u) => u.completed).map((u) => u.filename)).toEqual(['a.txt']);
  });

  it('posts a notice in the thread, replacing the placeholder', async () => {
    fake.assistantStatus = 'not_allowed_token_type';
    const adapter = makeAdapter();
    await adapter.send(progress('thinking'));
    await adapter.send({ kind: 'notice', conversation: conv(), eventId: 'slack:Ev0001', text: 'The agent timed out after 10 minutes.' });
    expect(fake.messages).toHaveLength(1);
    expect(fake.messages[0]!.text).toBe('The agent timed out after 10 minutes.');
  });

  it('refuses a conversation id it did not make', async () => {
    await expect(makeAdapter().send(reply('x', { conversation: 'discord:1:2' }))).rejects.toMatchObject({ code: 'slack_bad_conversation' });
  });
});

describe('fetchContext', () => {
  let foreign: http.Server;
  let foreignHits: Array<{ url?: string; authorization?: string }>;
  let foreignOrigin: string;

  beforeEach(async () => {
    foreignHits = [];
    foreign = http.createServer((req, res) => {
      foreignHits.push({ ...(req.url ? { url: req.url } : {}), ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
      res.end('stolen');
    });
    await new Promise<void>((r) => foreign.listen(0, '127.0.0.1', r));
    foreignOrigin = `http://127.0.0.1:${(foreign.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    foreign.closeAllConnections();
    await new Promise<void>((r) => foreign.close(() => r()));
  });

  const att = (ref: string, name: string, size?: number) => ({ ref, name, ...(size !== undefined ? { size } : {}) });
  const event = (attachments: InboundEvent['attachments']): InboundEvent => ({
    id: 'slack:Ev1', platform: 'slack', address: { platform: 'slack', team: TEAM, channel: CHANNEL },
    conversation: conv(), user: { id: 'U1' }, text: 'x', receivedAt: new Date(NOW).toISOString(), attachments,
  });

  it('downloads with the bot token and enforces size (declared and streamed) and count caps', async () => {
    const adapter = makeAdapter();
    const ok = fake.addFile('notes.txt', 'hello notes');
    const big = fake.addFile('big.bin', Buffer.alloc(5000));
    const sneaky = fake.addFile('sneaky.bin', Buffer.alloc(5000), { omitLength: true });
    const extra = fake.addFile('extra.txt', 'one too many');
    const ctx = await adapter.fetchContext(event([
      att(ok, '../../notes.txt', 11), att(big, 'big.bin', 5000), att(big, 'lying.bin', 10), att(sneaky, 'sneaky.bin'), att(ok, 'notes.txt'), att(extra, 'extra.txt'),
    ]), { maxFileBytes: 1000, maxFiles: 2 });
    // Names as Slack gave them: the sandbox's inbox cleans and dedupes them (src/sandbox/inbox.ts).
    expect(ctx.files.map((f) => [f.name, f.data.toString()])).toEqual([['../../notes.txt', 'hello notes'], ['notes.txt', 'hello notes']]);
    expect(ctx.skipped).toEqual([
      { name: 'big.bin', reason: 'too large (5000 bytes, limit 1000)' },
      { name: 'lying.bin', reason: 'too large (5000 bytes, limit 1000)' },
      { name: 'sneaky.bin', reason: 'too large (over 1000 bytes)' },
      { name: 'extra.txt', reason: 'too many files (limit 2)' },
    ]);
    // big.bin was never requested: its declared size was enough to refuse it.
    expect(fake.downloads).toHaveLength(4);
    expect(fake.downloads.every((d) => d.authorization === `Bearer ${fake.botToken}`)).toBe(true);
  });

  it('never sends the token to a foreign origin, directly or through a redirect', async () => {
    const adapter = makeAdapter();
    const redirect = fake.addRedirect(`${foreignOrigin}/collect`);
    const ctx = await adapter.fetchContext(event([
      att(`${foreignOrigin}/files/evil.txt`, 'evil.txt'),
      att(redirect, 'redirected.txt'),
      att('https://files.slack.com.evil.test/x', 'lookalike.txt'),
      att('http://files.slack.com/x', 'plaintext.txt'),
    ]), { maxFileBytes: 1000, maxFiles: 10 });
    expect(ctx.files).toEqual([]);
    expect(ctx.skipped.map((s) => s.name)).toEqual(['evil.txt', 'redirected.txt', 'lookalike.txt', 'plaintext.txt']);
    expect(ctx.skipped.every((s) => s.reason === 'not a Slack file URL; not downloaded')).toBe(true);
    expect(foreignHits).toEqual([]);
  });

  it('explains a sign-in page (token without files:read) instead of saving HTML', async () => {
    const adapter = makeAdapter(undefined, { botToken: 'xoxb-not-the-right-one' });
    const ctx = await adapter.fetchContext(event([att(fake.addFile('a.pdf', 'pdf'), 'a.pdf')]), { maxFileBytes: 1000, maxFiles: 10 });
    expect(ctx.files).toEqual([]);
    expect(ctx.skipped[0]!.reason).toMatch(/sign-in page.*files:read/);
  });
});

describe('Socket Mode', () => {
  it('connects through apps.connections.open at apiUrl and feeds the same intake, acking stored envelopes', async () => {
    const intake = recordingIntake();
    const adapter = makeAdapter(intake, { appToken: fake.appToken });
    await adapter.start();
    await adapter.start(); // idempotent
    expect(fake.socketConnected()).toBe(true);
    const open = fake.callsTo('apps.connections.open');
    expect(open).toHaveLength(1);
    expect(open[0]!.headers.authorization).toBe(`Bearer ${fake.appToken}`);

    expect(await fake.deliverSocket(envelope(mention()))).toEqual({ acked: true });
    expect(intake.events.map((e) => [e.id, e.text])).toEqual([['slack:Ev0001', 'summarize this']]);
    expect(await fake.deliverSocket(envelope(mention()), { retryAttempt: 1 })).toEqual({ acked: true });
    expect(await fake.deliverSocket(envelope({ type: 'message', subtype: 'message_changed', channel_type: 'im', channel: 'D1', ts: '1.1' }))).toEqual({ acked: true });
    expect(intake.events).toHaveLength(2);

    await adapter.close();
    await adapter.close();
    await expect.poll(() => fake.socketConnected()).toBe(false);
  });

  it('does not ack an envelope whose event could not be stored, so Slack redelivers it', async () => {
    const adapter = makeAdapter({ accept: () => Promise.reject(new Error('db down')) }, { appToken: fake.appToken });
    await adapter.start();
    expect(await fake.deliverSocket(envelope(mention()), { timeoutMs: 500 })).toEqual({ acked: false });
  });
});

describe('mrkdwn', () => {
  it('converts emphasis, links, headings, lists and escapes control characters outside code', () => {
    expect(markdownToMrkdwn('## Plan\n- **a** *b* ~~c~~ [d](https://e.test) `x<y>` <!here> & co\n> quoted **q**')).toBe(
      '*Plan*\n• *a* _b_ ~c~ <https://e.test|d> `x&lt;y&gt;` &lt;!here&gt; &amp; co\n> quoted *q*',
    );
  });

  it('does not reformat code blocks (drops the language tag, encodes only Slack control characters)', () => {
    expect(markdownToMrkdwn('```python\nprint("**x**" < 3)\n```\nafter **b**')).toBe('```\nprint("**x**" &lt; 3)\n```\nafter *b*');
  });

  it('splits at paragraphs, keeps code blocks whole when they fit, and re-fences one that does not', () => {
    const code = '```\n' + Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n') + '\n```';
    const chunks = splitMessage(`${'a'.repeat(80)}\n\n${code}\n\n${'b'.repeat(80)}`, 300);
    expect(chunks.every((c) => c.length <= 300)).toBe(true);
    expect(chunks).toContain(code);
    const huge = '```\n' + Array.from({ length: 100 }, (_, i) => `row ${i}`).join('\n') + '\n```';
    const parts = splitMessage(huge, 200);
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) {
      expect(p.length).toBeLessThanOrEqual(200);
      expect(p.startsWith('```\n') && p.endsWith('\n```')).toBe(true);
    }
    expect(splitMessage('x '.repeat(500), 100).every((c) => c.length <= 100)).toBe(true);
    expect(splitMessage('   ')).toEqual([]);
  });
});
