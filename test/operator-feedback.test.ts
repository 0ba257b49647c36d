/**
 * People's 👍/👎 on answers as operators see them (issue 14, "stored with the turn and shown to
 * operators"): `GET /v1/feedback` (newest first, with a count per value, by profile), each
 * conversation's transcript carrying its turns' ratings, and the dashboard's Feedback page —
 * hostile user ids escaped, behind the same tokens as the rest of the operator API.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import type { FakeDriver } from '../src/sandbox/fake.js';
import { openStore, type Store } from '../src/store/index.js';
import { REFERENCE_AGENT_HOST_BUNDLE, makeFakeDriver } from './helpers/fake.js';
import { tempDir, testConfig } from './helpers/env.js';
import { manifest, writeProfiles } from './helpers/gateway.js';

const ADMIN = 'admin-token-feedback-0123456789';
const P = 'fb-fake';
const HOSTILE = '<img src=x onerror=alert(1)>';
const auth = { authorization: `Bearer ${ADMIN}` };

let running: Running;
let store: Store;
let driver: FakeDriver;
let conversation = '';
let eventId = '';

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  const profilesDir = tempDir('profiles');
  const dataDir = tempDir('data');
  await writeProfiles(profilesDir, [manifest(P)]);
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir, AGENTVM_ADMIN_TOKEN: ADMIN });
  store = await openStore({ dataDir });
  await store.migrate();
  driver = makeFakeDriver();
  const ctx = { config, logger: createLogger('silent'), store, driver, close: async () => undefined } as Omit<Context, 'snapshots'> as Context;
  running = await startGatewayApp(ctx, { units: 'all' });
  const event = localEvent(localMessageSchema.parse({ profile: P, text: 'echo rated answer', conversation: 'rated' }), 'test');
  conversation = event.conversation;
  eventId = event.id;
  await running.gateway.intake.accept(event);
  for await (const o of running.gateway.watcher.watch(event.id)) void o;
  await store.feedback.record({ eventId, platform: 'slack', userId: 'UALICE', value: 'positive' });
  await store.feedback.record({ eventId, platform: 'slack', userId: HOSTILE, value: 'negative' });
});
afterAll(async () => {
  await running?.stop();
  await driver?.close();
  await store?.close();
});

describe('feedback for operators', () => {
  it('lists ratings with their turn, newest first, counted per value, and filters by profile', async () => {
    const res = await running.app.request('/v1/feedback', { headers: auth });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { summary: Record<string, number>; rows: Array<Record<string, unknown>> };
    expect(body.summary).toEqual({ positive: 1, negative: 1 });
    expect(body.rows.map((r) => [r.userId, r.value])).toEqual([[HOSTILE, 'negative'], ['UALICE', 'positive']]);
    expect(body.rows[0]).toMatchObject({ eventId, platform: 'slack', profile: P, conversation, at: expect.any(String) });
    const other = (await (await running.app.request('/v1/feedback?profile=nobody', { headers: auth })).json()) as typeof body;
    expect(other).toEqual({ summary: { positive: 0, negative: 0 }, rows: [] });
    expect((await running.app.request('/v1/feedback')).status).toBe(401);
  });

  it("shows a conversation's ratings with its transcript", async () => {
    const t = (await (await running.app.request(`/v1/conversations/${encodeURIComponent(conversation)}`, { headers: auth })).json()) as { feedback: Array<Record<string, unknown>> };
    expect(t.feedback.map((f) => [f.eventId, f.value]).sort()).toEqual([[eventId, 'negative'], [eventId, 'positive']]);
  });

  it('has a dashboard page, hostile ids escaped, and the transcript page counts each turn’s ratings', async () => {
    const login = await running.app.request('/ui/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: ADMIN }).toString() });
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const page = await (await running.app.request('/ui/feedback', { headers: { cookie } })).text();
    expect(page).toContain('<a href="/ui/feedback" class="on">Feedback</a>');
    expect(page).toContain('👍 1');
    expect(page).toContain('👎 1');
    expect(page).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(page).not.toContain(HOSTILE);
    const transcript = await (await running.app.request(`/ui/conversations/view?id=${encodeURIComponent(conversation)}`, { headers: { cookie } })).text();
    expect(transcript).toMatch(/👍 1 · 👎 1/);
  });
});
