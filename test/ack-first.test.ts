/**
 * Acknowledge first (issue 14): through the whole gateway (startGatewayApp on PGlite, router,
 * intake, queue, unit, the reference agent on the fake driver), Slack mentions and Discord slash
 * commands are answered within the platforms' 3 s whether their APIs are fast, slow (every call
 * answered after 4 s), or rate-limited (429 with Retry-After on every call the adapters make after
 * an acknowledgement) — each event stored by the time it is acknowledged. The same bursts with
 * the API healthy are the baseline: the acknowledgement must not depend on the API's speed.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { signSlackRequest } from '../src/adapters/slack/index.js';
import { startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import type { FakeDriver } from '../src/sandbox/fake.js';
import { createSnapshotStore } from '../src/sandbox/snapshots/index.js';
import { openStore, type Store } from '../src/store/index.js';
import { startFakeDiscord, type FakeDiscord } from './fakes/discord-api.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { PUBLIC_KEY_HEX, signed, slashCommand } from './helpers/discord.js';
import { tempDir, testConfig } from './helpers/env.js';
import { makeFakeDriver, REFERENCE_AGENT_IN_IMAGE, REFERENCE_AGENT_HOST_BUNDLE } from './helpers/fake.js';
import { until } from './helpers/wait.js';

const SECRET = 'ack-first-secret';
const TEAM = 'T0ACK';
const CHANNEL = 'C0ACK';
const GUILD = '910000000000000001';
const DCHANNEL = '910000000000000002';
/** Slack's and Discord's window for an acknowledgement. */
const WINDOW_MS = 3000;
const BURST = 12;

let slack: FakeSlack;
let discord: FakeDiscord;
let store: Store;
let driver: FakeDriver;
let running: Running;
let dataDir: string;

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  slack = await startFakeSlack();
  discord = await startFakeDiscord({ guilds: [{ id: GUILD, channels: [{ id: DCHANNEL, name: 'general' }] }] });
  dataDir = tempDir('ack-first');
  const profilesDir = path.join(dataDir, 'profiles');
  await mkdir(profilesDir, { recursive: true });
  await writeFile(
    path.join(profilesDir, 'acker.yaml'),
    stringify({
      version: 1, id: 'acker', name: 'Acker', agent: { command: ['node', REFERENCE_AGENT_IN_IMAGE] }, runtime: 'runsc',
      limits: { cpus: 1, memoryMiB: 256, pids: 128 }, risk: 'L1',
      bindings: [{ platform: 'slack', team: TEAM }, { platform: 'discord', guild: GUILD }],
    }),
  );
  store = await openStore({ dataDir });
  await store.migrate();
  driver = makeFakeDriver();
  const config = testConfig({
    AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir,
    SLACK_SIGNING_SECRET: SECRET, SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url,
    DISCORD_PUBLIC_KEY: PUBLIC_KEY_HEX, DISCORD_APPLICATION_ID: discord.applicationId, DISCORD_API_URL: discord.url,
  });
  const ctx: Context = { config, logger: createLogger('silent'), store, driver, snapshots: createSnapshotStore(config.snapshots, dataDir), close: async () => undefined };
  running = await startGatewayApp(ctx, { units: 'all', credentials: 'require' });
});

afterAll(async () => {
  await running?.stop();
  await driver?.close();
  await store?.close();
  await slack?.close();
  await discord?.close();
  await rm(dataDir, { recursive: true, force: true });
});

let seq = 0;
/** A signed Slack mention; resolves with its status, the time to the answer, and whether the event was stored by then. */
async function slackMention(): Promise<{ status: number; ms: number; stored: boolean }> {
  seq += 1;
  const eventId = `EvAck${seq}x${Date.now()}`;
  const body = JSON.stringify({
    token: 'x', team_id: TEAM, api_app_id: 'A', type: 'event_callback', event_id: eventId, event_time: 1,
    authorizations: [{ user_id: slack.botUserId, is_bot: true }],
    event: { type: 'app_mention', user: 'UHUMAN1', text: `<@${slack.botUserId}> echo hi ${seq}`, ts: `${1_800_000_000 + seq}.000100`, channel: CHANNEL, team: TEAM },
  });
  const stamp = String(Math.floor(Date.now() / 1000));
  const t = performance.now();
  const res = await running.app.request('/slack/events', {
    method: 'POST', body,
    headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signSlackRequest(SECRET, stamp, body) },
  });
  const ms = performance.now() - t;
  return { status: res.status, ms, stored: (await store.gateway.getEvent(`slack:${eventId}`)) !== undefined };
}

/** A signed Discord slash command; the same measurements, `status` being the interaction response type (5: deferred). */
async function discordCommand(): Promise<{ status: number; ms: number; stored: boolean }> {
  const payload = slashCommand({ applicationId: discord.applicationId, guild: GUILD, channel: DCHANNEL, user: '910000000000000004' }, 'echo hi');
  discord.registerInteraction(payload.token, DCHANNEL);
  const body = JSON.stringify(payload);
  const t = performance.now();
  const res = await running.app.request('/discord/interactions', { method: 'POST', body, headers: signed(body) });
  const ms = performance.now() - t;
  const type = res.status === 200 ? ((await res.json()) as { type: number }).type : -res.status;
  return { status: type, ms, stored: (await store.gateway.getEvent(`discord:${payload.id}`)) !== undefined };
}

/** A burst of Slack mentions and Discord commands at once. */
async function burst() {
  const [s, d] = await Promise.all([Promise.all(Array.from({ length: BURST }, slackMention)), Promise.all(Array.from({ length: BURST }, discordCommand))]);
  return { slack: s, discord: d, slackMax: Math.max(...s.map((r) => r.ms)), discordMax: Math.max(...d.map((r) => r.ms)) };
}

function expectAcked(b: Awaited<ReturnType<typeof burst>>, what: string) {
  expect(b.slack.map((r) => r.status), what).toEqual(b.slack.map(() => 200));
  expect(b.discord.map((r) => r.status), what).toEqual(b.discord.map(() => 5));
  expect([...b.slack, ...b.discord].every((r) => r.stored), `${what}: every event stored when acknowledged`).toBe(true);
  expect(b.slackMax, `${what}: slowest Slack ack`).toBeLessThan(WINDOW_MS);
  expect(b.discordMax, `${what}: slowest Discord ack`).toBeLessThan(WINDOW_MS);
}

describe('acknowledgement does not depend on the platform API', () => {
  it('answers within 3 s with the APIs healthy (baseline), slow (4 s per call) and rate-limited (429 on every call)', async () => {
    const healthy = await burst();
    expectAcked(healthy, 'healthy APIs');

    slack.delay('*', 4000);
    const releaseDiscord = discord.hang();
    const slow = await burst();
    expectAcked(slow, 'slow APIs');

    slack.delay('*', 0);
    releaseDiscord();
    const methods = ['reactions.add', 'reactions.remove', 'assistant.threads.setStatus', 'conversations.replies', 'chat.postMessage', 'chat.update', 'chat.startStream', 'chat.appendStream', 'chat.stopStream'];
    for (const m of methods) for (let i = 0; i < 40; i++) slack.failNext(m, { status: 429, retryAfter: 5 });
    discord.failNext({ status: 429, retryAfter: 5, times: 200 });
    const limited = await burst();
    expectAcked(limited, 'rate-limited APIs');
    // Not a formality: the adapters' calls after the acknowledgements did meet the limited APIs.
    await until('the adapters meeting the rate limits after the acks', () => (slack.calls.some((c) => c.method === 'reactions.add') && discord.calls.some((c) => c.status === 429) ? true : undefined), { timeoutMs: 30_000 });
    discord.clearFailures();
  }, 120_000);
});
