/**
 * Every fault ends in exactly one answer (issue 11) and nothing crosses between conversations
 * (issue 10), through the real gateway with the fake sandbox driver.
 */
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { profileId, manifest, replyText } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';
import { until } from '../helpers/wait.js';

const open: FakeGateway[] = [];
afterEach(async () => {
  for (const g of open.splice(0)) await g.close().catch(() => undefined);
});

async function gateway(o: Parameters<typeof startFakeGateway>[0]) {
  const g = await startFakeGateway(o);
  open.push(g);
  return g;
}

describe('per-conversation files', () => {
  it("a file written for one conversation is uploaded only into that conversation, even while another conversation's turn ends first", async () => {
    const id = profileId('conv');
    const g = await gateway({ manifests: [manifest(id)] });
    // The repro of issue 10.1: A writes a file, B (another person) ends its turn while A still runs.
    const a = g.post({ profile: id, text: 'sh sleep 0.6; printf A1 > outbox/fromA.txt; sleep 1; echo A-done', conversation: 'channel' });
    await new Promise((r) => setTimeout(r, 100));
    const b = await g.send({ profile: id, text: 'slow 1200', conversation: 'dm' });
    const aOut = await g.outcome((await a).eventId);
    expect(replyText(b.outcome)).toBe('slept 1200');
    expect(b.outcome.kind === 'reply' && b.outcome.files).toEqual([]);
    expect(aOut.kind === 'reply' && aOut.files.map((f) => [f.name, f.data.toString()])).toEqual([['fromA.txt', 'A1']]);
    // The transcripts agree.
    const tb = await g.store.gateway.transcript(b.conversation);
    expect(tb.filter((t) => t.kind === 'file')).toEqual([]);
  });

  it('names the conversation directory, its outbox and inbox in the first prompt of a session', async () => {
    const id = profileId('ctx');
    const g = await gateway({ manifests: [manifest(id)] });
    const r = await g.send({ profile: id, text: 'sh pwd; ls -d outbox inbox', conversation: 'where' });
    expect(replyText(r.outcome)).toMatch(/exit 0\n.*\/conversations\/local-[^\n]*-where-[0-9a-f]{16}\ninbox\noutbox\n/);
    const first = replyText((await g.send({ profile: id, text: 'prompt', conversation: 'ctx' })).outcome);
    expect(first).toMatch(/working directory for this conversation is \/workspace\/conversations\/local-[^\n]*-ctx-[0-9a-f]{16}\./);
    expect(first).toMatch(/write them to \/workspace\/conversations\/[^\n]*\/outbox\//);
    expect(first).toMatch(/arrive in \/workspace\/conversations\/[^\n]*\/inbox\//);
    const later = replyText((await g.send({ profile: id, text: 'prompt', conversation: 'ctx' })).outcome);
    expect(later).not.toMatch(/Context from agent-vm/);
    expect(later).toMatch(/Files for the person go in \/workspace\/conversations\/[^\n]*\/outbox\//);
  });
});

describe('a stuck agent', () => {
  it("one turn's ignored cancel abandons only its own session: another conversation mid-turn still gets its answer, and the next turn works", async () => {
    const id = profileId('hang');
    const g = await gateway({ manifests: [manifest(id, { turn: { timeoutSeconds: 1 } })], policy: { cancelGraceMs: 300 } });
    const other = g.post({ profile: id, text: 'slow 900', conversation: 'other' });
    const stuck = await g.send({ profile: id, text: 'hang', conversation: 'stuck' });
    expect(replyText(stuck.outcome)).toMatch(/did not finish within 1 s/);
    const otherOut = await g.outcome((await other).eventId);
    expect(replyText(otherOut)).toBe('slept 900');
    // The agent process restarts before the next turn: the stuck prompt is gone.
    const after = await g.send({ profile: id, text: 'echo back', conversation: 'stuck' });
    expect(replyText(after.outcome)).toBe('back');
    const ev = await g.store.gateway.getEvent((await other).eventId);
    expect(ev?.status).toBe('delivered');
  });
});

describe('graceful stop', () => {
  it('waits for running turns up to its grace, then leaves the rest open for recovery without telling anyone anything', async () => {
    const id = profileId('stop');
    const first = await gateway({ manifests: [manifest(id)], unit: { stopGraceMs: 300 } });
    const quick = await first.post({ profile: id, text: 'slow 100', conversation: 'q' });
    const slow = await first.post({ profile: id, text: 'slow 3000', conversation: 's' });
    await new Promise((r) => setTimeout(r, 400));
    await first.stop();
    expect((await first.store.gateway.getEvent(quick.eventId))?.status).toBe('delivered');
    const left = await first.store.gateway.getEvent(slow.eventId);
    expect(left?.status).toBe('queued');
    expect(left?.attempts).toBe(0); // our own hang-up is not an attempt
    expect((await first.store.gateway.eventTranscript(slow.eventId)).filter((t) => t.kind === 'notice')).toEqual([]);

    open.splice(open.indexOf(first), 1);
    const second = await gateway({ manifests: [], reuse: { store: first.store, driver: first.driver, dataDir: first.dataDir, profilesDir: first.profilesDir } });
    expect(replyText(await second.outcome(slow.eventId))).toBe('slept 3000');
    expect((await second.store.gateway.eventTranscript(slow.eventId)).filter((t) => t.kind === 'reply')).toHaveLength(1);
  });
});

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
