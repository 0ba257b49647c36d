/**
 * Every fault ends in exactly one answer (issue 11), continued: limits that are settings, event
 * status, the profile lease, continuity; through the real gateway with the fake sandbox driver.
 * (Split from turn-faults.test.ts so the unit project runs them in parallel.)
 */
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { profileId, manifest, replyText } from '../helpers/gateway.js';
import { fakeGatewaysClosedAfterEach } from '../helpers/unit-gateway.js';
import { until } from '../helpers/wait.js';

const gateways = fakeGatewaysClosedAfterEach();
const gateway = gateways.start;

describe('limits that are settings', () => {
  it('gives up after AGENTVM_MAX_ATTEMPTS with a note that says why and what the limit is', async () => {
    const id = profileId('give');
    const g = await gateway({ manifests: [manifest(id)], env: { AGENTVM_MAX_ATTEMPTS: '2' } });
    const ev = await g.post({ profile: id, text: 'echo never', conversation: 'x' });
    // Two attempts already spent elsewhere (e.g. a unit killed twice mid-turn).
    await g.running.gateway.units.get(id)!.idle();
    const row = await g.store.gateway.getEvent(ev.eventId);
    expect(row?.status).toBe('delivered');

    const ev2 = { id: 'local:spent', platform: 'local', profile: id, conversation: 'local:x:spent', status: 'queued' as const, payload: { id: 'local:spent', platform: 'local', address: { platform: 'local', profile: id, channel: 'test' }, conversation: 'local:x:spent', user: { id: 'u' }, text: 'echo late', receivedAt: new Date().toISOString() } };
    await g.store.gateway.insertEvent(ev2);
    await g.store.gateway.startAttempt('local:spent');
    await g.store.gateway.setStatus('local:spent', 'queued', 'the agent crashed');
    await g.store.gateway.startAttempt('local:spent');
    await g.store.gateway.setStatus('local:spent', 'queued', 'the agent crashed');
    g.running.gateway.units.get(id)!.kick('local:x:spent', 'local:spent');
    const out = await g.outcome('local:spent');
    expect(replyText(out)).toMatch(/tried 2 times \(the limit, AGENTVM_MAX_ATTEMPTS, is 2\)\. The last attempt failed: the agent crashed/);
  });

  it('caps reply text: a 3 MB answer is sent as 1 MiB of text with a note, and whole as a file', async () => {
    const id = profileId('cap');
    const g = await gateway({ manifests: [manifest(id)] });
    const r = await g.send({ profile: id, text: "sh head -c 3000000 /dev/zero | tr '\\0' a", conversation: 'big' });
    expect(r.outcome.kind).toBe('reply');
    if (r.outcome.kind !== 'reply') return;
    expect(Buffer.byteLength(r.outcome.text)).toBeLessThan(1024 * 1024 + 1000);
    expect(r.outcome.text).toMatch(/the rest is in reply-full\.md, which holds all of it/);
    const full = r.outcome.files.find((f) => f.name === 'reply-full.md');
    expect(full?.data.length).toBe(3_000_000 + 'exit 0\n'.length);
  });
});

describe('event status moves forward only', () => {
  it('refuses to reopen a delivered event or undo a reply', async () => {
    const id = profileId('fwd');
    const g = await gateway({ manifests: [manifest(id)] });
    const r = await g.send({ profile: id, text: 'echo done', conversation: 'f' });
    expect(await g.store.gateway.setStatus(r.eventId, 'queued')).toBe(false);
    expect(await g.store.gateway.setStatus(r.eventId, 'running')).toBe(false);
    expect(await g.store.gateway.setStatus(r.eventId, 'failed', 'late')).toBe(false);
    expect((await g.store.gateway.getEvent(r.eventId))?.status).toBe('delivered');
  });
});

describe('the profile lease', () => {
  it('a unit that loses its lease stops taking turns at once, and serves again once it has it back', async () => {
    const id = profileId('lease');
    const g = await gateway({ manifests: [manifest(id)], unit: { leaseTtlMs: 1500 } });
    const unit = g.running.gateway.units.get(id)!;
    expect(replyText((await g.send({ profile: id, text: 'echo first', conversation: 'l' })).outcome)).toBe('first');
    const key = `unit:${id}`;
    const holder = (await g.store.leases.get(key))!.holder;
    // Another live holder takes it (as after a lost connection and an expiry; on the embedded
    // database only this process can hold it): for 2 s, then it lapses.
    const thief = `${os.hostname()}:${process.pid}:thief`;
    expect(await g.store.leases.acquire(key, thief, 2000, [holder])).toBeDefined();
    await until('the unit to notice', () => (unit.serving ? undefined : true), { timeoutMs: 5000 });
    const late = await g.post({ profile: id, text: 'echo second', conversation: 'l' });
    await new Promise((r) => setTimeout(r, 500));
    expect((await g.store.gateway.getEvent(late.eventId))?.status).toBe('queued');
    expect(replyText(await g.outcome(late.eventId))).toBe('second');
    expect(unit.serving).toBe(true);
  });

  it('two stores in one process do not share profile locks (each database has its own)', async () => {
    const id = profileId('two');
    const a = await gateway({ manifests: [manifest(id)] });
    const b = await gateway({ manifests: [manifest(id)] });
    expect(a.running.gateway.units.get(id)!.serving).toBe(true);
    expect(b.running.gateway.units.get(id)!.serving).toBe(true);
  });
});

describe('continuity without session/load', () => {
  it("gives a new session the conversation so far when the agent cannot continue its old one", async () => {
    const id = profileId('noload');
    const g = await gateway({ manifests: [manifest(id, { agent: { command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'], env: { REFERENCE_AGENT_LOAD: '0' } } })] });
    expect(replyText((await g.send({ profile: id, text: 'echo the code is 4242', conversation: 'c' })).outcome)).toBe('the code is 4242');
    await g.send({ profile: id, text: 'crash', conversation: 'c' });
    const shown = replyText((await g.send({ profile: id, text: 'prompt', conversation: 'c' })).outcome);
    expect(shown).toMatch(/Earlier in this conversation/);
    expect(shown).toMatch(/Person: echo the code is 4242\nYou: the code is 4242/);
  });
});
