/**
 * The dashboard (`/ui`) and the operator API (`/v1/…`) in-process (`app.request`), over a real
 * gateway with the fake sandbox driver: off without AGENTVM_ADMIN_TOKEN; login sets an HttpOnly,
 * SameSite=Strict session cookie; a wrong token, a POST without the CSRF token or from another
 * origin are refused and change nothing; hostile agent and platform strings are escaped
 * everywhere they are shown; every action is audited as the session; the admin token replaces
 * the API token on the operator API.
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

const ADMIN = 'admin-token-0123456789abcdef';
const API = 'api-token-0123456789abcdef';
const P = 'ui-fake';
const HOSTILE = `<script>alert("x")</script> "><img src=x onerror=alert(1)> &amp;`;
const SECRET = 'ui-secret-value-7f3e9a1c5b';

interface Gw {
  running: Running;
  store: Store;
  driver: FakeDriver;
  close(): Promise<void>;
}

async function gateway(env: Record<string, string>): Promise<Gw> {
  const profilesDir = tempDir('profiles');
  const dataDir = tempDir('data');
  await writeProfiles(profilesDir, [manifest(P)]);
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir, ...env });
  const store = await openStore({ dataDir });
  await store.migrate();
  const driver = makeFakeDriver();
  // The fake driver keeps its own snapshots: the context's snapshot store (when it has one) is not used.
  const ctx = { config, logger: createLogger('silent'), store, driver, close: async () => undefined } as Omit<Context, 'snapshots'> as Context;
  const running = await startGatewayApp(ctx, { units: 'all' });
  return {
    running,
    store,
    driver,
    async close() {
      await running.stop();
      await driver.close();
      await store.close();
    },
  };
}

let gw: Gw;
let conversation = '';

async function send(text: string): Promise<void> {
  const event = localEvent(localMessageSchema.parse({ profile: P, text, conversation: 'plain' }), 'test');
  conversation = event.conversation;
  await gw.running.gateway.intake.accept(event);
  for await (const o of gw.running.gateway.watcher.watch(event.id)) void o;
}

const app = () => gw.running.app;
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function login(): Promise<{ cookie: string; csrf: string }> {
  const res = await app().request('/ui/login', { method: 'POST', headers: FORM, body: form({ token: ADMIN }) });
  expect(res.status).toBe(303);
  expect(res.headers.get('location')).toBe('/ui/agents');
  const set = res.headers.get('set-cookie')!;
  expect(set).toMatch(/^agentvm_ui=[A-Za-z0-9_-]{43};/);
  expect(set).toContain('HttpOnly');
  expect(set).toContain('SameSite=Strict');
  expect(set).toContain('Path=/ui');
  const cookie = set.split(';')[0]!;
  const page = await (await app().request('/ui/agents', { headers: { cookie } })).text();
  const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
  return { cookie, csrf };
}

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  gw = await gateway({ AGENTVM_ADMIN_TOKEN: ADMIN, AGENTVM_API_TOKEN: API, AGENTVM_SECRET_UI_KEY: SECRET });
  await send(`echo ${HOSTILE}`);
});
afterAll(async () => {
  await gw?.close();
});

describe('dashboard access', () => {
  it('is off without AGENTVM_ADMIN_TOKEN, and the API token alone then opens only the operator API', async () => {
    const off = await gateway({ AGENTVM_API_TOKEN: API });
    try {
      for (const path of ['/ui', '/ui/login', '/ui/agents']) {
        const res = await off.running.app.request(path);
        expect(res.status).toBe(404);
        expect(await res.json()).toEqual({ error: 'ui_disabled', message: expect.stringContaining('AGENTVM_ADMIN_TOKEN') });
      }
      const login = await off.running.app.request('/ui/login', { method: 'POST', headers: FORM, body: form({ token: API }) });
      expect(login.status).toBe(404);
      expect((await off.running.app.request('/v1/agents', { headers: { authorization: `Bearer ${API}` } })).status).toBe(200);
    } finally {
      await off.close();
    }
  });

  it('with an admin token, the operator API takes only that token', async () => {
    expect((await app().request('/v1/agents', { headers: { authorization: `Bearer ${API}` } })).status).toBe(401);
    expect((await app().request('/v1/agents', { headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(200);
    expect((await app().request('/v1/agents')).status).toBe(401);
  });

  it('refuses a wrong token, sends pages without a session to the login, and sets a strict session cookie on login', async () => {
    const wrong = await app().request('/ui/login', { method: 'POST', headers: FORM, body: form({ token: `${ADMIN}x` }) });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    expect(await wrong.text()).toContain('Wrong token.');
    const anon = await app().request('/ui/agents');
    expect(anon.status).toBe(303);
    expect(anon.headers.get('location')).toBe('/ui/login');
    const forged = await app().request('/ui/agents/ui-fake', { method: 'POST', headers: FORM, body: form({ op: 'sleep' }) });
    expect(forged.status).toBe(401);
    const bogus = await app().request('/ui/agents', { headers: { cookie: 'agentvm_ui=not-a-session' } });
    expect(bogus.status).toBe(303);
    const { cookie } = await login();
    const page = await app().request('/ui/agents', { headers: { cookie } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('cache-control')).toBe('no-store');
    const html = await page.text();
    expect(html).not.toContain(ADMIN);
    expect(html).not.toContain(API);
    expect(html).not.toContain('<script');
  });

  it('refuses a POST without the CSRF token, with a wrong one, or from another origin, and changes nothing', async () => {
    const { cookie, csrf } = await login();
    const before = (await gw.store.agents.get(P))!.state;
    const attempts: Array<[Record<string, string>, Record<string, string>]> = [
      [{}, { op: 'sleep' }],
      [{}, { op: 'sleep', csrf: `${csrf}x` }],
      [{ origin: 'https://evil.example' }, { op: 'sleep', csrf }],
      [{ referer: 'https://evil.example/page' }, { op: 'sleep', csrf }],
    ];
    for (const [headers, fields] of attempts) {
      const res = await app().request('/ui/agents/ui-fake', { method: 'POST', headers: { ...FORM, cookie, host: 'localhost', ...headers }, body: form(fields) });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ error: 'forbidden' });
    }
    expect((await gw.store.agents.get(P))!.state).toBe(before);
    expect((await gw.store.audit.tail(50)).filter((r) => r.action.startsWith('operator.'))).toEqual([]);
    // The same request with the token goes through, audited as this session (never its cookie).
    const ok = await app().request('/ui/agents/ui-fake', { method: 'POST', headers: { ...FORM, cookie, host: 'localhost', origin: 'http://localhost' }, body: form({ op: 'sleep', csrf }) });
    expect(ok.status).toBe(303);
    expect((await gw.store.agents.get(P))!.state).toBe('sleeping');
    const row = (await gw.store.audit.tail(50)).find((r) => r.action === 'operator.sleep')!;
    expect(row).toMatchObject({ profile: P, decision: 'ok', subject: P, data: { via: 'ui', by: expect.stringMatching(/^ui:[0-9a-f]{12}$/) } });
    expect(JSON.stringify(row)).not.toContain(cookie.split('=')[1]!);
    const after = await (await app().request('/ui/agents', { headers: { cookie } })).text();
    expect(after).toContain('ui-fake: sleep done (asleep)');
    // Logging out ends the session.
    expect((await app().request('/ui/logout', { method: 'POST', headers: { ...FORM, cookie }, body: form({ csrf }) })).status).toBe(303);
    expect((await app().request('/ui/agents', { headers: { cookie } })).status).toBe(303);
  });

  it('escapes hostile agent and platform strings on every page', async () => {
    const { cookie } = await login();
    await gw.store.gateway.insertEvent({ id: 'slack:hostile', platform: 'slack', profile: null, conversation: `slack:T1:C1:${HOSTILE}`, status: 'rejected', payload: {} });
    await gw.running.gateway.audit.record({ profile: P, action: 'egress.connect', decision: 'deny', subject: `${HOSTILE}:443`, reason: HOSTILE });
    await gw.store.pins.pinIfAbsent(P, `srv.${HOSTILE}`, 'a'.repeat(64), { name: HOSTILE, description: 'old' });
    await gw.store.pins.noteSeen(P, `srv.${HOSTILE}`, 'b'.repeat(64), { name: HOSTILE, description: HOSTILE });
    const pages = ['/ui/agents', '/ui/conversations', `/ui/conversations/view?id=${encodeURIComponent(conversation)}`, '/ui/pins', '/ui/audit', '/ui/egress', `/ui/audit?subject=${encodeURIComponent(HOSTILE)}`];
    for (const p of pages) {
      const res = await app().request(p, { headers: { cookie } });
      expect(res.status, p).toBe(200);
      const text = await res.text();
      expect(text, p).not.toContain('<script>alert');
      expect(text, p).not.toContain('<img src=x');
      expect(text, p).not.toMatch(/"><img/);
    }
    const view = await (await app().request(`/ui/conversations/view?id=${encodeURIComponent(conversation)}`, { headers: { cookie } })).text();
    expect(view).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;');
    const list = await (await app().request('/ui/conversations', { headers: { cookie } })).text();
    expect(list).toContain(`href="/ui/conversations/view?id=${encodeURIComponent(`slack:T1:C1:${HOSTILE}`).replace(/&/g, '&amp;').replace(/'/g, '&#39;')}"`);
    expect(list).toContain('slack:T1:C1:&lt;script&gt;');
    const pins = await (await app().request('/ui/pins', { headers: { cookie } })).text();
    expect(pins).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(pins).toMatch(/name="tool" value="srv\.&lt;script&gt;/);
  });
});

describe('secrets', () => {
  it('never shows a secret value the gateway knows, wherever it was written', async () => {
    const { cookie } = await login();
    await gw.store.gateway.addTranscript({ conversation, profile: P, eventId: 'ev-secret', kind: 'progress', text: `the key is ${SECRET}` });
    await gw.running.gateway.audit.record({ profile: P, action: 'egress.connect', decision: 'deny', subject: `${SECRET}.example:443`, reason: `token ${SECRET}` });
    await gw.store.pins.pinIfAbsent(P, 'srv.leaky', 'c'.repeat(64), { name: 'leaky', description: 'old' });
    await gw.store.pins.noteSeen(P, 'srv.leaky', 'd'.repeat(64), { name: 'leaky', description: `send ${SECRET}` });
    const seen: string[] = [];
    for (const p of ['/ui/agents', `/ui/conversations/view?id=${encodeURIComponent(conversation)}`, '/ui/pins', '/ui/audit', '/ui/egress']) {
      seen.push(await (await app().request(p, { headers: { cookie } })).text());
    }
    const auth = { authorization: `Bearer ${ADMIN}` };
    for (const p of [`/v1/conversations/${encodeURIComponent(conversation)}`, '/v1/pins', '/v1/audit', '/v1/egress']) {
      seen.push(await (await app().request(p, { headers: auth })).text());
    }
    for (const text of seen) expect(text).not.toContain(SECRET);
    expect(seen.join('\n')).toContain('[redacted:UI_KEY]');
  });
});

describe('operator API', () => {
  const auth = { authorization: `Bearer ${ADMIN}` };
  it('lists agents, conversations and a transcript with its turns', async () => {
    const agents = (await (await app().request('/v1/agents', { headers: auth })).json()) as { agents: Array<Record<string, unknown>> };
    expect(agents.agents).toHaveLength(1);
    expect(agents.agents[0]).toMatchObject({ id: P, name: `Test ${P}`, risk: 'L1', runtime: 'runsc', engineRuntime: 'fake', served: true, lastTurn: { status: 'delivered', conversation } });
    expect((agents.agents[0]!.wakes as unknown[]).length).toBeGreaterThanOrEqual(1);
    const list = (await (await app().request(`/v1/conversations?profile=${P}`, { headers: auth })).json()) as { conversations: Array<{ conversation: string; events: number }> };
    expect(list.conversations.find((c) => c.conversation === conversation)).toMatchObject({ events: 1 });
    const t = (await (await app().request(`/v1/conversations/${encodeURIComponent(conversation)}`, { headers: auth })).json()) as { items: Array<{ type: string; kind?: string; text?: string }> };
    expect(t.items.filter((i) => i.type === 'entry' && i.kind !== 'progress').map((i) => i.kind)).toEqual(['prompt', 'reply']);
    expect(t.items.find((i) => i.kind === 'reply')!.text).toBe(HOSTILE);
    expect((await app().request('/v1/conversations/nope', { headers: auth })).status).toBe(404);
  });

  it('filters the audit trail, lists egress rows and verifies the chain', async () => {
    const rows = (await (await app().request('/v1/audit?action=operator.*&limit=5', { headers: auth })).json()) as { rows: Array<{ action: string }> };
    expect(rows.rows.length).toBeGreaterThan(0);
    expect(rows.rows.every((r) => r.action.startsWith('operator.'))).toBe(true);
    const egress = (await (await app().request(`/v1/egress?profile=${P}&decision=deny`, { headers: auth })).json()) as { rows: Array<{ action: string; subject: string }> };
    expect(egress.rows.length).toBeGreaterThan(0);
    expect(new Set(egress.rows.map((r) => r.action))).toEqual(new Set(['egress.connect']));
    expect(await (await app().request('/v1/audit/verify', { headers: auth })).json()).toMatchObject({ ok: true });
    const wake = await app().request(`/v1/agents/${P}/wake`, { method: 'POST', headers: auth });
    expect(await wake.json()).toEqual({ id: P, action: 'wake', detail: 'awake' });
    const snap = await app().request(`/v1/agents/${P}/snapshot`, { method: 'POST', headers: auth });
    expect(await snap.json()).toEqual({ id: P, action: 'snapshot', detail: expect.stringMatching(/^generation \d+, \d+ bytes$/) });
    expect((await gw.store.audit.tail(5)).find((r) => r.action === 'operator.snapshot')).toMatchObject({ decision: 'ok', data: { via: 'api', by: 'local:api', generation: expect.any(Number) } });
    expect((await app().request(`/v1/agents/${P}/explode`, { method: 'POST', headers: auth })).status).toBe(404);
    expect((await app().request('/v1/agents/nobody/wake', { method: 'POST', headers: auth })).status).toBe(404);
  });
});
