/**
 * Real AI agents as employees, end to end through the real gateway (issue 12): Claude Code, Codex
 * and Gemini CLI from their preset images under runsc, woken by the gateway's units, talking ACP,
 * their model traffic through the unit's model relay to local fakes of the provider APIs (the
 * only fakes: no machine here reaches a provider), keys only as AGENTVM_SECRET_<NAME>.
 *
 *   1. each preset writes report.md with its own tool (its permission request allowed by the
 *      manifest) and the file comes back with the reply; Claude also through a Slack mention;
 *   2. the real key reaches only the fake provider: not the sandbox's environment, files or
 *      processes, nor the transcript, audit rows or the gateway's debug log;
 *   3. the sandbox's token replayed from inside after the turn is refused (401);
 *   4. a model not allowed, a spent daily budget, upstream 429 / 500: the person is told;
 *   5. an `ask` permission: Approve / Deny buttons in Slack; approved → the file, denied → none.
 *
 * Images: `node bin/agent-vm.js image build --agents claude,codex,gemini` (scripts/test.sh).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { localConversation } from '../src/adapters/local/index.js';
import { releaseServiceFor } from '../src/cli/releases.js';
import { encodeConversation } from '../src/adapters/slack/index.js';
import { PRESETS } from '../src/governance/presets.js';
import { connectDocker } from '../src/sandbox/docker/engine.js';
import { modelUsageRepo } from '../src/store/model-usage.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { testConfig } from './helpers/env.js';
import { profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';
import {
  callRelayFromInside, captureLog, conversationPaths, MODELS, presetManifest, relayTokenIn, REPORT, sandboxReadable, startProviderFakes, writeReport,
  type CapturedLog, type ProviderFakes, type RealPreset,
} from './helpers/preset-gateway.js';
import { slackDriver, type SlackDriver } from './helpers/slack-driver.js';
import { until } from './helpers/wait.js';

const TEAM = 'T0PRESETS';
const CHANNEL = 'C0PRESET1';
const ASK_CHANNEL = 'C0PRESETA';
const HUMAN = 'UHUMAN001';
const PROMPT = 'Write a short report to report.md in your outbox, then tell me where it is.';
const DONE = 'Done: report.md is in your outbox.';
const TURN = { timeout: 300_000 };

const ids: Record<RealPreset, string> = { claude: profileId('pe-claude'), codex: profileId('pe-codex'), gemini: profileId('pe-gemini') };
const denied = profileId('pe-denied');
const budgeted = profileId('pe-budget');
const failing = profileId('pe-failing');
const asker = profileId('pe-ask');

let fakes: ProviderFakes;
let slack: FakeSlack;
let sd: SlackDriver;
let log: CapturedLog;
let gw: TestGateway;
const docker = connectDocker(testConfig().docker);
/** Every conversation the tests had, for the transcript check at the end. */
const conversations = new Set<string>();
/** Sends through the local channel and remembers the conversation. */
async function send(profile: string, text: string, conversation: string) {
  const r = await gw.send({ profile, text, conversation });
  conversations.add(r.conversation);
  return r;
}
/** The Slack conversation of a thread, remembered for the transcript check. */
function slackConversation(channel: string, ts: string): string {
  const c = encodeConversation(TEAM, channel, ts);
  conversations.add(c);
  return c;
}

beforeAll(async () => {
  fakes = await startProviderFakes();
  slack = await startFakeSlack();
  log = captureLog();
  const claudeModel = fakes.byProvider.anthropic;
  gw = await startTestGateway({
    manifests: [
      presetManifest(ids.claude, 'claude', { bindings: [{ platform: 'local', channels: ['*'] }, { platform: 'slack', team: TEAM, channels: [CHANNEL] }] }),
      presetManifest(ids.codex, 'codex'),
      presetManifest(ids.gemini, 'gemini'),
      // Claude is told to use a model its manifest does not allow.
      presetManifest(denied, 'claude', { agent: { preset: 'claude', env: { ANTHROPIC_DEFAULT_SONNET_MODEL: 'claude-haiku-4-5-20251001' } } }),
      // One token a day: the first call spends it.
      presetManifest(budgeted, 'claude', { models: [{ provider: 'anthropic', key: 'secret://E2E_ANTHROPIC_KEY', allow: [MODELS.claude], dailyTokens: 1 }] }),
      // Claude Code without retries, so a provider failure ends the turn at once.
      presetManifest(failing, 'claude', { agent: { preset: 'claude', env: { CLAUDE_CODE_MAX_RETRIES: '0' } } }),
      presetManifest(asker, 'claude', {
        bindings: [{ platform: 'slack', team: TEAM, channels: [ASK_CHANNEL] }],
        permissions: { allow: ['read', 'search', 'think'], ask: ['edit'], deny: [] },
      }),
    ],
    env: { ...fakes.env(), SLACK_SIGNING_SECRET: 'presets-e2e-signing-secret', SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url },
    logger: log.logger,
    approvalTimeoutMs: 120_000,
  });
  sd = slackDriver({ gw, slack, secret: 'presets-e2e-signing-secret', team: TEAM, user: HUMAN });
  // L2 runs only an image pinned by digest in a release (issue 17): pin each profile's preset
  // image as an operator would, one at a time (each health check starts the agent).
  for (const id of [...Object.values(ids), denied, budgeted, failing, asker]) {
    const [r] = await releaseServiceFor(gw.ctx).apply([id], { who: 'test' });
    expect(r!.outcome, `${id}: ${r!.why}`).toBe('swapped');
    await rest(id).catch(() => undefined);
  }
  expect(claudeModel.requests).toEqual([]);
}, 600_000);

afterAll(async () => {
  await gw?.close();
  await slack?.close();
  await fakes?.close();
});

// Every scripted reply was used by the test that queued it, so none leaks into the next.
afterEach(() => {
  for (const [provider, fake] of Object.entries(fakes.byProvider)) expect(fake.pending(), `${provider} replies left over`).toBe(0);
});

/** Frees the sandbox's memory for the next agent (this 2-core machine runs them one at a time). */
const rest = async (id: string) => {
  await gw.running.gateway.units.get(id)!.sleep('test: next agent');
};

const reportOf = (o: { kind: string; files?: Array<{ name: string; data: Buffer }> }) => o.files?.find((f) => f.name === 'report.md')?.data.toString('utf8');

describe('each preset writes report.md with its own tool, through the gateway', () => {
  for (const preset of ['claude', 'codex', 'gemini'] as const) {
    it(`${preset}: a local message → its write permission allowed by the manifest → report.md with the reply; the key only upstream; the token refused after the turn`, TURN, async () => {
      const id = ids[preset];
      const fake = fakes.of(preset);
      const provider = PRESETS[preset].provider!;
      const conversation = 'report';
      fake.enqueue(writeReport(preset, conversationPaths(localConversation(id, conversation))), { text: DONE });

      const r = await send(id, PROMPT, conversation);
      expect(r.outcome.kind, replyText(r.outcome)).toBe('reply');
      expect(replyText(r.outcome)).toContain(DONE);
      expect(reportOf(r.outcome as { kind: string; files: Array<{ name: string; data: Buffer }> })).toBe(REPORT);
      expect(r.progress.join('\n')).not.toContain('permission denied');
      expect(fake.pending()).toBe(0);

      // The manifest allowed the write: one `edit` permission, allowed, in the audit trail.
      const audit = await gw.running.gateway.audit.tail(500);
      const perms = audit.filter((a) => a.profile === id && a.action === 'permission');
      expect(perms.map((p) => [p.decision, (p.data as { kind?: string }).kind])).toEqual([['allow', 'edit']]);
      // The reply's transcript row carries the turn's token usage (from the relay).
      const reply = (await gw.ctx.store.gateway.eventTranscript(r.eventId)).find((t) => t.kind === 'reply');
      expect((reply?.meta as { usage?: { calls: number; totalTokens: number } }).usage).toMatchObject({ calls: expect.any(Number), totalTokens: expect.any(Number) });
      expect((reply?.meta as { usage: { calls: number } }).usage.calls).toBeGreaterThanOrEqual(2);

      // 2. The provider saw the real key on every call; the sandbox holds only the relay's token.
      const calls = fake.requests.filter((q) => q.method === 'POST');
      expect(calls.length).toBeGreaterThanOrEqual(2);
      for (const q of fake.requests) expect(q.credential).toBe(fake.apiKey);
      const st = await gw.ctx.driver.status(id);
      const inspect = await docker.getContainer(st.containerId).inspect();
      const token = relayTokenIn(inspect.Config.Env ?? [], provider);
      expect(token).toMatch(/^avm-[A-Za-z0-9_-]{40,}$/);
      const readable = await sandboxReadable(gw.ctx.driver, id);
      expect(readable).toContain(token); // the positive control: we read where the token is
      expect(readable).toContain(REPORT.split('\n')[0]!);
      for (const key of fakes.keys()) {
        expect(JSON.stringify(inspect)).not.toContain(key);
        expect(readable).not.toContain(key);
      }

      // 3. The same token from inside the sandbox after the turn ended: refused, never forwarded.
      const before = fake.requests.length;
      const replay = await callRelayFromInside(gw.ctx.driver, id, provider, MODELS[preset]);
      expect(replay.status).toBe(401);
      expect(replay.body).toContain('honoured only while the agent runs a turn');
      expect(fake.requests.length).toBe(before);
      const refused = await until('the refusal in the audit trail', async () =>
        (await gw.running.gateway.audit.tail(200)).find((a) => a.profile === id && a.action === 'model.unauthorized'),
      );
      expect(refused).toMatchObject({ decision: 'deny', reason: 'no_turn' });

      await rest(id);
    });
  }

  it('claude through Slack: a mention → report.md uploaded into the thread with the answer', TURN, async () => {
    const ts = sd.nextTs();
    const fake = fakes.byProvider.anthropic;
    fake.enqueue(writeReport('claude', conversationPaths(slackConversation(CHANNEL, ts))), { text: DONE });
    const { eventId } = await sd.mention({ channel: CHANNEL, ts, text: PROMPT });
    await gw.settled(eventId, ids.claude, sd.calls);
    expect((await gw.ctx.store.gateway.getEvent(eventId))?.status).toBe('delivered');
    const upload = slack.uploads.find((u) => u.thread_ts === ts && u.filename === 'report.md');
    expect(upload).toMatchObject({ channel_id: CHANNEL, completed: true });
    expect(upload!.data?.toString('utf8')).toBe(REPORT);
    expect(sd.threadText(CHANNEL, ts)).toContain(DONE);
    expect(fake.pending()).toBe(0);
  });
});

describe('what the person is told when the model cannot answer', () => {
  it('a model the manifest does not allow: refused by the relay (never sent upstream), and said in the thread', TURN, async () => {
    const before = fakes.byProvider.anthropic.requests.length;
    const r = await send(denied, 'Say hello.', 'denied');
    // Claude Code's client does not retry (x-should-retry: false) and its prompt fails: the
    // failure notice says so, with the relay's note.
    expect(r.outcome.kind).toBe('notice');
    expect(replyText(r.outcome)).toMatch(/^<notice: The agent failed during the turn: /);
    expect(replyText(r.outcome)).toContain('\n\nmodel "claude-haiku-4-5-20251001" is not allowed for this agent; allowed: claude-sonnet-4-5-20250929');
    expect(fakes.byProvider.anthropic.requests.slice(before).filter((q) => q.method === 'POST')).toEqual([]);
    const audit = await gw.running.gateway.audit.tail(300);
    expect(audit.find((a) => a.profile === denied && a.action === 'model.denied')).toMatchObject({ decision: 'deny', subject: 'claude-haiku-4-5-20251001' });
    await rest(denied);
  });

  it('a spent daily budget: the first turn is answered and counted in the database, the second is refused and said', TURN, async () => {
    const fake = fakes.byProvider.anthropic;
    fake.enqueue({ text: 'First answer.' });
    const first = await send(budgeted, 'Say something.', 'budget');
    expect(replyText(first.outcome)).toContain('First answer.');
    const usage = modelUsageRepo(gw.ctx.store.db);
    const [row] = await until('the usage row', async () => ((await usage.list(budgeted))[0]?.tokens ?? 0) > 1 ? usage.list(budgeted) : undefined);
    expect(row).toMatchObject({ provider: 'anthropic', calls: 1 });
    // A run across UTC midnight still finds the budget spent on the next day.
    const next = new Date(Date.parse(`${row!.day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
    await usage.add(budgeted, next, row!.tokens, { provider: 'anthropic', usage: { inputTokens: row!.tokens, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, totalTokens: row!.tokens } });

    const before = fake.requests.length;
    const second = await send(budgeted, 'Say something else.', 'budget');
    expect(second.outcome.kind).toBe('notice');
    expect(replyText(second.outcome)).toMatch(/the daily model budget of this agent is spent \(\d+ of 1 tokens today, UTC\); it renews at 00:00 UTC/);
    expect(fake.requests.slice(before).filter((q) => q.path === '/v1/messages')).toEqual([]);
    await rest(budgeted);
  });

  it('an upstream 429, then an answer: the agent retries and the reply says the provider rate-limited it', TURN, async () => {
    fakes.byProvider.anthropic.enqueue({ error: 429, retryAfter: 1 }, { text: 'Answered after a retry.' });
    const r = await send(ids.claude, 'Say hello.', 'rate-limited');
    expect(r.outcome.kind).toBe('reply');
    expect(replyText(r.outcome)).toContain('Answered after a retry.');
    expect(replyText(r.outcome)).toContain('the anthropic API answered 429 to POST /v1/messages (rate limited); retry after 1 s');
  });

  it('an upstream 500, then an answer: the reply says the provider failed once', TURN, async () => {
    fakes.byProvider.anthropic.enqueue({ error: 500 }, { text: 'Answered after a failure.' });
    const r = await send(ids.claude, 'Say hello again.', 'server-error');
    expect(replyText(r.outcome)).toContain('Answered after a failure.');
    expect(replyText(r.outcome)).toContain('the anthropic API answered 500 to POST /v1/messages');
    await rest(ids.claude);
  });

  it('an upstream 500 the agent does not retry: the failure notice names it', TURN, async () => {
    const fake = fakes.byProvider.anthropic;
    fake.enqueue({ error: 500 });
    const before = fake.requests.length;
    const r = await send(failing, 'Say hello.', 'failing');
    expect(fake.requests.slice(before).filter((q) => q.method === 'POST').map((q) => q.status)).toEqual([500]);
    expect(replyText(r.outcome)).toMatch(/^<notice: The agent failed during the turn: .*API Error: 500/);
    expect(replyText(r.outcome)).toContain('\n\nthe anthropic API answered 500 to POST /v1/messages');
    await rest(failing);
  });
});

describe('an `ask` permission through Slack', () => {
  it('posts Approve / Deny for the write; approved → report.md in the thread', TURN, async () => {
    const ts = sd.nextTs();
    fakes.byProvider.anthropic.enqueue(writeReport('claude', conversationPaths(slackConversation(ASK_CHANNEL, ts))), { text: DONE });
    const { eventId } = await sd.mention({ channel: ASK_CHANNEL, ts, text: PROMPT });
    const asking = await sd.approvalIn(ASK_CHANNEL, ts);
    expect(asking.text).toContain('permission.edit');
    expect(JSON.stringify(asking.blocks)).toContain(`<@${HUMAN}> can answer`);
    expect(JSON.stringify(asking.blocks)).toContain('report.md');
    const approval = sd.approvalId(asking);
    await sd.press(asking, 'agentvm_approve');
    await gw.settled(eventId, asker, sd.calls);
    const upload = slack.uploads.find((u) => u.thread_ts === ts && u.filename === 'report.md');
    expect(upload?.data?.toString('utf8')).toBe(REPORT);
    expect(sd.threadText(ASK_CHANNEL, ts)).toContain(DONE);
    const audit = await gw.running.gateway.audit.tail(300);
    expect(audit.filter((a) => a.action === 'permission' && (a.data as { eventId?: string }).eventId === eventId).map((a) => a.decision)).toEqual(['allow']);
    expect(await gw.ctx.store.approvals.get(approval)).toMatchObject({ tool: 'permission.edit', status: 'approved', answeredBy: `slack:${HUMAN}` });
  });

  it('denied → no file, the agent is told and says it could not', TURN, async () => {
    const ts = sd.nextTs();
    const fake = fakes.byProvider.anthropic;
    fake.enqueue(writeReport('claude', conversationPaths(slackConversation(ASK_CHANNEL, ts))), { text: 'I could not write report.md: the write was not allowed.' });
    const before = fake.requests.length;
    const { eventId } = await sd.mention({ channel: ASK_CHANNEL, ts, text: PROMPT });
    const asking = await sd.approvalIn(ASK_CHANNEL, ts);
    const approval = sd.approvalId(asking);
    await sd.press(asking, 'agentvm_deny');
    await gw.settled(eventId, asker, sd.calls);
    expect(slack.uploads.filter((u) => u.thread_ts === ts)).toEqual([]);
    const text = sd.threadText(ASK_CHANNEL, ts);
    expect(text).toContain(`Denied by <@${HUMAN}>`);
    expect(await gw.ctx.store.approvals.get(approval)).toMatchObject({ tool: 'permission.edit', status: 'denied', answeredBy: `slack:${HUMAN}` });
    expect(text).toContain('I could not write report.md');
    const progress = (await gw.ctx.store.gateway.eventTranscript(eventId)).filter((t) => t.kind === 'progress').map((t) => t.text);
    expect(progress.join('\n')).toMatch(/permission denied: .*\(a person denied it/);
    // What the agent sent its model after the refusal: the tool's result is an error.
    const after = fake.requests.slice(before).filter((q) => q.path === '/v1/messages');
    expect(JSON.stringify(after.at(-1)?.body)).toMatch(/"is_error":true/);
    const audit = await gw.running.gateway.audit.tail(300);
    expect(audit.filter((a) => a.action === 'permission' && (a.data as { eventId?: string }).eventId === eventId).map((a) => [a.decision, a.reason])).toEqual([['deny', expect.stringContaining('a person denied it')]]);
    await rest(asker);
  });
});

describe('the real keys, after every turn above', () => {
  it('are in no transcript, audit row or line of the debug log', async () => {
    const audit = JSON.stringify(await gw.running.gateway.audit.tail(5000));
    expect(audit).toContain('model.call');
    const rows = (await Promise.all([...conversations].map((c) => gw.ctx.store.gateway.transcript(c)))).flat();
    expect(rows.filter((t) => t.kind === 'reply').length).toBeGreaterThanOrEqual(9);
    expect(rows.filter((t) => t.kind === 'notice').length).toBeGreaterThanOrEqual(3);
    const transcripts = JSON.stringify(rows);
    const logText = log.text();
    expect(logText).toContain('"level":20'); // debug lines were captured
    expect(logText).toContain('model call');
    for (const key of fakes.keys()) {
      expect(audit).not.toContain(key);
      expect(transcripts).not.toContain(key);
      expect(logText).not.toContain(key);
    }
  });
});
