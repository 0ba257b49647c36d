/**
 * The Discord adapter against a local fake of the Discord REST API and gateway: signed HTTP
 * interactions in, answers and files out through the interaction webhook or the channel, and
 * approval buttons (message components) posted, pressed and settled.
 */
import { generateKeyPairSync, randomBytes, randomUUID, sign } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDiscordAdapter, registerCommands, type DiscordAdapter, type DiscordAdapterOptions } from '../src/adapters/discord/index.js';
import { isAgentVmError } from '../src/errors.js';
import type { ApprovalDesk, ApprovalPrompt, InboundEvent, IntakeResult, OutboundMessage } from '../src/adapters/types.js';
import { mounted } from './helpers/app.js';
import { startFakeDiscord, type FakeDiscord } from './fakes/discord-api.js';
import { PUBLIC_KEY_HEX, postInteraction as postTo, signed, slashCommand } from './helpers/discord.js';
import { until } from './helpers/wait.js';

const GUILD = '900000000000000001';
const CHANNEL = '900000000000000002';
const THREAD = '900000000000000003';
const USER = '900000000000000004';
const logger = pino({ level: 'silent' });

function recordingIntake(verdict: (e: InboundEvent) => IntakeResult = () => ({ status: 'accepted', profile: 'helper' })) {
  const events: InboundEvent[] = [];
  return {
    events,
    async accept(e: InboundEvent): Promise<IntakeResult> {
      events.push(e);
      return verdict(e);
    },
  };
}

let fake: FakeDiscord;
const adapters: DiscordAdapter[] = [];

beforeAll(async () => {
  fake = await startFakeDiscord({
    guilds: [{ id: GUILD, channels: [{ id: CHANNEL, name: 'general' }, { id: THREAD, name: 'ongoing', type: 11, parent_id: CHANNEL, ownedByBot: true }] }],
  });
});
afterAll(async () => {
  await fake?.close();
});
afterEach(async () => {
  for (const a of adapters.splice(0)) await a.close();
});

function makeAdapter(over: Partial<DiscordAdapterOptions> = {}) {
  const intake = recordingIntake();
  const clock = { t: Date.parse('2030-01-01T00:00:00Z') };
  const adapter = createDiscordAdapter({
    publicKey: PUBLIC_KEY_HEX,
    applicationId: fake.applicationId,
    botToken: fake.botToken,
    apiUrl: fake.url,
    intake,
    logger,
    now: () => clock.t,
    ...over,
  });
  adapters.push(adapter);
  return { adapter, intake: (over.intake as ReturnType<typeof recordingIntake> | undefined) ?? intake, clock };
}

function interaction(over: Record<string, unknown> = {}) {
  return slashCommand({ applicationId: fake.applicationId, guild: GUILD, channel: CHANNEL, user: USER }, 'summarize the report', over);
}

const postInteraction = (adapter: DiscordAdapter, payload: unknown, headers?: Record<string, string>) => postTo(mounted(adapter.routes), payload, headers);

function reply(event: InboundEvent, over: Partial<Extract<OutboundMessage, { kind: 'reply' }>> = {}): OutboundMessage {
  return { kind: 'reply', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, text: 'done', files: [], heldBack: [], ...over };
}

function callsFor(token: string) {
  return fake.calls.filter((c) => c.path.includes(`/${token}`) && c.status < 300);
}

describe('verification', () => {
  it('answers PING with PONG', async () => {
    const { adapter, intake } = makeAdapter();
    const res = await postInteraction(adapter, { id: '1', application_id: fake.applicationId, type: 1, version: 1 });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ type: 1 });
    expect(intake.events).toHaveLength(0);
  });

  it('rejects a bad signature, a changed body and missing headers with 401, never reaching the intake', async () => {
    const { adapter, intake } = makeAdapter();
    const body = JSON.stringify(interaction());
    const good = signed(body);

    const badSig = { ...good, 'x-signature-ed25519': good['x-signature-ed25519']!.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')) };
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body, headers: badSig })).status).toBe(401);

    const changed = body.replace('summarize the report', 'delete everything');
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body: changed, headers: good })).status).toBe(401);

    const otherTimestamp = { ...good, 'x-signature-timestamp': String(Number(good['x-signature-timestamp']) + 1) };
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body, headers: otherTimestamp })).status).toBe(401);

    const missing = { 'content-type': 'application/json' };
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body, headers: missing })).status).toBe(401);

    // Signed by someone else's key.
    const other = generateKeyPairSync('ed25519');
    const ts = good['x-signature-timestamp']!;
    const forged = { ...good, 'x-signature-ed25519': sign(null, Buffer.from(ts + body), other.privateKey).toString('hex') };
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body, headers: forged })).status).toBe(401);

    expect(intake.events).toHaveLength(0);
  });
});

describe('payload checks after verification', () => {
  it('answers 400 to a signed body that is not an interaction for this application', async () => {
    const { adapter, intake } = makeAdapter();
    const notJson = 'not json';
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body: notJson, headers: signed(notJson) })).status).toBe(400);
    expect((await postInteraction(adapter, { hello: 'world' })).status).toBe(400);
    expect((await postInteraction(adapter, interaction({ application_id: '123' }))).status).toBe(400);
    expect(intake.events).toHaveLength(0);
  });
});

describe('slash commands', () => {
  it('defers within 3 s, edits the original with the answer and uploads the file as a multipart attachment', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    const started = performance.now();
    const res = await postInteraction(adapter, payload);
    const elapsed = performance.now() - started;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ type: 5 });
    expect(elapsed).toBeLessThan(3000);

    expect(intake.events).toHaveLength(1);
    const event = intake.events[0]!;
    expect(event).toMatchObject({
      id: `discord:${payload.id}`,
      platform: 'discord',
      address: { platform: 'discord', guild: GUILD, channel: CHANNEL, command: 'ask' },
      conversation: `discord:${GUILD}:${CHANNEL}`,
      user: { id: USER, name: 'Ada' },
      text: 'summarize the report',
    });
    expect(event.replyTo).toBeTruthy();
    expect(event.replyTo).not.toContain(payload.token); // encoded, opaque

    await adapter.send({ kind: 'progress', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, text: 'reading the report' });
    const report = Buffer.from('# Report\nall good\n');
    await adapter.send(reply(event, { text: 'Here is the summary.', files: [{ name: 'summary.md', data: report }] }));

    const edits = fake.find('PATCH', `/webhooks/${fake.applicationId}/${payload.token}/messages/@original`);
    expect(edits).toHaveLength(2);
    expect(edits[0]!.json).toMatchObject({ content: 'Thinking… reading the report' });
    const final = edits[1]!;
    expect(final.headers['content-type']).toMatch(/^multipart\/form-data/);
    expect(final.headers.authorization).toBeUndefined(); // the interaction token is the credential
    expect(final.json).toMatchObject({ content: 'Here is the summary.', attachments: [{ id: 0, filename: 'summary.md' }], allowed_mentions: { parse: [] } });
    expect(final.files).toHaveLength(1);
    expect(final.files[0]).toMatchObject({ name: 'files[0]', filename: 'summary.md' });
    expect(final.files[0]!.data.equals(report)).toBe(true);
    expect(callsFor(payload.token).filter((c) => c.method === 'POST')).toHaveLength(0);
  });

  it('splits a long reply at 2,000 characters on line boundaries: original edited, then follow-ups', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    const lines = Array.from({ length: 120 }, (_, i) => `line ${i} ${'x'.repeat(40)}`);
    await adapter.send(reply(intake.events[0]!, { text: lines.join('\n') }));

    const sent = callsFor(payload.token);
    expect(sent[0]!.method).toBe('PATCH');
    expect(sent.length).toBeGreaterThanOrEqual(3);
    expect(sent.slice(1).every((c) => c.method === 'POST' && c.path === `/webhooks/${fake.applicationId}/${payload.token}`)).toBe(true);
    const contents = sent.map((c) => (c.json as { content: string }).content);
    for (const c of contents) expect(c.length).toBeLessThanOrEqual(2000);
    expect(contents.join('\n')).toBe(lines.join('\n'));
  });

  it('names files over the upload cap and held-back files instead of dropping them', async () => {
    const { adapter, intake } = makeAdapter({ maxUploadBytes: 4096 });
    const payload = interaction();
    await postInteraction(adapter, payload);
    await adapter.send(
      reply(intake.events[0]!, {
        text: 'Results attached.',
        files: [
          { name: 'small.csv', data: Buffer.from('a,b\n1,2\n') },
          { name: 'huge.bin', data: randomBytes(10_000) },
        ],
        heldBack: [{ name: 'secret.env', reason: 'unsafe name' }],
      }),
    );
    const [edit] = fake.find('PATCH', `/webhooks/${fake.applicationId}/${payload.token}/messages/@original`);
    const content = (edit!.json as { content: string }).content;
    expect(content).toContain('Results attached.');
    expect(content).toContain('huge.bin');
    expect(content).toMatch(/upload limit/);
    expect(content).toContain('secret.env');
    expect(content).toContain('unsafe name');
    expect(edit!.files.map((f) => f.filename)).toEqual(['small.csv']);
  });

  it('sends more than 10 files over several messages', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    const files = Array.from({ length: 13 }, (_, i) => ({ name: `f${i}.txt`, data: Buffer.from(`file ${i}`) }));
    await adapter.send(reply(intake.events[0]!, { text: 'thirteen files', files }));
    const sent = callsFor(payload.token);
    expect(sent.map((c) => c.files.length)).toEqual([10, 3]);
    expect(sent.flatMap((c) => c.files.map((f) => f.filename))).toEqual(files.map((f) => f.name));
  });

  it('posts to the channel with the bot token once the interaction token is older than 15 minutes', async () => {
    const { adapter, intake, clock } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    const event = intake.events[0]!;
    clock.t += 15 * 60 * 1000 + 1;
    const before = fake.calls.length;
    await adapter.send(reply(event, { text: 'finally done', files: [{ name: 'out.txt', data: Buffer.from('x') }] }));

    const posted = fake.calls.slice(before);
    expect(posted.filter((c) => c.path.startsWith('/webhooks/'))).toHaveLength(0);
    expect(posted).toHaveLength(1);
    expect(posted[0]).toMatchObject({ method: 'POST', path: `/channels/${CHANNEL}/messages`, status: 200 });
    expect(posted[0]!.headers.authorization).toBe(`Bot ${fake.botToken}`);
    expect(posted[0]!.json).toMatchObject({ content: `<@${USER}> finally done`, allowed_mentions: { parse: [], users: [USER] } });
    expect(posted[0]!.files.map((f) => f.filename)).toEqual(['out.txt']);
  });

  it('falls back to the channel when Discord rejects the token early', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    fake.expireToken(payload.token);
    const before = fake.calls.length;
    await adapter.send({ kind: 'notice', conversation: intake.events[0]!.conversation, replyTo: intake.events[0]!.replyTo, eventId: intake.events[0]!.id, text: 'the turn timed out' });
    const ok = fake.calls.slice(before).filter((c) => c.status < 300);
    expect(ok.map((c) => `${c.method} ${c.path}`)).toEqual([`POST /channels/${CHANNEL}/messages`]);
    expect((ok[0]!.json as { content: string }).content).toContain('the turn timed out');
  });

  it('without a bot token, an expired interaction is a clear non-retryable error', async () => {
    const { adapter, intake, clock } = makeAdapter({ botToken: undefined });
    await postInteraction(adapter, interaction());
    clock.t += 20 * 60 * 1000;
    const err = await adapter.send(reply(intake.events[0]!)).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'discord_token_expired')).toBe(true);
    expect((err as { retryable: boolean }).retryable).toBe(false);
  });

  it('answers an unbound channel with an ephemeral explanation and starts no turn', async () => {
    const message = 'No agent employee is bound to this channel. Ask an admin to add a binding.';
    const intake = recordingIntake(() => ({ status: 'rejected', reason: 'unbound', message }));
    const { adapter } = makeAdapter({ intake });
    const payload = interaction();
    const res = await postInteraction(adapter, payload);
    expect(await res.json()).toEqual({ type: 4, data: { content: message, flags: 64, allowed_mentions: { parse: [] } } });
    expect(intake.events).toHaveLength(1);
    expect(callsFor(payload.token)).toHaveLength(0);
  });

  it('defers a duplicate interaction again; deduplication is the intake’s', async () => {
    const seen = new Set<string>();
    const intake = recordingIntake((e) => {
      const dup = seen.has(e.id);
      seen.add(e.id);
      return dup ? { status: 'duplicate', profile: 'helper' } : { status: 'accepted', profile: 'helper' };
    });
    const { adapter } = makeAdapter({ intake });
    const payload = interaction();
    expect(await (await postInteraction(adapter, payload)).json()).toEqual({ type: 5 });
    expect(await (await postInteraction(adapter, payload)).json()).toEqual({ type: 5 });
    expect(intake.events.map((e) => e.id)).toEqual([`discord:${payload.id}`, `discord:${payload.id}`]);
  });

  it('defers when the intake is slow, and tells a late rejection by editing the original', async () => {
    let release!: (r: IntakeResult) => void;
    const intake = { events: [] as InboundEvent[], accept: (e: InboundEvent) => (intake.events.push(e), new Promise<IntakeResult>((r) => (release = r))) };
    const { adapter } = makeAdapter({ intake, ackDeadlineMs: 50 });
    const payload = interaction();
    expect(await (await postInteraction(adapter, payload)).json()).toEqual({ type: 5 });
    release({ status: 'rejected', reason: 'unbound', message: 'nobody here' });
    const [edit] = await fake.waitFor('PATCH', `/webhooks/${fake.applicationId}/${payload.token}/messages/@original`);
    expect(edit!.json).toMatchObject({ content: 'nobody here' });
  });

  it('uses the thread as the conversation and its parent channel for routing', async () => {
    const { adapter, intake } = makeAdapter();
    await postInteraction(adapter, interaction({ channel_id: THREAD, channel: { id: THREAD, type: 11, parent_id: CHANNEL } }));
    expect(intake.events[0]).toMatchObject({
      address: { guild: GUILD, channel: CHANNEL, command: 'ask' },
      conversation: `discord:${GUILD}:${THREAD}`,
    });
  });

  it('maps DMs to guild @me, and attachment options to inbound attachments that fetchContext downloads', async () => {
    const { adapter, intake } = makeAdapter();
    const data = Buffer.from('col\n1\n');
    const url = fake.addFile('data.csv', data);
    const big = fake.addFile('big.bin', randomBytes(5000));
    await postInteraction(
      adapter,
      interaction({
        guild_id: undefined,
        member: undefined,
        user: { id: USER, username: 'ada' },
        channel: { id: CHANNEL, type: 1 },
        data: {
          id: '1',
          name: 'ask',
          type: 1,
          options: [
            { name: 'prompt', type: 3, value: 'look at these' },
            { name: 'file', type: 11, value: '800000000000000001' },
            { name: 'big', type: 11, value: '800000000000000002' },
          ],
          resolved: {
            attachments: {
              '800000000000000001': { id: '800000000000000001', filename: 'data.csv', size: data.length, url, content_type: 'text/csv' },
              '800000000000000002': { id: '800000000000000002', filename: 'big.bin', url: big },
            },
          },
        },
      }),
    );
    const event = intake.events[0]!;
    expect(event.address).toEqual({ platform: 'discord', guild: '@me', channel: CHANNEL, command: 'ask' });
    expect(event.conversation).toBe(`discord:@me:${CHANNEL}`);
    expect(event.user).toEqual({ id: USER, name: 'ada' });
    expect(event.attachments).toEqual([
      { ref: url, name: 'data.csv', size: data.length, mimeType: 'text/csv' },
      { ref: big, name: 'big.bin' },
    ]);
    const ctx = await adapter.fetchContext(
      { ...event, attachments: [...event.attachments!, { ref: 'file:///etc/passwd', name: 'passwd' }] },
      { maxFileBytes: 1000, maxFiles: 5 },
    );
    expect(ctx.files).toHaveLength(1);
    expect(ctx.files[0]!.name).toBe('data.csv');
    expect(ctx.files[0]!.data.equals(data)).toBe(true);
    expect(ctx.skipped.map((s) => s.name).sort()).toEqual(['big.bin', 'passwd']);
    const few = await adapter.fetchContext(event, { maxFileBytes: 10_000, maxFiles: 1 });
    expect(few.files.map((f) => f.name)).toEqual(['data.csv']);
    expect(few.skipped).toEqual([{ name: 'big.bin', reason: 'too many files (limit 1)' }]);
  });
});

describe('delivery', () => {
  it('throttles progress to one edit per interval per event, and never after the answer', async () => {
    const { adapter, intake, clock } = makeAdapter({ progressIntervalMs: 1500 });
    const payload = interaction();
    await postInteraction(adapter, payload);
    const e = intake.events[0]!;
    const progress = (text: string): OutboundMessage => ({ kind: 'progress', conversation: e.conversation, replyTo: e.replyTo, eventId: e.id, text });
    await adapter.send(progress('one'));
    await adapter.send(progress('two'));
    clock.t += 1600;
    await adapter.send(progress('three'));
    await adapter.send(reply(e, { text: 'answer' }));
    clock.t += 5000;
    await adapter.send(progress('late'));
    const contents = callsFor(payload.token).map((c) => (c.json as { content: string }).content);
    expect(contents).toEqual(['Thinking… one', 'Thinking… three', 'answer']);
  });

  it('waits out a 429 and retries', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    fake.failNext({ status: 429, retryAfter: 0.2, match: new RegExp(payload.token) });
    await adapter.send(reply(intake.events[0]!, { text: 'after the rate limit' }));
    const attempts = fake.calls.filter((c) => c.path.includes(payload.token));
    expect(attempts.map((c) => c.status)).toEqual([429, 200]);
  });

  it('throws a retryable discord_api_error on persistent 5xx, and resumes a split reply where it stopped', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    const text = Array.from({ length: 3 }, (_, i) => `${i}`.repeat(1900)).join('\n');
    // The original edit succeeds; every attempt at the first follow-up fails.
    fake.failNext({ status: 503, times: 10, match: new RegExp(`^POST /webhooks/\\d+/${payload.token}$`) });
    const err = await adapter.send(reply(intake.events[0]!, { text })).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'discord_api_error')).toBe(true);
    expect((err as { retryable: boolean }).retryable).toBe(true);
    fake.clearFailures();
    fake.calls.length = 0;
    await adapter.send(reply(intake.events[0]!, { text }));
    const sent = callsFor(payload.token);
    expect(sent.map((c) => c.method)).toEqual(['POST', 'POST']);
    expect(sent.map((c) => (c.json as { content: string }).content[0])).toEqual(['1', '2']);
  });

  it('a 4xx other than an expired token is not retryable', async () => {
    const { adapter, intake } = makeAdapter();
    const payload = interaction();
    await postInteraction(adapter, payload);
    fake.failNext({ status: 400, code: 50035, match: new RegExp(payload.token) });
    const err = await adapter.send(reply(intake.events[0]!)).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'discord_api_error')).toBe(true);
    expect((err as { retryable: boolean }).retryable).toBe(false);
  });

  it('close() is idempotent', async () => {
    const { adapter } = makeAdapter();
    await adapter.close();
    await adapter.close();
  });
});

describe('registerCommands', () => {
  it('overwrites global commands with a required prompt option', async () => {
    const before = fake.calls.length;
    const result = await registerCommands({
      applicationId: fake.applicationId,
      botToken: fake.botToken,
      apiUrl: fake.url,
      commands: [{ name: 'ask', description: 'Ask an agent employee' }, { name: 'support', description: 'Ask support' }],
    });
    const [put] = fake.calls.slice(before);
    expect(put).toMatchObject({ method: 'PUT', path: `/applications/${fake.applicationId}/commands`, status: 200 });
    expect(put!.headers.authorization).toBe(`Bot ${fake.botToken}`);
    const body = put!.json as Array<{ name: string; description: string; type: number; options: Array<Record<string, unknown>> }>;
    expect(body.map((c) => c.name)).toEqual(['ask', 'support']);
    for (const c of body) {
      expect(c.type).toBe(1);
      expect(c.options[0]).toMatchObject({ type: 3, name: 'prompt', required: true });
    }
    expect(result.map((r) => r.name)).toEqual(['ask', 'support']);
    expect(result.every((r) => /^\d+$/.test(r.id))).toBe(true);
  });

  it('registers guild commands and refuses invalid names before calling Discord', async () => {
    await registerCommands({ applicationId: fake.applicationId, botToken: fake.botToken, apiUrl: fake.url, guildId: GUILD, commands: [{ name: 'ask', description: 'Ask' }] });
    expect(fake.find('PUT', `/applications/${fake.applicationId}/guilds/${GUILD}/commands`)).toHaveLength(1);
    const before = fake.calls.length;
    const err = await registerCommands({ applicationId: fake.applicationId, botToken: fake.botToken, apiUrl: fake.url, commands: [{ name: 'Bad Name', description: 'x' }] }).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'discord_commands_invalid')).toBe(true);
    expect(fake.calls.length).toBe(before);
  });
});

describe('gateway: @mentions and DMs', () => {
  const BOT = () => fake.gateway.botUser;
  let seq = 0;
  function messageCreate(over: Record<string, unknown>) {
    seq += 1;
    return {
      id: String(BigInt('1400000000000000000') + BigInt(seq)),
      channel_id: CHANNEL,
      guild_id: GUILD,
      author: { id: USER, username: 'ada', global_name: 'Ada', discriminator: '0', avatar: null },
      content: `<@${BOT().id}> draft the release notes`,
      timestamp: new Date().toISOString(),
      edited_timestamp: null,
      tts: false,
      mention_everyone: false,
      mentions: [{ id: BOT().id, username: BOT().username, discriminator: '0', bot: true, avatar: null }],
      mention_roles: [],
      attachments: [],
      embeds: [],
      pinned: false,
      type: 0,
      channel_type: 0,
      ...over,
    };
  }

  const waitFor = (what: string, check: () => boolean) => until(what, () => (check() ? true : undefined), { timeoutMs: 5000, everyMs: 20 });

  async function started() {
    const made = makeAdapter();
    const identified = fake.gateway.identifies.length;
    await made.adapter.start();
    await waitFor('IDENTIFY', () => fake.gateway.identifies.length > identified);
    await waitFor('client ready', () => made.adapter.gateway?.client.isReady() === true);
    return made;
  }

  it('identifies with the documented intents through the gateway URL from GET /gateway/bot', async () => {
    await started();
    expect(fake.find('GET', '/gateway/bot').length).toBeGreaterThan(0);
    const identify = fake.gateway.identifies.at(-1)!;
    expect(identify.token).toBe(fake.botToken);
    // Guilds 1 | GuildMessages 512 | DirectMessages 4096 | MessageContent 32768
    expect(identify.intents).toBe(1 | 512 | 4096 | 32768);
  });

  it('opens a thread on a mention in a text channel; the thread is the conversation and the answer goes there', async () => {
    const { adapter, intake } = await started();
    const msg = messageCreate({ attachments: [{ id: '800000000000000009', filename: 'notes.txt', size: 4, url: fake.addFile('notes.txt', Buffer.from('hey!')), content_type: 'text/plain' }] });
    fake.gateway.dispatch('MESSAGE_CREATE', msg);
    await waitFor('the intake', () => intake.events.length === 1);
    await adapter.gateway!.idle();
    const [thread] = fake.find('POST', `/channels/${CHANNEL}/messages/${msg.id}/threads`);
    expect(thread!.json).toMatchObject({ name: 'draft the release notes', auto_archive_duration: 1440 });
    const event = intake.events[0]!;
    expect(event).toMatchObject({
      id: `discord:msg:${msg.id}`,
      address: { platform: 'discord', guild: GUILD, channel: CHANNEL },
      conversation: `discord:${GUILD}:${msg.id}`,
      user: { id: USER, name: 'Ada' },
      text: 'draft the release notes',
      attachments: [{ name: 'notes.txt', size: 4, mimeType: 'text/plain' }],
    });
    await adapter.send(reply(event, { text: 'Here are the notes.', files: [{ name: 'notes.md', data: Buffer.from('# v1') }] }));
    const [answer] = fake.find('POST', `/channels/${msg.id}/messages`);
    expect(answer!.headers.authorization).toBe(`Bot ${fake.botToken}`);
    expect(answer!.json).toMatchObject({ content: 'Here are the notes.', allowed_mentions: { parse: [] } });
    expect(answer!.files.map((f) => f.filename)).toEqual(['notes.md']);
  });

  it('takes DMs without a mention, and ignores bots and unmentioned guild messages', async () => {
    const { adapter, intake } = await started();
    fake.gateway.dispatch('MESSAGE_CREATE', messageCreate({ content: 'just chatting', mentions: [] }));
    fake.gateway.dispatch('MESSAGE_CREATE', messageCreate({ author: { id: '77', username: 'otherbot', discriminator: '0', bot: true, avatar: null } }));
    // Discord sends channel_type with MESSAGE_CREATE; discord.js needs it to build an uncached DM channel.
    const dm = messageCreate({ channel_id: '950000000000000001', channel_type: 1, content: 'hello in private', mentions: [] });
    delete (dm as { guild_id?: string }).guild_id;
    fake.gateway.dispatch('MESSAGE_CREATE', dm);
    await waitFor('the DM', () => intake.events.length >= 1);
    await new Promise((r) => setTimeout(r, 100));
    await adapter.gateway!.idle();
    expect(intake.events).toHaveLength(1);
    expect(intake.events[0]).toMatchObject({
      id: `discord:msg:${dm.id}`,
      address: { platform: 'discord', guild: '@me', channel: '950000000000000001' },
      conversation: 'discord:@me:950000000000000001',
      text: 'hello in private',
    });
    expect(fake.find('POST', /\/threads$/).filter((c) => c.path.includes(dm.id))).toHaveLength(0);
  });

  it('continues a thread the bot owns without a mention, routed by the parent channel', async () => {
    const { adapter, intake } = await started();
    const msg = messageCreate({ channel_id: THREAD, channel_type: 11, content: 'and also the changelog', mentions: [] });
    fake.gateway.dispatch('MESSAGE_CREATE', msg);
    await waitFor('the intake', () => intake.events.length === 1);
    await adapter.gateway!.idle();
    expect(intake.events[0]).toMatchObject({
      address: { platform: 'discord', guild: GUILD, channel: CHANNEL },
      conversation: `discord:${GUILD}:${THREAD}`,
      text: 'and also the changelog',
    });
    expect(fake.find('POST', /\/threads$/).filter((c) => c.path.includes(msg.id))).toHaveLength(0);
  });

  it('tells an unbound channel why, in reply to the message', async () => {
    const message = 'No agent employee is bound to this channel.';
    const intake = recordingIntake(() => ({ status: 'rejected', reason: 'unbound', message }));
    const { adapter } = makeAdapter({ intake });
    await adapter.start();
    await waitFor('client ready', () => adapter.gateway?.client.isReady() === true);
    const dm = messageCreate({ channel_id: '950000000000000002', channel_type: 1, content: 'anyone?', mentions: [] });
    delete (dm as { guild_id?: string }).guild_id;
    fake.gateway.dispatch('MESSAGE_CREATE', dm);
    const [told] = await fake.waitFor('POST', '/channels/950000000000000002/messages');
    expect(told!.json).toMatchObject({ content: message, message_reference: { message_id: dm.id } });
  });
});

describe('approval buttons', () => {
  const OTHER = '900000000000000005';
  const APPROVE = 'agentvm_approve:';
  const DENY = 'agentvm_deny:';

  type Answer = { id: string; decision: 'approved' | 'denied'; by?: { platform: string; user: string } };

  /** Requests by id with their approvers (`<platform>:<id>`); answered requests stop waiting. */
  function fakeDesk(requests: Record<string, string[]>, behave: (a: Answer) => Promise<void> | void = () => undefined) {
    const answers: Answer[] = [];
    const waiting = new Map(Object.entries(requests));
    const desk: ApprovalDesk = {
      async pending() {
        return [];
      },
      async answer(id, decision, by) {
        const a: Answer = { id, decision, ...(by ? { by } : {}) };
        answers.push(a);
        await behave(a);
        const approvers = waiting.get(id);
        if (!approvers) return { status: 'unknown' };
        if (by && !approvers.includes(`${by.platform}:${by.user}`)) return { status: 'not_allowed', approvers };
        waiting.delete(id);
        return { status: 'answered' };
      },
    };
    return { desk, answers };
  }

  function promptFor(event: Pick<InboundEvent, 'conversation' | 'replyTo' | 'id'>, now: number, over: Partial<ApprovalPrompt> = {}): ApprovalPrompt {
    return {
      id: randomUUID(),
      conversation: event.conversation,
      ...(event.replyTo ? { replyTo: event.replyTo } : {}),
      eventId: event.id,
      tool: 'github.create_issue',
      summary: '{"title":"Fix the build"}',
      approvers: [USER],
      expiresAt: new Date(now + 300_000),
      ...over,
    };
  }

  /** A MESSAGE_COMPONENT interaction: a press of `customId` on a message in CHANNEL, by USER unless overridden. */
  function press(customId: string, over: Record<string, unknown> = {}) {
    return interaction({ type: 3, message: { id: '1500000000000000001', channel_id: CHANNEL }, data: { custom_id: customId, component_type: 2 }, ...over });
  }

  /** A slash command taken in, so the approval goes through its interaction webhook. */
  async function commandEvent(adapter: DiscordAdapter, intake: ReturnType<typeof recordingIntake>) {
    const payload = interaction();
    fake.registerInteraction(payload.token, CHANNEL);
    await postInteraction(adapter, payload);
    return { payload, event: intake.events.at(-1)! };
  }

  const ephemeral = (content: string) => ({ type: 4, data: { content, flags: 64, allowed_mentions: { parse: [] } } });

  it('askApproval posts Approve / Deny buttons as a follow-up on the interaction webhook, pinging nobody', async () => {
    const { adapter, intake, clock } = makeAdapter();
    const { payload, event } = await commandEvent(adapter, intake);
    const p = promptFor(event, clock.t, { approvers: [USER, OTHER] });
    const before = fake.calls.length;
    await adapter.askApproval!(p);

    const [post] = fake.find('POST', `/webhooks/${fake.applicationId}/${payload.token}`);
    expect(post!.headers.authorization).toBeUndefined();
    const body = post!.json as { content: string; allowed_mentions: unknown; components: unknown };
    expect(body.allowed_mentions).toEqual({ parse: [] });
    expect(body.content).toContain('**Approval needed**: the agent wants to call `github.create_issue`');
    expect(body.content).toContain('```\n{"title":"Fix the build"}\n```');
    expect(body.content).toContain(`<@${USER}>, <@${OTHER}> can answer within 300 s; no answer means denied.`);
    expect(body.components).toEqual([
      {
        type: 1,
        components: [
          { type: 2, style: 3, label: 'Approve', custom_id: `${APPROVE}${p.id}` },
          { type: 2, style: 4, label: 'Deny', custom_id: `${DENY}${p.id}` },
        ],
      },
    ]);
    // No channel post, and the deferred original ("Thinking…") is left to the turn's answer.
    expect(fake.calls.slice(before).map((c) => `${c.method} ${c.path}`)).toEqual([`POST /webhooks/${fake.applicationId}/${payload.token}`]);
    expect(fake.find('PATCH', `/webhooks/${fake.applicationId}/${payload.token}/messages/@original`)).toHaveLength(0);
  });

  it('names the operator when no Discord user may answer', async () => {
    const { adapter, clock } = makeAdapter();
    const p = promptFor({ conversation: `discord:${GUILD}:${CHANNEL}`, id: 'discord:1' }, clock.t, { approvers: [], summary: '' });
    const before = fake.calls.length;
    await adapter.askApproval!(p);
    const [post] = fake.calls.slice(before);
    const content = (post!.json as { content: string }).content;
    expect(content).toContain('The operator (through the agent-vm API) can answer within 300 s');
    expect(content).not.toContain('```');
  });

  it('approvalSettled edits the follow-up to the verdict and removes the buttons', async () => {
    const { adapter, intake, clock } = makeAdapter();
    const { payload, event } = await commandEvent(adapter, intake);
    const p = promptFor(event, clock.t);
    await adapter.askApproval!(p);
    const [post] = fake.find('POST', `/webhooks/${fake.applicationId}/${payload.token}`);
    const sent = fake.message(idOf(post!))!;
    expect(sent.components).toHaveLength(1);

    await adapter.approvalSettled!(p, { decision: 'approved', by: `discord:${USER}` });
    const [edit] = fake.find('PATCH', `/webhooks/${fake.applicationId}/${payload.token}/messages/${sent.id}`);
    expect(edit!.json).toMatchObject({ components: [], allowed_mentions: { parse: [] } });
    expect((edit!.json as { content: string }).content).toContain('`github.create_issue`');
    expect((edit!.json as { content: string }).content).toMatch(new RegExp(`✅ Approved by <@${USER}>\\.$`));
    expect(fake.message(sent.id)!.components).toEqual([]);

    // Settled once: a second settle of the same request changes nothing.
    const before = fake.calls.length;
    await adapter.approvalSettled!(p, { decision: 'denied', by: 'local:api' });
    expect(fake.calls.length).toBe(before);
  });

  it('after the interaction token expires, asks in the channel with the bot token and edits there', async () => {
    const { adapter, intake, clock } = makeAdapter();
    const { payload, event } = await commandEvent(adapter, intake);
    clock.t += 15 * 60 * 1000;
    const p = promptFor(event, clock.t);
    await adapter.askApproval!(p);
    expect(callsFor(payload.token)).toHaveLength(0);
    const [post] = fake.find('POST', `/channels/${CHANNEL}/messages`).slice(-1);
    expect(post!.headers.authorization).toBe(`Bot ${fake.botToken}`);
    expect(post!.json).toMatchObject({ allowed_mentions: { parse: [] }, components: [{ type: 1 }] });
    const id = idOf(post!);

    await adapter.approvalSettled!(p, { decision: 'timeout', by: null });
    const [edit] = fake.find('PATCH', `/channels/${CHANNEL}/messages/${id}`);
    expect(edit!.headers.authorization).toBe(`Bot ${fake.botToken}`);
    expect(edit!.json).toMatchObject({ components: [] });
    expect((edit!.json as { content: string }).content).toContain('⌛ Nobody answered in time, so the call was denied.');
  });

  it('settles a follow-up through the channel once its token has expired', async () => {
    const { adapter, intake, clock } = makeAdapter();
    const { payload, event } = await commandEvent(adapter, intake);
    const p = promptFor(event, clock.t);
    await adapter.askApproval!(p);
    const [post] = fake.find('POST', `/webhooks/${fake.applicationId}/${payload.token}`);
    const id = idOf(post!);
    clock.t += 14 * 60 * 1000;
    await adapter.approvalSettled!(p, { decision: 'denied', by: 'local:api' });
    const [edit] = fake.find('PATCH', `/channels/${CHANNEL}/messages/${id}`);
    expect((edit!.json as { content: string }).content).toMatch(/⛔ Denied by the operator\.$/);
    expect(fake.message(id)!.components).toEqual([]);
  });

  it('an approver’s press is answered through the desk as the Discord user and acknowledged with a deferred update', async () => {
    const id = randomUUID();
    const { desk, answers } = fakeDesk({ [id]: [`discord:${USER}`] });
    const { adapter, intake } = makeAdapter({ approvals: desk });
    const res = await postInteraction(adapter, press(`${APPROVE}${id}`));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ type: 6 });
    expect(answers).toEqual([{ id, decision: 'approved', by: { platform: 'discord', user: USER } }]);
    expect(intake.events).toHaveLength(0);

    // In a DM the presser is `user`, not `member.user`.
    const other = randomUUID();
    const dm = fakeDesk({ [other]: [`discord:${USER}`] });
    const { adapter: a2 } = makeAdapter({ approvals: dm.desk });
    const pressDm = press(`${DENY}${other}`, { guild_id: undefined, member: undefined, user: { id: USER, username: 'ada' } });
    expect(await (await postInteraction(a2, pressDm)).json()).toEqual({ type: 6 });
    expect(dm.answers).toEqual([{ id: other, decision: 'denied', by: { platform: 'discord', user: USER } }]);
  });

  it('tells a non-approver, privately, who may answer', async () => {
    const id = randomUUID();
    const other = randomUUID();
    const { desk, answers } = fakeDesk({ [id]: [`discord:${USER}`, 'slack:U1', `discord:${GUILD}`], [other]: ['slack:U1'] });
    const { adapter } = makeAdapter({ approvals: desk });
    const stranger = { member: { user: { id: OTHER, username: 'eve' }, nick: null } };
    const res = await postInteraction(adapter, press(`${APPROVE}${id}`, stranger));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(ephemeral(`Only <@${USER}>, <@${GUILD}> can answer this request.`));
    expect(answers[0]).toEqual({ id, decision: 'approved', by: { platform: 'discord', user: OTHER } });
    expect(await (await postInteraction(adapter, press(`${DENY}${other}`, stranger))).json()).toEqual(ephemeral('Only the operator can answer this request.'));
  });

  it('tells the presser when the request is no longer waiting', async () => {
    const id = randomUUID();
    const { desk } = fakeDesk({ [id]: [`discord:${USER}`] });
    const { adapter } = makeAdapter({ approvals: desk });
    expect(await (await postInteraction(adapter, press(`${APPROVE}${id}`))).json()).toEqual({ type: 6 });
    const gone = ephemeral('This request is no longer waiting: it was answered already or has expired.');
    expect(await (await postInteraction(adapter, press(`${DENY}${id}`))).json()).toEqual(gone);
    expect(await (await postInteraction(adapter, press(`${APPROVE}${randomUUID()}`))).json()).toEqual(gone);
  });

  it('without a desk, a press is told approvals are not answered from Discord', async () => {
    const { adapter } = makeAdapter();
    const res = await postInteraction(adapter, press(`${APPROVE}${randomUUID()}`));
    expect(await res.json()).toEqual(ephemeral('Approvals are not answered from Discord on this agent-vm.'));
  });

  it('a desk that fails or is slow gets "try again", never a 5xx', async () => {
    const failing = fakeDesk({}, () => {
      throw new Error('database down');
    });
    const { adapter } = makeAdapter({ approvals: failing.desk });
    const res = await postInteraction(adapter, press(`${APPROVE}${randomUUID()}`));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(ephemeral('Could not record the answer; try again.'));

    let release!: () => void;
    const slow = fakeDesk({}, () => new Promise<void>((r) => (release = r)));
    const { adapter: a2 } = makeAdapter({ approvals: slow.desk, ackDeadlineMs: 50 });
    const started = performance.now();
    const late = await postInteraction(a2, press(`${DENY}${randomUUID()}`));
    expect(performance.now() - started).toBeLessThan(2000);
    expect(late.status).toBe(200);
    expect(await late.json()).toEqual(ephemeral('Could not record the answer; try again.'));
    release();
  });

  it('acknowledges buttons that are not ours without asking the desk', async () => {
    const { desk, answers } = fakeDesk({});
    const { adapter, intake } = makeAdapter({ approvals: desk });
    expect(await (await postInteraction(adapter, press('someone_else:123'))).json()).toEqual({ type: 6 });
    expect(await (await postInteraction(adapter, press(`${APPROVE}`))).json()).toMatchObject({ type: 4, data: { flags: 64 } });
    expect(answers).toHaveLength(0);
    expect(intake.events).toHaveLength(0);
  });

  it('rejects a component interaction with a bad signature with 401, before the desk', async () => {
    const id = randomUUID();
    const { desk, answers } = fakeDesk({ [id]: [`discord:${USER}`] });
    const { adapter } = makeAdapter({ approvals: desk });
    const body = JSON.stringify(press(`${APPROVE}${id}`));
    const good = signed(body);
    const bad = { ...good, 'x-signature-ed25519': good['x-signature-ed25519']!.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')) };
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body, headers: bad })).status).toBe(401);
    const forged = body.replace(USER, OTHER);
    expect((await mounted(adapter.routes).request('/discord/interactions', { method: 'POST', body: forged, headers: good })).status).toBe(401);
    expect(answers).toHaveLength(0);
  });

  it('a press settles end to end: desk answer, then the message edited without buttons', async () => {
    let p: ApprovalPrompt | undefined;
    let self: DiscordAdapter | undefined;
    // A desk that settles the request the way the gateway does: answer, then approvalSettled.
    const desk: ApprovalDesk = {
      pending: async () => [],
      async answer(id, decision, by) {
        if (!p || id !== p.id) return { status: 'unknown' };
        void self!.approvalSettled!(p, { decision, by: by ? `${by.platform}:${by.user}` : 'local:api' });
        return { status: 'answered' };
      },
    };
    const { adapter, intake, clock } = makeAdapter({ approvals: desk });
    self = adapter;
    const { payload, event } = await commandEvent(adapter, intake);
    p = promptFor(event, clock.t);
    await adapter.askApproval!(p);
    const [post] = fake.find('POST', `/webhooks/${fake.applicationId}/${payload.token}`);
    const id = idOf(post!);
    expect(await (await postInteraction(adapter, press(`${DENY}${p.id}`, { message: { id, channel_id: CHANNEL } }))).json()).toEqual({ type: 6 });
    const [edit] = await fake.waitFor('PATCH', `/webhooks/${fake.applicationId}/${payload.token}/messages/${id}`);
    expect((edit!.json as { content: string }).content).toMatch(new RegExp(`⛔ Denied by <@${USER}>\\.$`));
    expect(fake.message(id)!.components).toEqual([]);
  });
});

/** The id of the message a recorded create call made. */
function idOf(call: { method: string; path: string; response?: unknown }): string {
  const id = (call.response as { id?: unknown } | undefined)?.id;
  if (typeof id !== 'string') throw new Error(`no message for ${call.method} ${call.path}`);
  return id;
}
