/**
 * Agent employees end to end on the embedded database and the in-process queue: the local
 * channel → router → queue → unit → the reference agent over ACP inside a runsc sandbox.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { until } from './helpers/wait.js';

const main = profileId('gw-main');
const other = profileId('gw-other');
const staller = profileId('gw-stall');
const crasher = profileId('gw-crash');
const broken = profileId('gw-broken');
let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway({
    manifests: [
      manifest(main, { idle: { sleepAfterSeconds: 1 } }),
      manifest(other, { bindings: [{ platform: 'local', channels: ['test', 'ops'] }] }),
      manifest(staller, { turn: { timeoutSeconds: 2 } }),
      manifest(crasher),
      // Invalid: an unknown key. It must not be served, and nothing else may suffer.
      { ...manifest(broken), colour: 'blue' },
    ],
  });
});

afterAll(async () => {
  await gw?.close();
});

const waitForState = (agentId: string, state: string): Promise<true> =>
  until(`${agentId} to reach ${state}`, async () => ((await gw.ctx.driver.status(agentId)).state === state ? true : undefined), { timeoutMs: 15_000, everyMs: 100 });

describe('a conversation', () => {
  it('runs three turns, sleeping between them; turn 3 uses what turn 1 stored in the workspace', async () => {
    const conversation = 'three-turns';
    const t1 = await gw.send({ profile: main, text: 'remember colour teal', conversation });
    expect(replyText(t1.outcome)).toBe('remembered colour');
    await waitForState(main, 'stopped'); // idle sleep (snapshot + stop) after 1 s

    const t2 = await gw.send({ profile: main, text: 'write notes.txt turn two was here', conversation });
    expect(t2.outcome).toMatchObject({ kind: 'reply', text: 'wrote notes.txt (17 bytes)' });
    expect(t2.outcome.kind === 'reply' && t2.outcome.files.map((f) => [f.name, f.data.toString()])).toEqual([['notes.txt', 'turn two was here']]);
    await waitForState(main, 'stopped');

    const t3 = await gw.send({ profile: main, text: 'recall colour', conversation });
    expect(replyText(t3.outcome)).toBe('teal');

    // The transcript has every prompt, reply and file, in order, and survives the sleeps.
    const rows = await gw.ctx.store.gateway.transcript(t1.conversation);
    expect(rows.map((r) => [r.kind, r.text])).toEqual([
      ['prompt', 'remember colour teal'],
      ['reply', 'remembered colour'],
      ['prompt', 'write notes.txt turn two was here'],
      ['reply', 'wrote notes.txt (17 bytes)'],
      ['file', 'notes.txt'],
      ['prompt', 'recall colour'],
      ['reply', 'teal'],
    ]);
    // One ACP session for the whole conversation, continued with session/load after each wake.
    expect(await gw.ctx.store.gateway.getSession(main, t1.conversation)).toMatch(/^ref-/);
    const audit = await gw.running.gateway.audit.tail(200);
    expect(audit.filter((r) => r.profile === main && r.action === 'sleep').length).toBeGreaterThanOrEqual(2);
  });

  it('streams progress from session/update while the agent works', async () => {
    const r = await gw.send({ profile: other, text: 'progress 3', channel: 'ops' });
    expect(replyText(r.outcome)).toBe('done 3');
    expect(r.progress.length).toBeGreaterThanOrEqual(1);
    expect(r.progress.at(-1)).toMatch(/^plan \d\/3/);
  });
});

describe('concurrency and order', () => {
  it('runs two conversations of one profile and one of another concurrently, each in order', async () => {
    const started = Date.now();
    const conv = async (profile: string, conversation: string, texts: string[]) => {
      // Queue every message of the conversation at once; the unit must keep them in order.
      const events = texts.map((text) => localEvent(localMessageSchema.parse({ profile, text, conversation }), 'test'));
      for (const e of events) expect((await gw.running.gateway.intake.accept(e)).status).toBe('accepted');
      const replies: string[] = [];
      for (const e of events) for await (const o of gw.running.gateway.watcher.watch(e.id)) if (o.kind !== 'progress') replies.push(replyText(o));
      return { replies, conversation: events[0]!.conversation, done: Date.now() - started };
    };
    const [a, b, c] = await Promise.all([
      conv(main, 'conc-a', ['slow 1500', 'echo a2', 'echo a3']),
      conv(main, 'conc-b', ['slow 1500', 'echo b2']),
      conv(other, 'conc-c', ['slow 1500', 'echo c2']),
    ]);
    expect(a.replies).toEqual(['slept 1500', 'a2', 'a3']);
    expect(b.replies).toEqual(['slept 1500', 'b2']);
    expect(c.replies).toEqual(['slept 1500', 'c2']);
    // Three 1.5 s turns, concurrently: well under the 4.5 s they would take in a row.
    const slowest = Math.max(a.done, b.done, c.done);
    expect(slowest).toBeLessThan(4500 + 3000); // generous: includes waking two sandboxes
    for (const x of [a, b, c]) {
      const rows = await gw.ctx.store.gateway.transcript(x.conversation);
      const prompts = rows.filter((r) => r.kind === 'prompt').map((r) => r.text);
      expect(prompts[0]).toBe('slow 1500');
    }
    // The slow turns overlapped in time.
    const t = await Promise.all([a, b, c].map(async (x) => (await gw.ctx.store.gateway.transcript(x.conversation)).filter((r) => r.text.startsWith('slept') || r.text === 'slow 1500')));
    const windows = t.map((rows) => [rows[0]!.createdAt.getTime(), rows[1]!.createdAt.getTime()] as const);
    const latestStart = Math.max(...windows.map((w) => w[0]));
    const earliestEnd = Math.min(...windows.map((w) => w[1]));
    expect(latestStart).toBeLessThan(earliestEnd);
  });
});

describe('duplicates', () => {
  it('runs one turn for an event delivered twice, even at the same moment', async () => {
    const e = localEvent(localMessageSchema.parse({ profile: other, text: 'echo once', id: `dup-${Date.now()}` }), 'test');
    const results = await Promise.all([gw.running.gateway.intake.accept(e), gw.running.gateway.intake.accept({ ...e })]);
    expect(results.map((r) => r.status).sort()).toEqual(['accepted', 'duplicate']);
    for await (const o of gw.running.gateway.watcher.watch(e.id)) if (o.kind !== 'progress') expect(replyText(o)).toBe('once');
    expect((await gw.running.gateway.intake.accept({ ...e })).status).toBe('duplicate');
    await gw.running.gateway.units.get(other)!.idle();
    const rows = await gw.ctx.store.gateway.eventTranscript(e.id);
    expect(rows.filter((r) => r.kind === 'reply')).toHaveLength(1);
    expect(rows.filter((r) => r.kind === 'prompt')).toHaveLength(1);
  });
});

describe('clear messages, and everyone else keeps answering', () => {
  it('rejects an unbound channel and an unknown profile with an audit record; no sandbox is woken', async () => {
    const r = await gw.send({ profile: other, text: 'echo hi', channel: 'random' });
    expect(r.outcome).toEqual({ kind: 'notice', text: expect.stringContaining('No agent is bound here') });
    const unknown = await gw.send({ profile: 'nobody-here', text: 'echo hi' });
    expect(unknown.outcome.kind === 'notice' && unknown.outcome.text).toContain('there is no profile "nobody-here"');
    await gw.running.gateway.flushAudit();
    const audit = await gw.running.gateway.audit.tail(500);
    expect(audit.find((a) => a.subject === r.eventId)).toMatchObject({ action: 'route', decision: 'reject' });
    expect((await gw.ctx.driver.status('nobody-here')).state).toBe('missing');
  });

  it('does not serve an invalid manifest, says why, and serves the others', async () => {
    expect(gw.running.loaded.invalid.map((i) => i.id)).toEqual([broken]);
    const r = await gw.send({ profile: broken, text: 'echo hi' });
    expect(r.outcome.kind === 'notice' && r.outcome.text).toMatch(/manifest is invalid.*agent-vm profiles validate/);
    expect((await gw.ctx.driver.status(broken)).state).toBe('missing');
    expect(replyText((await gw.send({ profile: other, text: 'echo still here' })).outcome)).toBe('still here');
  });

  it('tells the user when the agent crashes, and answers again afterwards', async () => {
    const r = await gw.send({ profile: crasher, text: 'crash' });
    expect(r.outcome.kind).toBe('notice');
    expect(r.outcome.kind === 'notice' && r.outcome.text).toMatch(/The agent (exited with code 3|stopped) while working on this/);
    expect(replyText((await gw.send({ profile: other, text: 'echo unaffected' })).outcome)).toBe('unaffected');
    expect(replyText((await gw.send({ profile: crasher, text: 'echo back again' })).outcome)).toBe('back again');
  });

  it('cancels a stalled agent at the turn deadline, tells the user, and answers again', async () => {
    const started = Date.now();
    const r = await gw.send({ profile: staller, text: 'stall' });
    expect(r.outcome).toEqual({ kind: 'notice', text: 'The agent did not finish within 2 s, so the turn was cancelled.' });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(replyText((await gw.send({ profile: staller, text: 'echo awake' })).outcome)).toBe('awake');
    const audit = await gw.running.gateway.audit.tail(500);
    expect(audit.find((a) => a.subject === r.eventId && a.action === 'turn')).toMatchObject({ decision: 'timeout' });
  });
});

describe('permissions', () => {
  it('denies a permission request when no policy allows it, and audits it', async () => {
    const r = await gw.send({ profile: other, text: 'ask delete the production database' });
    expect(replyText(r.outcome)).toBe('permission denied');
    expect(r.progress.join('\n')).toContain('permission denied: delete the production database (permissions do not allow "other" actions for this agent)');
    const audit = await gw.running.gateway.audit.tail(500);
    expect(audit.find((a) => a.action === 'permission' && a.profile === other)).toMatchObject({ decision: 'deny', reason: 'permissions do not allow "other" actions for this agent', subject: 'delete the production database' });
    expect((await gw.running.gateway.audit.verify()).ok).toBe(true);
  });
});
