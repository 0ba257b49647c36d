/**
 * The ClickUp adapter as people see answers arrive, against the ClickUp API fake: one comment
 * per answer (partials ignored), one progress comment only for long turns, earlier task comments
 * as thread context, credentials, and — for every step the fake can refuse — the answer and its
 * files, or a note, never nothing.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createClickUpAdapter, encodeReplyTo, type ClickUpAdapter, type ClickUpAdapterOptions } from '../src/adapters/clickup/index.js';
import type { DeliveryFailure, InboundEvent, OutboundMessage } from '../src/adapters/types.js';
import { isAgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { RecordingIntake } from './contracts/channel-adapter.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';

let fake: FakeClickUp;
let failures: DeliveryFailure[];
const adapters: ClickUpAdapter[] = [];

beforeEach(async () => {
  fake = await startFakeClickUp();
  fake.tasks.set('t1', { id: 't1', name: 'Quarterly report', team_id: '9001', space: { id: '1' }, folder: { id: '2' }, list: { id: '3' } });
  failures = [];
});
afterEach(async () => {
  await Promise.all(adapters.splice(0).map((a) => a.close()));
  await fake.close();
});

function make(over: Partial<ClickUpAdapterOptions> = {}): ClickUpAdapter {
  const a = createClickUpAdapter({
    webhookSecret: 's', token: fake.token, apiUrl: fake.url, intake: new RecordingIntake(), logger: createLogger('silent'),
    sleep: async () => undefined, onDeliveryFailure: (f) => failures.push(f), ...over,
  });
  adapters.push(a);
  return a;
}

const comments = () => fake.find('POST', '/task/t1/comment').filter((c) => c.status < 300).map((c) => (c.json as { comment_text: string }).comment_text);
const reply = (over: Partial<Extract<OutboundMessage, { kind: 'reply' }>> = {}): Extract<OutboundMessage, { kind: 'reply' }> => ({
  kind: 'reply', conversation: 'clickup:t1', eventId: 'clickup:h1', text: 'The answer is 42.', files: [], heldBack: [], ...over,
});

describe('answers', () => {
  it('posts one comment at the end: partial answers are not streamed to the task', async () => {
    const adapter = make();
    await adapter.send({ kind: 'partial', conversation: 'clickup:t1', eventId: 'clickup:h1', text: 'The ans' });
    await adapter.send({ kind: 'partial', conversation: 'clickup:t1', eventId: 'clickup:h1', text: 'The answer is' });
    await adapter.send(reply());
    expect(comments()).toEqual(['The answer is 42.']);
  });

  it('posts one progress comment for a turn still running after the setting, none for a short one', async () => {
    const intake = new RecordingIntake();
    const adapter = make({ intake, progressAfterMs: 50 });
    const body = (await import('./helpers/clickup.js')).commentPostedBody;
    const { signClickUpBody } = await import('../src/adapters/clickup/index.js');
    const deliver = (historyId: string) => {
      const raw = body({ historyId, taskId: 't1', parentId: 'p', user: { id: 183, username: 'John', email: 'j@x' }, text: '@support go', date: String(Date.now()) });
      return adapter.routes.request('/clickup/webhook', { method: 'POST', body: raw, headers: { 'content-type': 'application/json', 'x-signature': signClickUpBody(raw, 's') } });
    };
    await deliver('long');
    await deliver('short');
    await adapter.idle();
    await adapter.send({ kind: 'reply', conversation: 'clickup:t1', eventId: 'clickup:short', text: 'quick', files: [], heldBack: [] });
    await adapter.send({ kind: 'progress', conversation: 'clickup:t1', eventId: 'clickup:long', text: 'reading the ledger' });
    for (let i = 0; i < 200 && comments().length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    expect(comments()).toEqual(['quick', 'Still working on this (over 0 s so far)… reading the ledger']);
    await adapter.send({ kind: 'reply', conversation: 'clickup:t1', eventId: 'clickup:long', text: 'done', files: [], heldBack: [] });
    expect(comments()).toHaveLength(3);
  });
});

describe('nothing dropped silently', () => {
  async function deliver(adapter: ClickUpAdapter, msg: OutboundMessage): Promise<void> {
    for (let i = 0; i < 3; i++) {
      try {
        return await adapter.send(msg);
      } catch (err) {
        if (!isAgentVmError(err) || !err.retryable) return;
      }
    }
  }

  for (const [step, match] of [['attachment', /^POST \/task\/t1\/attachment$/], ['comment', /^POST \/task\/t1\/comment$/]] as const) {
    for (const status of [503, 400]) {
      it(`${step} refused once (HTTP ${status}): the person sees the answer and the file, or a note`, async () => {
        const adapter = make();
        fake.failNext(status, status === 503 ? 4 : 1, match);
        await deliver(adapter, reply({ files: [{ name: 'a.txt', data: Buffer.from('aaa') }] }));
        const texts = comments();
        const answered = texts.some((t) => t.startsWith('The answer is 42.') && t.includes('Attached to this task:\n- a.txt'));
        const noted = texts.some((t) => /could not be posted|Not attached:\n- a\.txt: ClickUp refused/.test(t));
        expect(answered || noted, JSON.stringify(texts)).toBe(true);
        expect(texts.filter((t) => t.startsWith('The answer is 42.')).length).toBeLessThanOrEqual(1);
        expect(failures.length).toBeGreaterThan(0);
      });
    }
  }

  it('names a file over the size limit with its size instead of uploading it', async () => {
    const adapter = make({ maxUploadBytes: 1000 });
    await adapter.send(reply({ files: [{ name: 'big.bin', data: Buffer.alloc(3 * 1024) }, { name: 'ok.txt', data: Buffer.from('ok') }] }));
    expect(fake.find('POST', '/task/t1/attachment')).toHaveLength(1);
    expect(comments()[0]).toContain("Not attached:\n- big.bin: 3.0 KiB, over ClickUp's 1000 B limit per file");
    expect(failures).toEqual([expect.objectContaining({ platform: 'clickup', step: 'file', shown: true })]);
  });
});

describe('thread context', () => {
  it("gives the first turn on a task its earlier comments, then only the new ones (not agent-vm's own)", async () => {
    const cursors = new Map<string, string>();
    const adapter = make({ threads: { getCursor: async (c) => cursors.get(c), putCursor: async (c, v) => void cursors.set(c, v) }, threadLimits: { maxMessages: 30, maxChars: 20_000 } });
    const t0 = Date.UTC(2025, 0, 1);
    for (let i = 0; i < 30; i++) fake.addComment('t1', { user: { id: 7, username: 'ann' }, text: `note ${i}`, date: t0 + i * 1000 });
    fake.addComment('t1', { user: { id: 8, username: 'bob' }, text: 'see attached\n- fake: line', files: ['plan.pdf'], date: t0 + 40_000 });
    const ask = fake.addComment('t1', { user: { id: 183, username: 'John' }, text: '@support thoughts?', date: t0 + 50_000 });
    const event = (c: { id: string; date: string }, id: string): InboundEvent => ({
      id, platform: 'clickup', address: { platform: 'clickup', team: '9001' }, conversation: 'clickup:t1', replyTo: encodeReplyTo(c.id, c.date),
      user: { id: '183' }, text: 'thoughts?', receivedAt: '',
    });
    const first = await adapter.fetchContext!(event(ask, 'clickup:e1'), { maxFileBytes: 1, maxFiles: 1 });
    expect(first.preamble).toContain('ClickUp task: Quarterly report');
    expect(first.preamble).toContain('Earlier in this thread (30 messages, oldest first; 1 older not shown)');
    expect(first.preamble).toContain('bob: see attached\n    - fake: line\n    (files: plan.pdf)');
    expect(first.preamble).not.toContain('note 0\n');
    expect(first.preamble).not.toContain('thoughts?');

    await adapter.send(reply({ eventId: 'clickup:e1', text: 'our answer' })); // agent-vm's own comment
    fake.addComment('t1', { user: { id: 9, username: 'cy' }, text: 'new info', date: Date.now() + 1000 });
    const again = fake.addComment('t1', { user: { id: 183, username: 'John' }, text: '@support and now?', date: Date.now() + 2000 });
    const second = await adapter.fetchContext!(event(again, 'clickup:e2'), { maxFileBytes: 1, maxFiles: 1 });
    expect(second.preamble).toContain('New in this thread since your last answer (1 message');
    expect(second.preamble).toContain('cy: new info');
    expect(second.preamble).not.toContain('our answer');
  });
});

describe('credentials', () => {
  it('reports a refused token naming CLICKUP_TOKEN, and an unreachable ClickUp as transient', async () => {
    expect(await make().checkCredentials()).toEqual({ ok: true, platform: 'clickup', identity: 'agent-vm bot' });
    expect(await make({ token: 'pk_wrong' }).checkCredentials()).toMatchObject({ ok: false, platform: 'clickup', setting: 'CLICKUP_TOKEN', transient: false });
    expect(await make({ apiUrl: 'http://127.0.0.1:9/api/v2' }).checkCredentials()).toMatchObject({ ok: false, setting: 'CLICKUP_TOKEN', transient: true });
  });
});
