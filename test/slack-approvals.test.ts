/**
 * Approval buttons in Slack, against the local fake Web API and an in-test approval desk: the
 * request is posted with Approve / Deny buttons and pings nobody; a press is verified, checked
 * against the approvers, and refused to anyone else in a message only they see; the settled
 * request loses its buttons. Button presses arrive over HTTP and over Socket Mode.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSlackAdapter, signSlackRequest } from '../src/adapters/slack/index.js';
import type { ApprovalDesk, ApprovalPrompt } from '../src/adapters/types.js';
import { createLogger } from '../src/log.js';
import { mounted } from './helpers/app.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { until } from './helpers/wait.js';

const SECRET = 'test-signing-secret';
const NOW = 1_700_000_000_000;
const TEAM = 'T0FAKE';
const CHANNEL = 'C0CHAN';
const THREAD = '1699999999.000100';
const logger = createLogger('silent');

interface FakeDesk extends ApprovalDesk {
  answers: Array<{ id: string; decision: string; by?: { platform: string; user: string } }>;
}

/** One pending request, `apr-1`, that only UASKER may answer. */
function fakeDesk(): FakeDesk {
  let open = true;
  const answers: FakeDesk['answers'] = [];
  return {
    answers,
    async pending() {
      return [];
    },
    async answer(id, decision, by) {
      answers.push({ id, decision, ...(by ? { by } : {}) });
      if (id !== 'apr-1' || !open) return { status: 'unknown' };
      if (by && by.user !== 'UASKER') return { status: 'not_allowed', approvers: ['slack:UASKER'] };
      open = false;
      return { status: 'answered' };
    },
  };
}

let fake: FakeSlack;
let desk: FakeDesk;
const closers: Array<() => Promise<void>> = [];

beforeEach(async () => {
  fake = await startFakeSlack();
  desk = fakeDesk();
});
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  await fake.close();
});

function makeAdapter(extra: { appToken?: string; withDesk?: boolean } = {}) {
  const adapter = createSlackAdapter({
    signingSecret: SECRET,
    botToken: fake.botToken,
    apiUrl: fake.url,
    intake: { accept: async () => ({ status: 'accepted', profile: 'helper' }) },
    logger,
    now: () => NOW,
    botUserId: fake.botUserId,
    retryConfig: { retries: 0 },
    ...(extra.withDesk === false ? {} : { approvals: desk }),
    ...(extra.appToken ? { appToken: extra.appToken } : {}),
  });
  closers.push(() => adapter.close());
  return adapter;
}

const prompt: ApprovalPrompt = {
  id: 'apr-1',
  conversation: `slack:${TEAM}:${CHANNEL}:${THREAD}`,
  eventId: 'slack:Ev0001',
  tool: 'github.create_issue',
  summary: '{"title":"Fix the build"}',
  approvers: ['UASKER'],
  expiresAt: new Date(NOW + 120_000),
};

function press(user: string, action: 'agentvm_approve' | 'agentvm_deny', value = 'apr-1') {
  return {
    type: 'block_actions',
    user: { id: user, team_id: TEAM },
    team: { id: TEAM },
    channel: { id: CHANNEL },
    container: { type: 'message', channel_id: CHANNEL, message_ts: '1700000000.000001', thread_ts: THREAD },
    response_url: 'https://hooks.slack.invalid/actions/x',
    actions: [{ action_id: action, block_id: 'agentvm_approval', value, type: 'button', action_ts: '1700000001.000000' }],
  };
}

async function postInteraction(adapter: ReturnType<typeof makeAdapter>, payload: unknown, o: { path?: string; secret?: string } = {}) {
  const body = `payload=${encodeURIComponent(JSON.stringify(payload))}`;
  const ts = String(NOW / 1000);
  return mounted(adapter.routes).request(o.path ?? '/slack/interactivity', {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      'x-slack-request-timestamp': ts,
      'x-slack-signature': signSlackRequest(o.secret ?? SECRET, ts, body),
    },
    body,
  });
}

const waitFor = (what: string, ok: () => boolean) => until(what, () => (ok() ? true : undefined), { timeoutMs: 3000, everyMs: 10 });

const buttons = (blocks: unknown[] | undefined) =>
  (blocks ?? []).flatMap((b) => ((b as { type: string }).type === 'actions' ? ((b as { elements: Array<{ action_id: string; value: string; style?: string }> }).elements) : []));

describe('Slack approval buttons', () => {
  it('posts the request in the thread with Approve and Deny buttons, naming who may answer', async () => {
    const adapter = makeAdapter();
    await adapter.askApproval(prompt);
    const [m] = fake.messages;
    expect(m).toMatchObject({ channel: CHANNEL, thread_ts: THREAD });
    expect(m!.text).toContain('github.create_issue');
    expect(buttons(m!.blocks)).toEqual([
      expect.objectContaining({ action_id: 'agentvm_approve', value: 'apr-1', style: 'primary' }),
      expect.objectContaining({ action_id: 'agentvm_deny', value: 'apr-1', style: 'danger' }),
    ]);
    const shown = JSON.stringify(m!.blocks);
    expect(shown).toContain('<@UASKER> can answer within 120 s');
    expect(shown).toContain('Fix the build');
  });

  it('takes a press from the approver, refuses anyone else privately, and rewrites the message when settled', async () => {
    const adapter = makeAdapter();
    await adapter.askApproval(prompt);

    const mallory = await postInteraction(adapter, press('UMALLORY', 'agentvm_approve'));
    expect(mallory.status).toBe(200);
    await waitFor('the private notice', () => fake.ephemerals.length === 1);
    expect(fake.ephemerals[0]).toMatchObject({ channel: CHANNEL, user: 'UMALLORY', thread_ts: THREAD, text: 'Only <@UASKER> can answer this request.' });

    expect((await postInteraction(adapter, press('UASKER', 'agentvm_deny'))).status).toBe(200);
    await waitFor('both answers at the desk', () => desk.answers.length === 2);
    expect(desk.answers).toEqual([
      { id: 'apr-1', decision: 'approved', by: { platform: 'slack', user: 'UMALLORY' } },
      { id: 'apr-1', decision: 'denied', by: { platform: 'slack', user: 'UASKER' } },
    ]);

    await adapter.approvalSettled(prompt, { decision: 'denied', by: 'slack:UASKER' });
    const [m] = fake.messages;
    expect(buttons(m!.blocks)).toEqual([]);
    expect(JSON.stringify(m!.blocks)).toContain('Denied by <@UASKER>');

    // A second press after the request settled is told so, privately.
    await postInteraction(adapter, press('UASKER', 'agentvm_approve'), { path: '/slack/events' });
    await waitFor('the second private notice', () => fake.ephemerals.length === 2);
    expect(fake.ephemerals[1]!.text).toMatch(/no longer waiting/);
  });

  it('says so when nobody answered in time', async () => {
    const adapter = makeAdapter();
    await adapter.askApproval(prompt);
    await adapter.approvalSettled(prompt, { decision: 'timeout', by: null });
    expect(fake.messages[0]!.text).toMatch(/Nobody answered in time/);
    expect(buttons(fake.messages[0]!.blocks)).toEqual([]);
  });

  it('refuses an unsigned or wrongly signed press without answering anything', async () => {
    const adapter = makeAdapter();
    const res = await postInteraction(adapter, press('UASKER', 'agentvm_approve'), { secret: 'not-the-secret' });
    expect(res.status).toBe(401);
    const bad = await mounted(adapter.routes).request('/slack/interactivity', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `payload=${encodeURIComponent(JSON.stringify(press('UASKER', 'agentvm_approve')))}`,
    });
    expect(bad.status).toBe(401);
    await new Promise((r) => setTimeout(r, 50));
    expect(desk.answers).toEqual([]);
  });

  it('ignores other interactions, and tells the presser when approvals are not answered from Slack', async () => {
    const adapter = makeAdapter({ withDesk: false });
    expect((await postInteraction(adapter, { type: 'shortcut', callback_id: 'x', user: { id: 'UASKER' } })).status).toBe(200);
    expect((await postInteraction(adapter, press('UASKER', 'agentvm_approve'))).status).toBe(200);
    await waitFor('the private notice', () => fake.ephemerals.length === 1);
    expect(fake.ephemerals[0]!.text).toMatch(/not answered from Slack/);
  });

  it('takes button presses over Socket Mode', async () => {
    const adapter = makeAdapter({ appToken: fake.appToken });
    await adapter.start();
    expect(await fake.deliverSocket(press('UASKER', 'agentvm_approve'), { type: 'interactive' })).toEqual({ acked: true });
    await waitFor('the answer at the desk', () => desk.answers.length === 1);
    expect(desk.answers[0]).toEqual({ id: 'apr-1', decision: 'approved', by: { platform: 'slack', user: 'UASKER' } });
  });
});
