/**
 * The ClickUp adapter against a local fake of the ClickUp API v2: webhook verification and
 * parsing through `routes.request()`, replies with attachments, rate limits with an injected
 * clock, turn context, and webhook registration.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createClickUpAdapter, registerWebhook, signClickUpBody, type ClickUpAdapter, type ClickUpAdapterOptions } from '../src/adapters/clickup/index.js';
import type { InboundEvent, OutboundMessage } from '../src/adapters/types.js';
import { RecordingIntake } from './contracts/channel-adapter.js';
import { isAgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { mounted } from './helpers/app.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { commentPostedBody, deliverWebhook } from './helpers/clickup.js';

const SECRET = 'clickup-webhook-secret-for-tests';
const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);

interface CommentOpts {
  historyId?: string;
  taskId?: string;
  userId?: number;
  username?: string;
  text?: string;
  blocks?: unknown[];
  webhookId?: string;
}

function commentPayload(o: CommentOpts = {}): string {
  return commentPostedBody({
    historyId: o.historyId ?? '2800803631413624919',
    taskId: o.taskId ?? 't1',
    parentId: '162641285',
    user: { id: o.userId ?? 183, username: o.username ?? 'John', email: 'john@example.com' },
    text: o.text ?? '@support please summarise this task\n',
    blocks: o.blocks,
    date: '1642737045116',
    webhookId: o.webhookId,
  });
}

const deliver = (adapter: ClickUpAdapter, body: string, signature?: string | null) => deliverWebhook(mounted(adapter.routes), body, SECRET, signature);

async function waitFor(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ClickUp adapter', () => {
  let fake: FakeClickUp;
  let intake: RecordingIntake;
  let clock: number;
  let sleeps: number[];
  const adapters: ClickUpAdapter[] = [];

  function make(over: Partial<ClickUpAdapterOptions> = {}): ClickUpAdapter {
    const a = createClickUpAdapter({
      webhookSecret: SECRET,
      token: fake.token,
      apiUrl: fake.url,
      intake,
      logger: createLogger('silent'),
      now: () => clock,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock += ms;
      },
      ...over,
    });
    adapters.push(a);
    return a;
  }

  beforeEach(async () => {
    fake = await startFakeClickUp();
    fake.tasks.set('t1', {
      id: 't1',
      name: 'Quarterly report',
      description: 'Collect the numbers and write the summary.',
      team_id: '9001',
      space: { id: '501' },
      folder: { id: '601' },
      list: { id: '701' },
    });
    intake = new RecordingIntake();
    clock = T0;
    sleeps = [];
  });

  afterEach(async () => {
    await Promise.all(adapters.splice(0).map((a) => a.close?.()));
    await fake.close();
  });

  describe('webhook', () => {
    it('turns a signed taskCommentPosted into an InboundEvent addressed by the task', async () => {
      const adapter = make();
      const res = await deliver(adapter, commentPayload());
      expect(res.status).toBe(200);
      await adapter.idle();
      expect(intake.events).toEqual([
        {
          id: 'clickup:2800803631413624919',
          platform: 'clickup',
          address: { platform: 'clickup', team: '9001', space: '501', folder: '601', list: '701' },
          conversation: 'clickup:t1',
          replyTo: 'clickup-comment:648893191:1642737045116',
          user: { id: '183', name: 'John' },
          text: '@support please summarise this task\n',
          receivedAt: new Date(T0).toISOString(),
        },
      ]);
      expect(fake.find('GET', '/task/t1')).toHaveLength(1);
      expect(fake.find('GET', '/task/t1')[0]?.headers.authorization).toBe(fake.token);
    });

    it('leaves a hidden (folderless) folder out of the address', async () => {
      fake.tasks.set('t2', { id: 't2', name: 'x', team_id: '9001', space: { id: '501' }, folder: { id: '999', hidden: true }, list: { id: '702' } });
      const adapter = make();
      expect((await deliver(adapter, commentPayload({ taskId: 't2' }))).status).toBe(200);
      await adapter.idle();
      expect(intake.events[0]?.address).toEqual({ platform: 'clickup', team: '9001', space: '501', list: '702' });
    });

    it('carries the comment attachments', async () => {
      const url = fake.addFile('notes.txt', Buffer.from('hello'));
      const adapter = make();
      const blocks = [
        { text: '@support see file ', attributes: {} },
        { type: 'attachment', text: 'notes.txt', attachment: { id: 'a1', title: 'notes.txt', url, size: 5, mimetype: 'text/plain' } },
      ];
      expect((await deliver(adapter, commentPayload({ blocks }))).status).toBe(200);
      await adapter.idle();
      expect(intake.events[0]?.attachments).toEqual([{ ref: url, name: 'notes.txt', size: 5, mimeType: 'text/plain' }]);
    });

    it('answers 401 to a bad, missing or stale signature and never calls the intake', async () => {
      const adapter = make();
      const body = commentPayload();
      expect((await deliver(adapter, body, 'ab'.repeat(32))).status).toBe(401);
      expect((await deliver(adapter, body, null)).status).toBe(401);
      expect((await deliver(adapter, body, 'not-hex')).status).toBe(401);
      expect((await deliver(adapter, body, signClickUpBody(body, 'another-secret'))).status).toBe(401);
      // The body changed after signing.
      const changed = body.replace('please summarise', 'please delete');
      expect((await deliver(adapter, changed, signClickUpBody(body, SECRET))).status).toBe(401);
      expect(intake.events).toEqual([]);
      expect(fake.calls).toEqual([]);
    });

    it('uses the secret of the webhook agent-vm registered, and fails closed for unknown webhooks', async () => {
      const secrets = new Map([['wh-known', 'per-webhook-secret']]);
      const adapter = make({ webhookSecret: undefined, secretFor: async (id) => secrets.get(id) });
      const known = commentPayload({ webhookId: 'wh-known' });
      expect((await deliver(adapter, known, signClickUpBody(known, 'per-webhook-secret'))).status).toBe(200);
      const unknown = commentPayload({ webhookId: 'wh-unknown', historyId: 'h-2' });
      expect((await deliver(adapter, unknown, signClickUpBody(unknown, SECRET))).status).toBe(401);
      await adapter.idle();
      expect(intake.events.map((e) => e.id)).toEqual(['clickup:2800803631413624919']);
    });

    it("ignores agent-vm's own comments, looking its user up once", async () => {
      const adapter = make();
      expect((await deliver(adapter, commentPayload({ userId: fake.user.id, historyId: 'h-own-1' }))).status).toBe(200);
      await adapter.idle();
      expect((await deliver(adapter, commentPayload({ userId: fake.user.id, historyId: 'h-own-2' }))).status).toBe(200);
      await adapter.idle();
      expect(intake.events).toEqual([]);
      expect(fake.find('GET', '/user')).toHaveLength(1);
      expect(fake.find('GET', '/task/t1')).toHaveLength(0);
      // The first was stored (its author was not known yet) and dropped; the second not even stored.
      expect([...intake.holds.values()].map((h) => [h.event.id, h.status])).toEqual([['clickup:h-own-1', 'dropped']]);
    });

    it('treats a redelivery of a stored comment as a no-op: one turn, no API call', async () => {
      const adapter = make();
      const body = commentPayload();
      expect((await deliver(adapter, body)).status).toBe(200);
      await adapter.idle();
      const calls = fake.calls.length;
      for (let i = 0; i < 3; i++) expect((await deliver(adapter, body)).status).toBe(200);
      await adapter.idle();
      expect(fake.calls).toHaveLength(calls);
      expect(intake.accepted).toHaveLength(1);
    });

    it('acknowledges before any ClickUp call: a hanging API holds nothing but the resolution', async () => {
      const adapter = make();
      const heal = fake.hang();
      // If the answer waited for ClickUp, this would never return.
      expect((await deliver(adapter, commentPayload())).status).toBe(200);
      expect([...intake.holds.keys()]).toEqual(['clickup:2800803631413624919']);
      expect(intake.accepted).toEqual([]);
      heal();
      await adapter.idle();
      expect(intake.accepted.map((e) => e.id)).toEqual(['clickup:2800803631413624919']);
    });

    it('waits out a rate-limited GET /task after the acknowledgement, and caches the task', async () => {
      const adapter = make();
      expect(await adapter.checkCredentials()).toMatchObject({ ok: true, identity: 'agent-vm bot' }); // learns its own user
      fake.rateLimitNext(Math.floor(T0 / 1000) + 11, 1);
      expect((await deliver(adapter, commentPayload({ historyId: 'h-a' }))).status).toBe(200);
      await adapter.idle();
      expect(sleeps).toEqual([11_000]); // the client waited for the reset, after the 200
      expect((await deliver(adapter, commentPayload({ historyId: 'h-b' }))).status).toBe(200);
      await adapter.idle();
      expect(intake.accepted.map((e) => e.id)).toEqual(['clickup:h-a', 'clickup:h-b']);
      expect(fake.find('GET', '/task/t1').map((c) => c.status)).toEqual([429, 200]);
    });

    it('resolves comments held before a restart when the next adapter starts', async () => {
      const first = make();
      fake.failNext(503, 100);
      expect((await deliver(first, commentPayload({ historyId: 'h-restart' }))).status).toBe(200);
      await first.idle();
      await first.close();
      expect(intake.accepted).toEqual([]);
      fake.clearFailures();
      const second = make();
      await second.start();
      for (let i = 0; i < 200 && intake.accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      await second.idle();
      expect(intake.accepted.map((e) => e.id)).toEqual(['clickup:h-restart']);
    });

    it('acknowledges other events without doing anything', async () => {
      const adapter = make();
      const body = JSON.stringify({ event: 'taskStatusUpdated', task_id: 't1', webhook_id: 'w', history_items: [] });
      const res = await deliver(adapter, body);
      expect(res.status).toBe(200);
      expect(intake.events).toEqual([]);
      expect(fake.calls).toEqual([]);
    });

    it('stays quiet on an unbound comment but explains an ambiguous one', async () => {
      const adapter = make();
      intake.next = { status: 'rejected', reason: 'unbound', message: 'nobody is bound here' };
      expect((await deliver(adapter, commentPayload({ historyId: 'h-unbound' }))).status).toBe(200);
      await adapter.idle();
      intake.next = { status: 'rejected', reason: 'ambiguous', message: 'two agents answer @support here; ask an admin' };
      expect((await deliver(adapter, commentPayload({ historyId: 'h-ambiguous' }))).status).toBe(200);
      await adapter.idle();
      await waitFor(() => fake.find('POST', '/task/t1/comment').length === 1, 'the ambiguity comment');
      await adapter.close?.();
      const comments = fake.find('POST', '/task/t1/comment');
      expect(comments.map((c) => c.json)).toEqual([{ comment_text: 'two agents answer @support here; ask an admin', notify_all: false }]);
    });
  });

  describe('send', () => {
    const reply = (over: Partial<Extract<OutboundMessage, { kind: 'reply' }>> = {}): OutboundMessage => ({
      kind: 'reply',
      conversation: 'clickup:t1',
      eventId: 'clickup:h1',
      text: 'Here is the summary.',
      files: [{ name: 'summary.md', data: Buffer.from('# Summary\n') }],
      heldBack: [{ name: 'huge.bin', reason: 'larger than 25 MiB' }],
      ...over,
    });

    it('attaches each file to the task and names it (and what was held back) in a reply comment', async () => {
      const adapter = make();
      await adapter.send(reply());
      const uploads = fake.find('POST', '/task/t1/attachment');
      expect(uploads).toHaveLength(1);
      expect(uploads[0]?.headers['content-type']).toMatch(/^multipart\/form-data/);
      expect(uploads[0]?.files.map((f) => ({ field: f.field, name: f.name, data: f.data.toString() }))).toEqual([
        { field: 'attachment', name: 'summary.md', data: '# Summary\n' },
      ]);
      const comments = fake.find('POST', '/task/t1/comment');
      expect(comments).toHaveLength(1);
      const json = comments[0]?.json as { comment_text: string; notify_all: boolean };
      expect(json.notify_all).toBe(false);
      expect(json.comment_text.startsWith('Here is the summary.')).toBe(true);
      expect(json.comment_text).toMatch(/Attached to this task:\n- summary\.md\n\nNot attached:\n- huge\.bin: larger than 25 MiB$/);
      // The files are on the task before the comment that names them.
      expect(fake.calls.indexOf(uploads[0]!)).toBeLessThan(fake.calls.indexOf(comments[0]!));
    });

    it('never posts a reply or a file twice when the same reply is sent again', async () => {
      const adapter = make();
      await adapter.send(reply());
      await adapter.send(reply());
      expect(fake.find('POST', '/task/t1/attachment')).toHaveLength(1);
      expect(fake.find('POST', '/task/t1/comment')).toHaveLength(1);
    });

    it('waits for X-RateLimit-Reset after a 429 and still delivers the reply', async () => {
      const adapter = make();
      const reset = Math.floor(T0 / 1000) + 42;
      fake.rateLimitNext(reset, 2);
      await adapter.send(reply({ files: [], heldBack: [] }));
      expect(sleeps[0]).toBe(reset * 1000 - T0);
      expect(clock).toBeGreaterThanOrEqual(reset * 1000);
      const comments = fake.find('POST', '/task/t1/comment');
      expect(comments.map((c) => c.status)).toEqual([429, 429, 200]);
      expect((comments[2]?.json as { comment_text: string }).comment_text).toBe('Here is the summary.');
    });

    it('retries 5xx with backoff, and raises other failures as non-retryable clickup_api_error', async () => {
      const adapter = make();
      fake.failNext(502, 2);
      await adapter.send({ kind: 'notice', conversation: 'clickup:t1', eventId: 'clickup:h2', text: 'The turn timed out.' });
      expect(sleeps).toEqual([500, 1000]);
      expect(fake.find('POST', '/task/t1/comment').map((c) => c.status)).toEqual([502, 502, 200]);

      const err = await adapter
        .send({ kind: 'notice', conversation: 'clickup:missing', eventId: 'clickup:h3', text: 'x' })
        .catch((e: unknown) => e);
      expect(isAgentVmError(err, 'clickup_api_error')).toBe(true);
      expect((err as { retryable: boolean }).retryable).toBe(false);

      fake.failNext(503, 10);
      const transient = await adapter
        .send({ kind: 'notice', conversation: 'clickup:t1', eventId: 'clickup:h4', text: 'x' })
        .catch((e: unknown) => e);
      expect(isAgentVmError(transient, 'clickup_api_error')).toBe(true);
      expect((transient as { retryable: boolean }).retryable).toBe(true);
    });

    it('keeps progress off the task', async () => {
      const adapter = make();
      await adapter.send({ kind: 'progress', conversation: 'clickup:t1', eventId: 'clickup:h1', text: 'reading files' });
      expect(fake.calls).toEqual([]);
    });

    it('rejects a conversation that is not a ClickUp task', async () => {
      const adapter = make();
      const err = await adapter.send({ kind: 'notice', conversation: 'slack:C1:1.2', eventId: 'e', text: 'x' }).catch((e: unknown) => e);
      expect(isAgentVmError(err, 'clickup_bad_conversation')).toBe(true);
    });
  });

  describe('fetchContext', () => {
    it("gives the task's name and description and downloads the comment's files within the caps", async () => {
      const other = await startFakeClickUp();
      try {
        const adapter = make();
        const privateUrl = fake.addFile('spec.pdf', Buffer.from('%PDF-1.7 spec'), { private: true });
        const foreignUrl = other.addFile('data.csv', Buffer.from('a,b\n1,2\n'));
        const bigUrl = fake.addFile('big.bin', Buffer.alloc(2048, 1));
        const event: InboundEvent = {
          id: 'clickup:h1',
          platform: 'clickup',
          address: { platform: 'clickup', team: '9001' },
          conversation: 'clickup:t1',
          user: { id: '183' },
          text: '@support look',
          attachments: [
            { ref: privateUrl, name: 'spec.pdf' },
            { ref: bigUrl, name: 'big.bin' },
            { ref: foreignUrl, name: '../data.csv' },
            { ref: fake.addFile('declared.bin', Buffer.alloc(10)), name: 'declared.bin', size: 10_000 },
            { ref: fake.addFile('extra.txt', Buffer.from('x')), name: 'extra.txt' },
          ],
          receivedAt: new Date(T0).toISOString(),
        };
        const ctx = await adapter.fetchContext!(event, { maxFileBytes: 1024, maxFiles: 2 });
        expect(ctx.preamble).toContain('Quarterly report');
        expect(ctx.preamble).toContain('Collect the numbers and write the summary.');
        expect(ctx.files.map((f) => ({ name: f.name, data: f.data.toString() }))).toEqual([
          { name: 'spec.pdf', data: '%PDF-1.7 spec' },
          // As ClickUp named it: the sandbox's inbox cleans and dedupes names (src/sandbox/inbox.ts).
          { name: '../data.csv', data: 'a,b\n1,2\n' },
        ]);
        expect(ctx.skipped).toEqual([
          { name: 'big.bin', reason: 'larger than 1024 bytes' },
          { name: 'declared.bin', reason: 'more than 2 attachments' },
          { name: 'extra.txt', reason: 'more than 2 attachments' },
        ]);
        // The token goes to ClickUp's own origin only.
        expect(fake.find('GET', /^\/attachments\/.*spec\.pdf$/)[0]?.headers.authorization).toBe(fake.token);
        expect(other.calls).toHaveLength(1);
        expect(other.calls[0]?.headers.authorization).toBeUndefined();
      } finally {
        await other.close();
      }
    });

    it('skips a file whose declared size is over the cap without downloading it', async () => {
      const adapter = make();
      const url = fake.addFile('declared.bin', Buffer.alloc(10));
      const ctx = await adapter.fetchContext!(
        {
          id: 'clickup:h9',
          platform: 'clickup',
          address: { platform: 'clickup', team: '9001' },
          conversation: 'clickup:t1',
          user: { id: '183' },
          text: '@support',
          attachments: [{ ref: url, name: 'declared.bin', size: 10_000 }, { ref: `${fake.origin}/attachments/nope/x.txt`, name: 'x.txt' }],
          receivedAt: new Date(T0).toISOString(),
        },
        { maxFileBytes: 1024, maxFiles: 5 },
      );
      expect(ctx.files).toEqual([]);
      expect(ctx.skipped).toEqual([
        { name: 'declared.bin', reason: 'larger than 1024 bytes' },
        { name: 'x.txt', reason: 'download failed' },
      ]);
      expect(fake.find('GET', /declared\.bin$/)).toHaveLength(0);
    });
  });

  it('registers a taskCommentPosted webhook and returns its secret', async () => {
    const hook = await registerWebhook({ apiUrl: fake.url, token: fake.token, team: '9001', endpoint: 'https://agents.example.com/clickup/webhook', list: '701' });
    expect(fake.webhooks).toHaveLength(1);
    expect(hook).toEqual({ id: fake.webhooks[0]?.id, secret: fake.webhooks[0]?.secret });
    expect(fake.find('POST', '/team/9001/webhook')[0]?.json).toEqual({
      endpoint: 'https://agents.example.com/clickup/webhook',
      events: ['taskCommentPosted'],
      list_id: 701,
    });
    const bad = await registerWebhook({ apiUrl: fake.url, token: 'pk_wrong', team: '9001', endpoint: 'https://x' }).catch((e: unknown) => e);
    expect(isAgentVmError(bad, 'clickup_api_error')).toBe(true);
  });

  it('closes idempotently and refuses to send afterwards', async () => {
    const adapter = make();
    await adapter.close?.();
    await adapter.close?.();
    const err = await adapter.send({ kind: 'notice', conversation: 'clickup:t1', eventId: 'e', text: 'x' }).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'adapter_closed')).toBe(true);
    expect((await deliver(adapter, commentPayload())).status).toBe(503);
  });
});
