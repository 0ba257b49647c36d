/**
 * Shut-down hygiene (issue 13 §3): what a process woke it puts to sleep when it stops (snapshot,
 * stop) unless told to keep it awake; a gateway that finds an awake sandbox nobody serves applies
 * the idle rules to it.
 */
import { describe, expect, it, vi } from 'vitest';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { fakeGatewaysClosedAfterEach } from '../helpers/unit-gateway.js';
import { until } from '../helpers/wait.js';

const gateways = fakeGatewaysClosedAfterEach();

describe('shut-down hygiene', () => {
  it('a graceful stop snapshots and stops the agents it woke', async () => {
    const id = profileId('hyg');
    const g = await gateways.start({ manifests: [manifest(id)] });
    expect(replyText((await g.send({ profile: id, text: 'remember colour teal', conversation: 'h' })).outcome)).toBe('remembered colour');
    expect((await g.driver.status(id)).state).toBe('running');
    await g.stop();
    expect((await g.driver.status(id)).state).toBe('stopped');
    const sleeps = (await g.running.gateway.audit.tail(50)).filter((r) => r.profile === id && r.action === 'sleep');
    expect(sleeps.map((r) => r.reason)).toEqual(['shutdown']);
  });

  it('with keepAwake it leaves them running; the next gateway applies the idle rules to them', async () => {
    const id = profileId('keep');
    const first = await gateways.start({ manifests: [manifest(id, { idle: { sleepAfterSeconds: 1 } })], unit: { keepAwake: true } });
    await first.send({ profile: id, text: 'echo hi', conversation: 'k' });
    await first.stop();
    expect((await first.driver.status(id)).state).toBe('running');
    gateways.release(first);
    const second = await gateways.start({ manifests: [], reuse: { store: first.store, driver: first.driver, dataDir: first.dataDir, profilesDir: first.profilesDir } });
    await until('the unserved sandbox to be put to sleep', async () => ((await second.driver.status(id)).state === 'stopped' ? true : undefined), { timeoutMs: 10_000 });
  });
});

describe('warm pool', () => {
  it('prepares agents without a sandbox ahead of their first message; a first message is a hit, and the pool moves on', async () => {
    const [a, b, c] = [profileId('pool-a'), profileId('pool-b'), profileId('pool-c')];
    const g = await gateways.start({ manifests: [manifest(a), manifest(b), manifest(c)], env: { AGENTVM_WARM_POOL: '1' } });
    const state = async () => Promise.all([a, b, c].map(async (id) => (await g.driver.status(id)).state));
    await until('one agent prepared', async () => ((await state()).filter((s) => s === 'running').length === 1 ? true : undefined), { timeoutMs: 10_000 });
    const first = [a, b, c][(await state()).indexOf('running')]!;
    await until('its connection initialized ahead', async () => ((await g.running.gateway.audit.tail(50)).some((r) => r.action === 'pool.prepare' && r.profile === first) ? true : undefined), { timeoutMs: 10_000 });
    // A hit takes the connection the pool attached and initialized: no attach of its own.
    const attach = vi.spyOn(g.driver, 'attach');
    expect(replyText((await g.send({ profile: first, text: 'echo warm', conversation: 'p' })).outcome)).toBe('warm');
    expect(attach.mock.calls.filter(([id]) => id === first)).toHaveLength(0);
    attach.mockRestore();
    // The pool prepares the next one as each is taken.
    for (const id of [a, b, c]) {
      if (id === first) continue;
      await until(`${id} prepared`, async () => ((await g.driver.status(id)).state === 'running' ? true : undefined), { timeoutMs: 10_000 });
      await g.send({ profile: id, text: 'echo hi', conversation: 'p' });
    }
    const audit = await g.running.gateway.audit.tail(300);
    expect(audit.filter((r) => r.action === 'wake').map((r) => (r.data as { pool?: string }).pool)).toEqual(['hit', 'hit', 'hit']);
    expect(audit.filter((r) => r.action === 'pool.prepare').map((r) => (r.data as { initialized?: boolean }).initialized)).toEqual([true, true, true]);
  });

  it('records a miss when a first wake has to create the sandbox cold', async () => {
    const id = profileId('pool-miss');
    const g = await gateways.start({ manifests: [manifest(id)], env: { AGENTVM_WARM_POOL: '1' } });
    await until('prepared', async () => ((await g.driver.status(id)).state === 'running' ? true : undefined), { timeoutMs: 10_000 });
    await g.driver.destroy(id, { finalSnapshot: false }); // the prepared sandbox is lost behind the pool's back
    expect(replyText((await g.send({ profile: id, text: 'echo cold', conversation: 'm' })).outcome)).toBe('cold');
    const wakes = (await g.running.gateway.audit.tail(100)).filter((r) => r.action === 'wake').map((r) => (r.data as { pool?: string }).pool);
    expect(wakes).toEqual(['miss']);
  });
});
