/**
 * ClickUp end to end: HMAC-signed `taskCommentPosted` webhooks into the real gateway app (PGlite,
 * in-process queue), the reference agent in a runsc sandbox, and the reply comment and task
 * attachments recorded by the local fake of the ClickUp API.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signClickUpBody } from '../src/adapters/clickup/index.js';
import { startFakeClickUp, type FakeClickUp } from './fakes/clickup-api.js';
import { describeCalls } from './fakes/http.js';
import { commentPostedBody, deliverWebhook } from './helpers/clickup.js';
import { manifest, profileId, startTestGateway, type TestGateway } from './helpers/gateway.js';

const SECRET = 'clickup-e2e-webhook-secret';
const TEAM = '9001';
const SPACE = '501';
const TRIGGER = '@helper';
const HUMAN = { id: 183, username: 'John' };

const main = profileId('clickup-main');
let fake: FakeClickUp;
let gw: TestGateway;

beforeAll(async () => {
  fake = await startFakeClickUp();
  gw = await startTestGateway({
    manifests: [
      manifest(main, {
        bindings: [{ platform: 'clickup', team: TEAM, space: SPACE, trigger: TRIGGER }],
      }),
    ],
    env: { CLICKUP_TOKEN: fake.token, CLICKUP_WEBHOOK_SECRET: SECRET, CLICKUP_API_URL: fake.url },
  });
});

afterAll(async () => {
  await gw?.close();
  await fake?.close();
});

/** A fresh task in the bound space. */
function seedTask(): string {
  const id = `t${randomBytes(4).toString('hex')}`;
  fake.tasks.set(id, {
    id,
    name: 'Quarterly report',
    description: 'Collect the numbers and write the summary.',
    team_id: TEAM,
    space: { id: SPACE },
    folder: { id: '601' },
    list: { id: '701' },
  });
  return id;
}

function commentPayload(o: { taskId: string; text: string; historyId?: string; user?: { id: number; username: string } }): { body: string; eventId: string } {
  const historyId = o.historyId ?? String(BigInt('2800000000000000000') + BigInt(randomBytes(4).readUInt32BE()));
  const body = commentPostedBody({
    historyId,
    taskId: o.taskId,
    parentId: o.taskId,
    user: { ...(o.user ?? HUMAN), email: 'someone@example.com' },
    text: `${o.text}\n`,
    date: String(Date.now()),
  });
  return { body, eventId: `clickup:${historyId}` };
}

const deliver = (body: string, signature?: string | null) => deliverWebhook(gw.running.app, body, SECRET, signature);

const settled = (eventId: string) => gw.settled(eventId, main, () => describeCalls(fake.calls));

const comments = (taskId: string) => fake.find('POST', `/task/${taskId}/comment`).filter((c) => c.status === 200);
const commentText = (c: { json?: unknown }) => (c.json as { comment_text: string }).comment_text;

describe('ClickUp end to end', () => {
  it('answers a triggering comment with a reply comment naming the file, and attaches the file to the task', async () => {
    const taskId = seedTask();
    const { body, eventId } = commentPayload({ taskId, text: `${TRIGGER} write summary.md done` });
    const res = await deliver(body);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    await settled(eventId);

    const attachments = fake.find('POST', `/task/${taskId}/attachment`);
    expect(attachments).toHaveLength(1);
    expect(attachments[0]!.status).toBe(200);
    expect(attachments[0]!.headers['content-type']).toMatch(/^multipart\/form-data/);
    expect(attachments[0]!.headers.authorization).toBe(fake.token);
    expect(attachments[0]!.files.map((f) => [f.field, f.name, f.data.toString()])).toEqual([['attachment', 'summary.md', 'done']]);

    const replies = comments(taskId);
    expect(replies).toHaveLength(1);
    expect(commentText(replies[0]!)).toBe('wrote summary.md (4 bytes)\n\nAttached to this task:\n- summary.md');

    // The agent was given the task as context before the comment.
    const event = await gw.ctx.store.gateway.getEvent(eventId);
    expect(event).toMatchObject({ status: 'delivered', profile: main, conversation: `clickup:${taskId}` });
  });

  it('runs one turn for a delivery ClickUp sends twice', async () => {
    const taskId = seedTask();
    const { body, eventId } = commentPayload({ taskId, text: `${TRIGGER} echo only once` });
    expect((await deliver(body)).status).toBe(200);
    expect((await deliver(body)).status).toBe(200);
    await settled(eventId);
    expect((await deliver(body)).status).toBe(200); // and once more after the answer
    await new Promise((r) => setTimeout(r, 500));
    await gw.running.gateway.units.get(main)!.idle();
    expect(comments(taskId).map(commentText)).toEqual(['only once']);
    const rows = await gw.ctx.store.gateway.eventTranscript(eventId);
    expect(rows.filter((r) => r.kind === 'prompt')).toHaveLength(1);
  });

  it("ignores the agent's own comments: no event, no turn, no reply", async () => {
    const taskId = seedTask();
    // What agent-vm itself posted, e.g. a reply quoting the trigger.
    const { body, eventId } = commentPayload({ taskId, text: `${TRIGGER} echo talking to myself`, user: fake.user });
    const res = await deliver(body);
    expect(res.status).toBe(200);
    expect(await gw.ctx.store.gateway.getEvent(eventId)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 1000));
    await gw.running.gateway.units.get(main)!.idle();
    expect(comments(taskId)).toEqual([]);
    expect(fake.find('POST', `/task/${taskId}/attachment`)).toEqual([]);
  });

  it('refuses a bad or missing signature with 401 and stores nothing', async () => {
    const taskId = seedTask();
    const { body, eventId } = commentPayload({ taskId, text: `${TRIGGER} echo forged` });
    expect((await deliver(body, signClickUpBody(body, 'not-the-secret'))).status).toBe(401);
    expect((await deliver(body, null)).status).toBe(401);
    expect(await gw.ctx.store.gateway.getEvent(eventId)).toBeUndefined();
    expect(comments(taskId)).toEqual([]);
  });
});
