/**
 * A turn's final text is identical to what was streamed (issue 14), through the whole gateway:
 * an agent that answers in 30 `agent_message_chunk`s 40 ms apart (test/helpers/stream-agent.mjs,
 * on the fake sandbox driver), a Slack mention, and the fake Slack Web API. The answer shows as
 * one streamed message (chat.startStream, appends, chat.stopStream by the reply) whose pieces join
 * to exactly the agent's text, which is also the stored reply: nothing posted twice, nothing lost.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signSlackRequest } from '../src/adapters/slack/index.js';
import { startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import { createFakeDriver, type FakeDriver } from '../src/sandbox/fake.js';
import { openStore, type Store } from '../src/store/index.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { tempDir, testConfig } from './helpers/env.js';
import { until } from './helpers/wait.js';

const SECRET = 'streamed-final-secret';
const TEAM = 'T0STR';
const CHANNEL = 'C0STR';
const AGENT_IN_IMAGE = '/opt/test/stream-agent.mjs';
const AGENT_ON_HOST = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'stream-agent.mjs');
const CHUNKS = 30;
/** What stream-agent.mjs sends, joined. */
const ANSWER = Array.from({ length: CHUNKS }, (_, i) => (i === 0 ? 'Streamed **answer**:' : ` part ${i}${i % 7 === 0 ? '.\n\n' : ','}`)).join('');

let slack: FakeSlack;
let store: Store;
let driver: FakeDriver;
let running: Running;
let dataDir: string;

beforeAll(async () => {
  slack = await startFakeSlack();
  dataDir = tempDir('streamed-final');
  const profilesDir = path.join(dataDir, 'profiles');
  await mkdir(profilesDir, { recursive: true });
  await writeFile(
    path.join(profilesDir, 'streamer.yaml'),
    stringify({
      version: 1, id: 'streamer', name: 'Streamer', agent: { command: ['node', AGENT_IN_IMAGE] }, runtime: 'runsc',
      limits: { cpus: 1, memoryMiB: 256, pids: 128 }, risk: 'L1', bindings: [{ platform: 'slack', team: TEAM }],
    }),
  );
  store = await openStore({ dataDir });
  await store.migrate();
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir, SLACK_SIGNING_SECRET: SECRET, SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url });
  driver = createFakeDriver({ root: path.join(dataDir, 'fake'), outbox: config.outbox, programs: { [AGENT_IN_IMAGE]: [AGENT_ON_HOST] }, path: process.env.PATH ?? '/usr/bin:/bin' });
  const ctx: Context = { config, logger: createLogger('silent'), store, driver, snapshots: driver.snapshots, close: async () => undefined };
  running = await startGatewayApp(ctx, { units: 'all' });
});

afterAll(async () => {
  await running?.stop();
  await driver?.close();
  await store?.close();
  await slack?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('streamed answers through the gateway', () => {
  it('show the final text exactly as streamed, in one message, identical to the stored reply', async () => {
    const ts = '1800000000.000100';
    const body = JSON.stringify({
      token: 'x', team_id: TEAM, api_app_id: 'A', type: 'event_callback', event_id: 'EvStream1', event_time: 1,
      authorizations: [{ user_id: slack.botUserId, is_bot: true }],
      event: { type: 'app_mention', user: 'UHUMAN1', text: `<@${slack.botUserId}> tell me`, ts, channel: CHANNEL, team: TEAM },
    });
    const stamp = String(Math.floor(Date.now() / 1000));
    const res = await running.app.request('/slack/events', {
      method: 'POST', body,
      headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signSlackRequest(SECRET, stamp, body) },
    });
    expect(res.status).toBe(200);
    const row = await until('the reply delivered', async () => {
      const e = await store.gateway.getEvent('slack:EvStream1');
      return e && ['delivered', 'failed'].includes(e.status) ? e : undefined;
    }, { timeoutMs: 30_000, everyMs: 50 });
    expect(row.status).toBe('delivered');
    expect(row.reply).toBe(ANSWER);

    const answers = slack.messages.filter((m) => m.thread_ts === ts && m.user === undefined);
    expect(answers).toHaveLength(1);
    const m = answers[0]!;
    expect(m.text).toBe(ANSWER);
    expect(m.streaming).toBe(false);
    // Streamed as it was written: several pieces, the first well before the end, joined to exactly the answer.
    expect(m.pieces!.length).toBeGreaterThan(2);
    expect(m.pieces!.join('')).toBe(ANSWER);
    expect(m.pieces![0]!.length).toBeLessThan(ANSWER.length / 2);
    expect(slack.callsTo('chat.postMessage').filter((c) => c.body.thread_ts === ts)).toHaveLength(0);
  }, 60_000);
});
