/**
 * Discord end to end: Ed25519-signed slash command interactions into the real gateway app
 * (PGlite, in-process queue), the reference agent in a runsc sandbox, and the answers recorded
 * by the local fake of the Discord REST API.
 */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeDiscord, type FakeDiscord, type RecordedCall } from './fakes/discord-api.js';
import { describeCalls } from './fakes/http.js';
import { PUBLIC_KEY_HEX, postInteraction, signed, slashCommand } from './helpers/discord.js';
import { manifest, profileId, startTestGateway, type TestGateway } from './helpers/gateway.js';

const GUILD = '910000000000000001';
const CHANNEL = '910000000000000002';
const UNBOUND = '910000000000000003';
const OTHER = '910000000000000005';
const USER = '910000000000000004';

const main = profileId('discord-main');
const spare = profileId('discord-spare');
let fake: FakeDiscord;
let gw: TestGateway;

beforeAll(async () => {
  fake = await startFakeDiscord({ guilds: [{ id: GUILD, channels: [{ id: CHANNEL, name: 'general' }, { id: UNBOUND, name: 'random' }, { id: OTHER, name: 'other' }] }] });
  gw = await startTestGateway({
    manifests: [
      manifest(main, { bindings: [{ platform: 'discord', guild: GUILD, channels: [CHANNEL], command: 'ask' }] }),
      manifest(spare, { bindings: [{ platform: 'discord', guild: GUILD, channels: [OTHER], command: 'ask' }] }),
    ],
    env: {
      DISCORD_PUBLIC_KEY: PUBLIC_KEY_HEX,
      DISCORD_APPLICATION_ID: fake.applicationId,
      DISCORD_BOT_TOKEN: fake.botToken,
      DISCORD_API_URL: fake.url,
    },
  });
});

afterAll(async () => {
  await gw?.close();
  await fake?.close();
});

function interaction(prompt: string, over: Record<string, unknown> = {}) {
  return slashCommand({ applicationId: fake.applicationId, guild: GUILD, channel: CHANNEL, user: USER }, prompt, over);
}

const post = (payload: unknown, headers?: Record<string, string>) => postInteraction(gw.running.app, payload, headers);

const originalPath = (token: string) => `/webhooks/${fake.applicationId}/${token}/messages/@original`;

const settled = (eventId: string) => gw.settled(eventId, main, () => describeCalls(fake.calls));

const content = (c: RecordedCall) => (c.json as { content?: string } | undefined)?.content;

describe('Discord end to end', () => {
  it('answers an unbound channel with an ephemeral explanation and wakes no sandbox', async () => {
    const payload = interaction('echo anyone?', { channel_id: UNBOUND, channel: { id: UNBOUND, type: 0 } });
    const res = await post(payload);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { type: number; data: { content: string; flags: number } };
    expect(body.type).toBe(4);
    expect(body.data.flags).toBe(64);
    expect(body.data.content).toContain('No agent is bound here');
    expect((await gw.ctx.store.gateway.getEvent(`discord:${payload.id}`))?.status).toBe('rejected');
    // First in the file: nothing has woken a sandbox of these profiles.
    for (const p of [main, spare]) expect((await gw.ctx.driver.status(p)).state).toBe('missing');
    expect(fake.calls.filter((c) => c.path.includes(payload.token))).toEqual([]);
  });

  it('defers a slash command within 3 s, edits the original with the answer and attaches the file', async () => {
    const payload = interaction('write out.txt hello');
    const started = performance.now();
    const res = await post(payload);
    expect(performance.now() - started).toBeLessThan(3000);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ type: 5 });

    await settled(`discord:${payload.id}`);
    const edits = fake.find('PATCH', originalPath(payload.token));
    const final = edits.at(-1)!;
    expect(content(final)).toBe('wrote out.txt (5 bytes)');
    expect(final.headers['content-type']).toMatch(/^multipart\/form-data/);
    expect(final.headers.authorization).toBeUndefined(); // the interaction token is the credential
    expect(final.json).toMatchObject({ attachments: [{ id: 0, filename: 'out.txt' }], allowed_mentions: { parse: [] } });
    expect(final.files.map((f) => [f.name, f.filename, f.data.toString()])).toEqual([['files[0]', 'out.txt', 'hello']]);
    // One answer: no follow-ups, no channel posts.
    expect(fake.calls.filter((c) => c.method === 'POST' && (c.path.includes(payload.token) || c.path.includes('/messages')))).toEqual([]);
    expect((await gw.ctx.store.gateway.getEvent(`discord:${payload.id}`))?.status).toBe('delivered');
  });

  it('shows progress by editing the original, then replaces it with the answer', async () => {
    const payload = interaction('progress 3');
    const res = await post(payload);
    expect(await res.json()).toEqual({ type: 5 });
    await settled(`discord:${payload.id}`);
    const edits = fake.find('PATCH', originalPath(payload.token)).map(content);
    expect(edits.length).toBeGreaterThanOrEqual(2);
    expect(edits[0]).toMatch(/^Thinking… plan \d\/3/);
    expect(edits.at(-1)).toBe('done 3');
  });

  it('runs one turn when the same interaction arrives twice', async () => {
    const payload = interaction('echo just once');
    const [a, b] = await Promise.all([post(payload), post(payload)]);
    expect(await a.json()).toEqual({ type: 5 });
    expect(await b.json()).toEqual({ type: 5 });
    await settled(`discord:${payload.id}`);
    await new Promise((r) => setTimeout(r, 300));
    await gw.running.gateway.units.get(main)!.idle();
    expect(fake.find('PATCH', originalPath(payload.token)).map(content)).toEqual(['just once']);
  });

  it('refuses a bad signature with 401 and stores nothing', async () => {
    const payload = interaction('echo forged');
    const body = JSON.stringify(payload);
    const other = generateKeyPairSync('ed25519');
    expect((await post(payload, signed(body, other.privateKey))).status).toBe(401);
    const good = signed(body);
    const tampered = JSON.stringify(interaction('sh rm -rf /workspace', { id: payload.id, token: payload.token }));
    expect((await gw.running.app.request('/discord/interactions', { method: 'POST', body: tampered, headers: good })).status).toBe(401);
    expect((await post(payload, { 'content-type': 'application/json' })).status).toBe(401);
    expect(await gw.ctx.store.gateway.getEvent(`discord:${payload.id}`)).toBeUndefined();
    expect(fake.calls.filter((c) => c.path.includes(payload.token))).toEqual([]);
  });
});
