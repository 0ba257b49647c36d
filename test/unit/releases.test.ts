/**
 * Releases through the operator API on the fake driver (gateway logic in seconds): plan, apply,
 * the unit's turns moving to the new slot, rollback to the kept slot, status, refusals.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifest, profileId, replyText, writeProfiles } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';

const TOKEN = 'release-admin-token-0123456789';
const id = profileId('relapi');
let g: FakeGateway & { profilesDir: string };

const api = async (method: 'GET' | 'POST', path: string, body?: unknown, token = TOKEN) => {
  const res = await g.running.app.request(path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
};

beforeAll(async () => {
  g = await startFakeGateway({ manifests: [manifest(id, { image: 'img:1' })], env: { AGENTVM_ADMIN_TOKEN: TOKEN } });
});
afterAll(async () => g?.close());

describe('releases: operator API and slot routing (fake driver)', () => {
  it('refuses without the token and refuses a malformed body', async () => {
    expect((await api('GET', '/v1/releases', undefined, 'wrong-token-wrong-token')).status).toBe(401);
    expect((await api('POST', '/v1/releases/plan', { profiles: ['../x'] })).status).toBe(400);
    expect((await api('POST', '/v1/releases/plan', { profiles: ['nope'] })).json.error).toBe('profile_unknown');
  });

  it('plans, applies, swaps the next turn to the new slot, rolls back to the kept one', async () => {
    expect(replyText((await g.send({ profile: id, text: 'echo one' })).outcome)).toBe('one');
    const plan = await api('POST', '/v1/releases/plan', { profiles: [id] });
    expect(plan.json.pending).toBe(true);
    const first = await api('POST', '/v1/releases/apply', { profiles: [id], why: 'first' });
    expect(first.json.results[0]).toMatchObject({ outcome: 'swapped', slot: 'b' });
    expect(replyText((await g.send({ profile: id, text: 'echo two' })).outcome)).toBe('two');
    expect((await g.driver.slot('b').status(id)).state).toBe('running');

    await writeProfiles(g.profilesDir, [manifest(id, { image: 'img:2' })]);
    const second = await api('POST', '/v1/releases/apply', { profiles: [id] });
    expect(second.json.results[0]).toMatchObject({ outcome: 'swapped', slot: 'a' });
    expect(replyText((await g.send({ profile: id, text: 'echo three' })).outcome)).toBe('three');
    const a = await g.driver.slot('a').status(id);
    expect(a.releaseLabels?.['agent-vm.release']).toBe(second.json.results[0].release);

    const back = await api('POST', `/v1/releases/${id}/rollback`, { why: 'test' });
    expect(back.json).toMatchObject({ how: 'swap', from: second.json.results[0].release, to: first.json.results[0].release });
    expect(replyText((await g.send({ profile: id, text: 'echo four' })).outcome)).toBe('four');
    expect((await g.driver.slot('b').status(id)).releaseLabels?.['agent-vm.release']).toBe(first.json.results[0].release);

    const list = await api('GET', `/v1/releases?profile=${id}`);
    expect(list.json.releases.map((r: { status: string }) => r.status)).toEqual(['rolled_back', 'active']);
    const status = await api('GET', '/v1/releases/status');
    expect(status.json.agents.find((x: { agent: string }) => x.agent === id)).toMatchObject({ slot: 'b', drift: [] });
    // The manifest still names img:2: pending, not drift.
    expect(status.json.agents.find((x: { agent: string }) => x.agent === id).pending.length).toBeGreaterThan(0);
  });

  it('a rollback with nothing recorded before is refused', async () => {
    const other = await api('POST', '/v1/releases/nobody/rollback', {});
    expect(other.status).toBe(404);
  });
});
