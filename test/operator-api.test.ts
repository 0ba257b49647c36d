/**
 * The operator API (`/v1/approvals`, `/v1/pins`) as a caller sees it, in-process (`app.request`)
 * on both backends: closed without a configured token, 401 without the right one, every error in
 * the one `{error, message}` shape; approvals answered as the operator; pins listed with their
 * state and re-pinned by tool names that hold '/' and '.'; oversized bodies refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApprovalBroker, type ApprovalBroker, type PendingApproval } from '../src/governance/approvals.js';
import { createAuditLog, type AuditLog } from '../src/governance/audit.js';
import { createLogger } from '../src/log.js';
import { createOperatorApi } from '../src/operator/index.js';
import type { Store } from '../src/store/index.js';
import { storeBackends } from './helpers/stores.js';

const TOKEN = 'operator-token-0123456789';
const logger = createLogger('silent');
const auth = { authorization: `Bearer ${TOKEN}` };

describe.each(storeBackends('operator'))('operator API ($kind)', (backend) => {
  let store: Store;
  let close: () => Promise<void>;
  let audit: AuditLog;
  let broker: ApprovalBroker;
  let api: ReturnType<typeof createOperatorApi>;
  const seen: PendingApproval[] = [];

  beforeAll(async () => {
    ({ store, close } = await backend.open());
    audit = createAuditLog(store.audit);
    broker = createApprovalBroker({ store: store.approvals, timeoutMs: 30_000, pollMs: 20, onRequest: (r) => seen.push(r) });
    api = createOperatorApi({ token: TOKEN, approvals: broker, pins: store.pins, audit, logger });
  });
  afterAll(async () => {
    await broker?.close();
    await close?.();
  });

  it('is closed without a configured token, and refuses a wrong one', async () => {
    const closed = createOperatorApi({ token: undefined, approvals: broker, pins: store.pins, audit, logger });
    for (const path of ['/v1/approvals', '/v1/pins']) {
      const res = await closed.request(path, { headers: auth });
      expect(res.status).toBe(403);
      expect(await res.json()).toEqual({ error: 'api_disabled', message: expect.stringContaining('AGENTVM_API_TOKEN') });
    }
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: TOKEN }] as Array<Record<string, string>>) {
      const res = await api.request('/v1/pins', { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(await res.json()).toEqual({ error: 'unauthorized', message: 'missing or wrong bearer token' });
    }
    const post = await api.request('/v1/pins/p/srv.x/repin', { method: 'POST' });
    expect(post.status).toBe(401);
  });

  it('lists and answers approvals as the operator', async () => {
    const decided = broker.request({ profile: 'p', sessionKey: 's', tool: 'srv.write', argsHash: 'h' });
    await new Promise((r) => setTimeout(r, 50));
    const id = seen[0]!.id;
    const list = await api.request('/v1/approvals', { headers: auth });
    expect(((await list.json()) as { pending: Array<{ id: string }> }).pending.map((p) => p.id)).toEqual([id]);
    const bad = await api.request(`/v1/approvals/${id}`, { method: 'POST', headers: auth, body: '{"decision":"yes"}' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'bad_request' });
    const big = await api.request(`/v1/approvals/${id}`, { method: 'POST', headers: auth, body: JSON.stringify({ decision: 'approved', pad: 'x'.repeat(10_000) }) });
    expect(big.status).toBe(413);
    const ok = await api.request(`/v1/approvals/${id}`, { method: 'POST', headers: auth, body: '{"decision":"approved"}' });
    expect(await ok.json()).toEqual({ id, decision: 'approved' });
    expect(await decided).toEqual({ decision: 'approved', by: 'local:api' });
    const again = await api.request(`/v1/approvals/${id}`, { method: 'POST', headers: auth, body: '{"decision":"denied"}' });
    expect(again.status).toBe(404);
    expect(await again.json()).toMatchObject({ error: 'not_found' });
  });

  it('lists pins and re-pins a quarantined one, whatever its name holds', async () => {
    const tool = 'srv.dir/sub.op';
    await store.pins.pinIfAbsent('p1', tool, 'a'.repeat(64), { name: 'dir/sub.op', description: 'old', inputSchema: null });
    await store.pins.pinIfAbsent('p1', 'srv.same', 'c'.repeat(64), null);
    await store.pins.pinIfAbsent('p2', 'srv.other', 'd'.repeat(64), null);
    await store.pins.noteSeen('p1', tool, 'b'.repeat(64), { name: 'dir/sub.op', description: 'new', inputSchema: null });

    const all = (await (await api.request('/v1/pins', { headers: auth })).json()) as { pins: Array<{ profile: string; tool: string; state: string; diff: string[] }> };
    expect(all.pins.map((p) => `${p.profile}:${p.tool}:${p.state}`)).toEqual(['p1:srv.dir/sub.op:quarantined', 'p1:srv.same:pinned', 'p2:srv.other:pinned']);
    expect(all.pins[0]!.diff).toEqual(expect.arrayContaining(['-   "description": "old",', '+   "description": "new",']));
    const one = (await (await api.request('/v1/pins?profile=p2', { headers: auth })).json()) as { pins: unknown[] };
    expect(one.pins).toHaveLength(1);

    const bad = await api.request(`/v1/pins/p1/${tool}/repin`, { method: 'POST', headers: auth, body: '{"expect":"nope"}' });
    expect(bad.status).toBe(400);
    const stale = await api.request(`/v1/pins/p1/${tool}/repin`, { method: 'POST', headers: auth, body: JSON.stringify({ expect: 'e'.repeat(64) }) });
    expect(stale.status).toBe(409);
    expect(await stale.json()).toEqual({ error: 'pin_not_quarantined', message: expect.stringContaining('changed again') });
    const res = await api.request(`/v1/pins/p1/${encodeURIComponent(tool)}/repin`, { method: 'POST', headers: auth });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ pin: { profile: 'p1', tool, state: 'pinned', hash: 'b'.repeat(64), pinnedBy: 'local:api', diff: [] } });
    const done = await api.request(`/v1/pins/p1/${tool}/repin`, { method: 'POST', headers: auth });
    expect(done.status).toBe(409);
    const missing = await api.request('/v1/pins/p9/srv.x/repin', { method: 'POST', headers: auth });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'pin_not_found' });
    const row = (await audit.tail(5)).filter((r) => r.action === 'tool.pin').at(-1);
    expect(row).toMatchObject({ profile: 'p1', subject: tool, reason: 're-pinned by local:api', data: { from: 'a'.repeat(64), definitionHash: 'b'.repeat(64) } });
  });
});
