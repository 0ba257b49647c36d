/**
 * The channels through the whole gateway (startGatewayApp: real router, intake, store on
 * PGlite, queue, unit and turns), with the reference agent on the fake sandbox driver and local
 * fakes of Slack, Discord and ClickUp: a Slack answer streamed into one message with 👀 → ✅ and
 * feedback stored with the turn; thread context reaching the agent's prompt; a ClickUp webhook
 * acknowledged while ClickUp's API hangs; credentials checked at start (`agent-vm up` refuses a
 * wrong Slack token with one line and exit 1; `--degraded` serves and /readyz says why).
 */
import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { signClickUpBody } from '../src/adapters/clickup/index.js';
import { FEEDBACK_ACTION, signSlackRequest } from '../src/adapters/slack/index.js';
import { startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { isAgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { createFakeDriver, type FakeDriver } from '../src/sandbox/fake.js';
import { createSnapshotStore } from '../src/sandbox/snapshots/index.js';
import { openStore, type Store } from '../src/store/index.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { commentPostedBody } from './helpers/clickup.js';
import { tempDir, testConfig } from './helpers/env.js';
import { REFERENCE_AGENT_HOST_BUNDLE, REFERENCE_AGENT_IN_IMAGE } from './helpers/fake.js';

const SECRET = 'e2e-slack-secret';
const CU_SECRET = 'e2e-clickup-secret';
const TEAM = 'T0FAKE';
const CHANNEL = 'C0E2E';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let slack: FakeSlack;
let clickup: FakeClickUp;
let store: Store;
let driver: FakeDriver;
let running: Running;
let dataDir: string;
let profilesDir: string;

function config(extra: Record<string, string> = {}) {
  return testConfig({
    AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir,
    SLACK_SIGNING_SECRET: SECRET, SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url,
    CLICKUP_TOKEN: clickup.token, CLICKUP_WEBHOOK_SECRET: CU_SECRET, CLICKUP_API_URL: clickup.url,
    ...extra,
  });
}

function ctxFor(cfg: ReturnType<typeof config>): Context {
  return { config: cfg, logger: createLogger('silent'), store, driver, snapshots: createSnapshotStore(cfg.snapshots, dataDir), close: async () => undefined };
}

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  slack = await startFakeSlack();
  clickup = await startFakeClickUp();
  clickup.tasks.set('t1', { id: 't1', name: 'Launch plan', team_id: '9001', space: { id: '1' }, folder: { id: '2' }, list: { id: '3' } });
  dataDir = tempDir('channels-e2e');
  profilesDir = path.join(dataDir, 'profiles');
  await mkdir(profilesDir, { recursive: true });
  await writeFile(
    path.join(profilesDir, 'helper.yaml'),
    stringify({
      version: 1, id: 'helper', name: 'Helper', agent: { command: ['node', REFERENCE_AGENT_IN_IMAGE] }, runtime: 'runsc',
      limits: { cpus: 1, memoryMiB: 256, pids: 128 }, risk: 'L1',
      bindings: [{ platform: 'slack', team: TEAM }, { platform: 'clickup', team: '9001', trigger: '@support' }],
    }),
  );
  store = await openStore({ dataDir });
  await store.migrate();
  driver = createFakeDriver({ root: path.join(dataDir, 'fake'), outbox: config().outbox, programs: { [REFERENCE_AGENT_IN_IMAGE]: [REFERENCE_AGENT_HOST_BUNDLE] } });
  running = await startGatewayApp(ctxFor(config()), { units: 'all', credentials: 'require' });
});

afterAll(async () => {
  await running?.stop();
  await driver?.close();
  await store?.close();
  await slack?.close();
  await clickup?.close();
  await rm(dataDir, { recursive: true, force: true });
});

let seq = 0;
async function mention(text: string, o: { threadTs?: string; ts?: string } = {}) {
  seq += 1;
  const ts = o.ts ?? `${1_800_000_000 + seq}.000100`;
  const body = JSON.stringify({
    token: 'x', team_id: TEAM, api_app_id: 'A', type: 'event_callback', event_id: `EvChan${seq}${Date.now()}`, event_time: 1,
    authorizations: [{ user_id: slack.botUserId, is_bot: true }],
    event: { type: 'app_mention', user: 'UHUMAN1', text: `<@${slack.botUserId}> ${text}`, ts, channel: CHANNEL, team: TEAM, ...(o.threadTs ? { thread_ts: o.threadTs } : {}) },
  });
  const stamp = String(Math.floor(Date.now() / 1000));
  const res = await running.app.request('/slack/events', {
    method: 'POST', body,
    headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signSlackRequest(SECRET, stamp, body) },
  });
  expect(res.status).toBe(200);
  const eventId = `slack:${(JSON.parse(body) as { event_id: string }).event_id}`;
  await settled(eventId);
  return { ts, eventId };
}

async function settled(eventId: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const row = await store.gateway.getEvent(eventId);
    if (row && ['delivered', 'failed', 'rejected'].includes(row.status)) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  await running.gateway.units.get('helper')!.idle();
}

describe('Slack through the gateway', () => {
  it('answers in one message, shows 👀 then ✅, and stores a 👍 with the turn', async () => {
    const { ts, eventId } = await mention('echo Streamed hello **world**');
    // One message holds the answer. (The reference agent answers in one chunk, so the gateway has
    // no partial to stream before the reply: streaming itself is proven in slack-adapter-live.)
    const answer = slack.messages.filter((m) => m.thread_ts === ts);
    expect(answer.map((m) => m.text)).toEqual([expect.stringMatching(/^Streamed hello \*{1,2}world\*{1,2}$/)]);
    expect(slack.reactions.filter((r) => r.ts === ts).map((r) => r.name)).toEqual(['white_check_mark']);
    expect(slack.callsTo('reactions.add').filter((c) => c.body.timestamp === ts).map((c) => c.body.name)).toEqual(['eyes', 'white_check_mark']);

    const payload = { type: 'block_actions', user: { id: 'UHUMAN1' }, channel: { id: CHANNEL }, container: { channel_id: CHANNEL, thread_ts: ts }, actions: [{ action_id: FEEDBACK_ACTION, value: `positive|${eventId}` }] };
    expect(JSON.stringify(answer[0]!.blocks)).toContain(`positive|${eventId}`);
    const body = `payload=${encodeURIComponent(JSON.stringify(payload))}`;
    const stamp = String(Math.floor(Date.now() / 1000));
    const res = await running.app.request('/slack/interactivity', {
      method: 'POST', body,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signSlackRequest(SECRET, stamp, body) },
    });
    expect(res.status).toBe(200);
    for (let i = 0; i < 100 && (await store.feedback.forEvent(eventId)).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await store.feedback.list({ profile: 'helper' })).toEqual([
      expect.objectContaining({ eventId, platform: 'slack', userId: 'UHUMAN1', value: 'positive', profile: 'helper', conversation: `slack:${TEAM}:${CHANNEL}:${ts}` }),
    ]);
  });

  it("puts an existing thread's earlier messages in the agent's first prompt there, and only what is new later", async () => {
    const root = slack.addThreadMessage({ channel: CHANNEL, user: 'UALICE', text: 'The launch moves to Friday.', files: ['plan.pdf'] });
    slack.addThreadMessage({ channel: CHANNEL, threadTs: root, user: 'UBOB', text: 'Then QA needs two more days.' });
    const first = await mention('prompt', { threadTs: root });
    // The answer shows either as mrkdwn (escaped) or, when it was streamed, as defused Markdown
    // (a zero-width space after '<'); both read the same to a person.
    const shown = (t: string) => t.replace(/\u200b/g, '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
    const prompt1 = shown(slack.messages.filter((m) => m.thread_ts === root && m.user === undefined).at(-1)!.text);
    expect(prompt1).toContain('Earlier in this thread (2 messages');
    expect(prompt1).toContain('<@UALICE>: The launch moves to Friday.');
    expect(prompt1).toContain('(files: plan.pdf)');
    slack.addThreadMessage({ channel: CHANNEL, threadTs: root, user: 'UCAROL', text: 'QA agreed.', ts: `${Number(first.ts.split('.')[0]) + 1}.000500` });
    await mention('prompt', { threadTs: root, ts: `${Number(first.ts.split('.')[0]) + 2}.000100` });
    const prompt2 = shown(slack.messages.filter((m) => m.thread_ts === root && m.user === undefined).at(-1)!.text);
    expect(prompt2).toContain('New in this thread since your last answer (1 message');
    expect(prompt2).toContain('<@UCAROL>: QA agreed.');
    expect(prompt2).not.toContain('Friday');
  });
});

describe('ClickUp through the gateway', () => {
  it('acknowledges a comment while the API hangs, then answers it once the task is known', async () => {
    const heal = clickup.hang();
    const raw = commentPostedBody({ historyId: `h${Date.now()}`, taskId: 't1', parentId: 'p', user: { id: 183, username: 'John', email: 'j@x' }, text: '@support echo from ClickUp', date: String(Date.now()) });
    const res = await running.app.request('/clickup/webhook', { method: 'POST', body: raw, headers: { 'content-type': 'application/json', 'x-signature': signClickUpBody(raw, CU_SECRET) } });
    expect(res.status).toBe(200); // waiting on ClickUp here would never return
    const id = `clickup:${(JSON.parse(raw) as { history_items: Array<{ id: string }> }).history_items[0]!.id}`;
    expect(await store.gateway.getHeld(id)).toMatchObject({ status: 'held' });
    heal();
    for (let i = 0; i < 400 && !(await store.gateway.getEvent(id)); i++) await new Promise((r) => setTimeout(r, 25));
    await settled(id);
    const comments = clickup.find('POST', '/task/t1/comment').filter((c) => c.status < 300).map((c) => (c.json as { comment_text: string }).comment_text);
    expect(comments).toContain('from ClickUp');
  });
});

describe('credentials at start', () => {
  it('refuses to start on a wrong Slack token, naming the platform and the setting; --degraded serves and /readyz says why', async () => {
    const wrong = config({ SLACK_BOT_TOKEN: 'xoxb-wrong' });
    const refused = await startGatewayApp(ctxFor(wrong), { units: [], credentials: 'require' }).catch((e: unknown) => e);
    expect(isAgentVmError(refused, 'credentials_refused')).toBe(true);
    expect((refused as Error).message).toBe('Slack: Slack refused the bot token (auth.test: invalid_auth); fix SLACK_BOT_TOKEN (or start with --degraded to serve the other channels)');

    const degraded = await startGatewayApp(ctxFor(wrong), { units: [], credentials: 'degraded' });
    try {
      const ready = await degraded.app.request('/readyz');
      expect(ready.status).toBe(503);
      const checks = ((await ready.json()) as { checks: Array<{ name: string; ok: boolean; error?: string }> }).checks;
      expect(checks.find((c) => c.name === 'channel:slack')).toEqual({ name: 'channel:slack', ok: false, error: 'Slack refused the bot token (auth.test: invalid_auth); fix SLACK_BOT_TOKEN' });
      expect(checks.find((c) => c.name === 'channel:clickup')).toMatchObject({ ok: true });
      expect(degraded.channels.unhealthy()).toEqual([{ platform: 'slack', setting: 'SLACK_BOT_TOKEN', reason: 'Slack refused the bot token (auth.test: invalid_auth)' }]);
    } finally {
      await degraded.stop();
    }
  });

  it('`agent-vm up` with a wrong Slack token exits 1 with one line', async () => {
    const dir = tempDir('up-wrong');
    await mkdir(path.join(dir, 'profiles'), { recursive: true });
    try {
      // Not spawnSync: the fake Slack answering auth.test lives in this process.
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', "const { main } = await import('./src/cli.ts'); process.exit(await main(['up']));"], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH, AGENTVM_DATA_DIR: dir, AGENTVM_PROFILES_DIR: path.join(dir, 'profiles'), AGENTVM_RUNTIME: 'runsc', AGENTVM_PORT: '0', AGENTVM_LOG_LEVEL: 'silent',
          SLACK_SIGNING_SECRET: SECRET, SLACK_BOT_TOKEN: 'xoxb-wrong', SLACK_API_URL: slack.url,
        },
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
      const r = { status, stderr };
      expect(r.status).toBe(1);
      expect(r.stderr).toBe('agent-vm: error: Slack: Slack refused the bot token (auth.test: invalid_auth); fix SLACK_BOT_TOKEN (or start with --degraded to serve the other channels)\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
