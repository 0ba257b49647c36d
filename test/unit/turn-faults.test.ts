/**
 * Every fault ends in exactly one answer (issue 11) and nothing crosses between conversations
 * (issue 10), through the real gateway with the fake sandbox driver.
 */
import { describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../../src/adapters/local/index.js';
import { profileId, manifest, replyText } from '../helpers/gateway.js';
import { fakeGatewaysClosedAfterEach } from '../helpers/unit-gateway.js';

const gateways = fakeGatewaysClosedAfterEach();
const gateway = gateways.start;

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
    // Stop while the slow turn runs, once it has (a loaded machine can take a while to start it).
    for (let waited = 0; (await first.store.gateway.getEvent(slow.eventId))?.status !== 'running'; waited += 20) {
      if (waited > 10_000) throw new Error('the slow turn never started');
      await new Promise((r) => setTimeout(r, 20));
    }
    await first.outcome(quick.eventId);
    await first.stop();
    expect((await first.store.gateway.getEvent(quick.eventId))?.status).toBe('delivered');
    const left = await first.store.gateway.getEvent(slow.eventId);
    expect(left?.status).toBe('queued');
    expect(left?.attempts).toBe(0); // our own hang-up is not an attempt
    expect((await first.store.gateway.eventTranscript(slow.eventId)).filter((t) => t.kind === 'notice')).toEqual([]);

    gateways.release(first);
    const second = await gateway({ manifests: [], reuse: { store: first.store, driver: first.driver, dataDir: first.dataDir, profilesDir: first.profilesDir } });
    expect(replyText(await second.outcome(slow.eventId))).toBe('slept 3000');
    expect((await second.store.gateway.eventTranscript(slow.eventId)).filter((t) => t.kind === 'reply')).toHaveLength(1);
  });

  it('a turn still waking its agent when the grace ends does not start after the hang-up: it stays open, untried, for the next unit', async () => {
    const id = profileId('stopwake');
    const first = await gateway({ manifests: [manifest(id)], unit: { stopGraceMs: 200 } });
    // The agent takes 1.5 s to wake: the stop's grace ends while the turn is still waiting for it.
    const ensure = first.driver.ensure.bind(first.driver);
    first.driver.ensure = async (spec) => {
      await new Promise((r) => setTimeout(r, 1500));
      return ensure(spec);
    };
    const waking = await first.post({ profile: id, text: 'echo late', conversation: 'w' });
    await new Promise((r) => setTimeout(r, 100));
    await first.stop();
    const left = await first.store.gateway.getEvent(waking.eventId);
    expect(left?.status).toBe('queued');
    expect(left?.attempts).toBe(0);
    expect((await first.store.gateway.eventTranscript(waking.eventId)).filter((t) => t.kind === 'reply' || t.kind === 'notice')).toEqual([]);

    first.driver.ensure = ensure;
    gateways.release(first);
    const second = await gateway({ manifests: [], reuse: { store: first.store, driver: first.driver, dataDir: first.dataDir, profilesDir: first.profilesDir } });
    expect(replyText(await second.outcome(waking.eventId))).toBe('late');
    expect((await second.store.gateway.eventTranscript(waking.eventId)).filter((t) => t.kind === 'reply')).toHaveLength(1);
  });
});

describe('lost wake-ups', () => {
  it('an event stored but never queued (the job lost: a Redis restarted empty, a front door that died) is answered once, by the sweep', async () => {
    const id = profileId('lost');
    const g = await gateway({ manifests: [manifest(id)], unit: { sweepMs: 300 } });
    // Stored as the intake stores it, with no wake-up job.
    const event = localEvent(localMessageSchema.parse({ profile: id, text: 'echo found', conversation: 'lost' }), 'test');
    await g.store.gateway.insertEvents([{ id: event.id, platform: 'local', profile: id, conversation: event.conversation, status: 'queued', payload: event }]);
    expect(replyText(await g.outcome(event.id))).toBe('found');
    // Later sweeps find nothing left to do: still one reply.
    await new Promise((r) => setTimeout(r, 800));
    expect((await g.store.gateway.eventTranscript(event.id)).filter((t) => t.kind === 'reply')).toHaveLength(1);
    expect((await g.store.gateway.getEvent(event.id))?.attempts).toBe(1);
  });
});
