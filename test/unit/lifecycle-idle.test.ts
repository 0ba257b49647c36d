/**
 * Idle tiers (issue 13 §3): an idle agent is paused, then snapshotted and stopped; a message that
 * arrives while the idle sleep runs waits for it and is answered from a fresh wake. (Split from
 * lifecycle.test.ts so the unit project runs them in parallel.)
 */
import { describe, expect, it } from 'vitest';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { fakeGatewaysClosedAfterEach } from '../helpers/unit-gateway.js';
import { until } from '../helpers/wait.js';

const gateways = fakeGatewaysClosedAfterEach();

describe('idle tiers', () => {
  it('pauses an idle agent, and a message unpauses it on the same connection; later it sleeps', async () => {
    const id = profileId('tiers');
    const g = await gateways.start({ manifests: [manifest(id, { idle: { pauseAfterSeconds: 1, sleepAfterSeconds: 4 } })] });
    expect(replyText((await g.send({ profile: id, text: 'echo one', conversation: 't' })).outcome)).toBe('one');
    await until('the agent to be paused', async () => ((await g.driver.status(id)).state === 'paused' ? true : undefined), { timeoutMs: 10_000 });
    expect(replyText((await g.send({ profile: id, text: 'echo two', conversation: 't' })).outcome)).toBe('two');
    const wakes = (await g.running.gateway.audit.tail(100)).filter((r) => r.profile === id && r.action === 'wake').map((r) => (r.data as { action: string; tier?: string }).tier ?? (r.data as { action: string }).action);
    expect(wakes).toEqual(['created', 'paused']);
    await until('the agent to sleep', async () => ((await g.driver.status(id)).state === 'stopped' ? true : undefined), { timeoutMs: 15_000 });
  });
});

describe('idle sleep against a message arriving', () => {
  it('a message that comes in while the idle sleep snapshots waits for it and is answered from a fresh wake', async () => {
    const id = profileId('race');
    const g = await gateways.start({ manifests: [manifest(id, { idle: { sleepAfterSeconds: 1 } })] });
    expect(replyText((await g.send({ profile: id, text: 'echo one', conversation: 'r' })).outcome)).toBe('one');
    // A slow snapshot holds the idle sleep open long enough for a message to land in the middle of it.
    const snapshot = g.driver.snapshot.bind(g.driver);
    let sleeping: (() => void) | undefined;
    const entered = new Promise<void>((r) => (sleeping = r));
    g.driver.snapshot = async (...args) => {
      sleeping?.();
      await new Promise((r) => setTimeout(r, 1500));
      return snapshot(...args);
    };
    await entered;
    expect(replyText((await g.send({ profile: id, text: 'echo two', conversation: 'r' })).outcome)).toBe('two');
    const audit = (await g.running.gateway.audit.tail(100)).filter((r) => r.profile === id);
    expect(audit.filter((r) => r.action === 'wake').map((r) => (r.data as { action: string }).action)).toEqual(['created', 'started']);
  });
});
