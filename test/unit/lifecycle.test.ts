/**
 * Shut-down hygiene (issue 13 §3): what a process woke it puts to sleep when it stops (snapshot,
 * stop) unless told to keep it awake; a gateway that finds an awake sandbox nobody serves applies
 * the idle rules to it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';
import { until } from '../helpers/wait.js';

const open: FakeGateway[] = [];
afterEach(async () => {
  for (const g of open.splice(0)) await g.close().catch(() => undefined);
});

describe('shut-down hygiene', () => {
  it('a graceful stop snapshots and stops the agents it woke', async () => {
    const id = profileId('hyg');
    const g = await startFakeGateway({ manifests: [manifest(id)] });
    open.push(g);
    expect(replyText((await g.send({ profile: id, text: 'remember colour teal', conversation: 'h' })).outcome)).toBe('remembered colour');
    expect((await g.driver.status(id)).state).toBe('running');
    await g.stop();
    expect((await g.driver.status(id)).state).toBe('stopped');
    const sleeps = (await g.running.gateway.audit.tail(50)).filter((r) => r.profile === id && r.action === 'sleep');
    expect(sleeps.map((r) => r.reason)).toEqual(['shutdown']);
  });

  it('with keepAwake it leaves them running; the next gateway applies the idle rules to them', async () => {
    const id = profileId('keep');
    const first = await startFakeGateway({ manifests: [manifest(id, { idle: { sleepAfterSeconds: 1 } })], unit: { keepAwake: true } });
    open.push(first);
    await first.send({ profile: id, text: 'echo hi', conversation: 'k' });
    await first.stop();
    expect((await first.driver.status(id)).state).toBe('running');
    open.splice(open.indexOf(first), 1);
    const second = await startFakeGateway({ manifests: [], reuse: { store: first.store, driver: first.driver, dataDir: first.dataDir, profilesDir: first.profilesDir } });
    open.push(second);
    await until('the unserved sandbox to be put to sleep', async () => ((await second.driver.status(id)).state === 'stopped' ? true : undefined), { timeoutMs: 10_000 });
  });
});

describe('idle tiers', () => {
  it('pauses an idle agent, and a message unpauses it on the same connection; later it sleeps', async () => {
    const id = profileId('tiers');
    const g = await startFakeGateway({ manifests: [manifest(id, { idle: { pauseAfterSeconds: 1, sleepAfterSeconds: 4 } })] });
    open.push(g);
    expect(replyText((await g.send({ profile: id, text: 'echo one', conversation: 't' })).outcome)).toBe('one');
    await until('the agent to be paused', async () => ((await g.driver.status(id)).state === 'paused' ? true : undefined), { timeoutMs: 10_000 });
    expect(replyText((await g.send({ profile: id, text: 'echo two', conversation: 't' })).outcome)).toBe('two');
    const wakes = (await g.running.gateway.audit.tail(100)).filter((r) => r.profile === id && r.action === 'wake').map((r) => (r.data as { action: string; tier?: string }).tier ?? (r.data as { action: string }).action);
    expect(wakes).toEqual(['created', 'paused']);
    await until('the agent to sleep', async () => ((await g.driver.status(id)).state === 'stopped' ? true : undefined), { timeoutMs: 15_000 });
  });
});
