/**
 * Graduated self-healing (issue 13 §2), through the real gateway on the fake driver: an agent
 * that fails to start is restarted (workspace kept); a crash mid-turn restarts it and runs the
 * turn once more, with one short note; a hung start is restarted at the handshake deadline.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';

const REF = ['node', '/opt/agent-vm/agents/reference/agent.mjs'];
const open: FakeGateway[] = [];
afterEach(async () => {
  for (const g of open.splice(0)) await g.close().catch(() => undefined);
});
async function gateway(m: Record<string, unknown>, unit: Parameters<typeof startFakeGateway>[0]['unit'] = {}) {
  const g = await startFakeGateway({ manifests: [m], unit });
  open.push(g);
  return g;
}
async function auditOf(g: FakeGateway, id: string) {
  return (await g.running.gateway.audit.tail(200)).filter((r) => r.profile === id && r.action === 'heal').map((r) => r.decision);
}

describe('self-healing', () => {
  it('an agent that crashes on its first two starts is restarted until it answers; each restart audited', async () => {
    const id = profileId('heal-starts');
    const g = await gateway(manifest(id, { agent: { command: REF, env: { REFERENCE_AGENT_CRASH_STARTS: '2' } } }));
    expect(replyText((await g.send({ profile: id, text: 'echo up at last', conversation: 'h' })).outcome)).toBe('up at last');
    expect(await auditOf(g, id)).toEqual(['restart', 'restart']);
    expect(g.running.gateway.units.get(id)).toBeDefined();
  });

  it('a crash mid-turn restarts the agent and runs the turn once more, with one short note', async () => {
    const id = profileId('heal-mid');
    const g = await gateway(manifest(id));
    // First run: kill the agent process from inside (its own parent); the retry finds the mark and answers.
    const r = await g.send({ profile: id, text: 'sh if [ -f .crashed ]; then echo second run; else touch .crashed; kill -9 $PPID; fi', conversation: 'm' });
    expect(replyText(r.outcome)).toBe('exit 0\nsecond run\n');
    expect(r.progress.filter((p) => /restarting it and retrying your request/.test(p))).toHaveLength(1);
    expect(await auditOf(g, id)).toEqual(['retry']);
  });

  it('a crash on the retry too ends in one honest notice', async () => {
    const id = profileId('heal-twice');
    const g = await gateway(manifest(id));
    const r = await g.send({ profile: id, text: 'crash', conversation: 'c' });
    expect(replyText(r.outcome)).toMatch(/^<notice: The agent exited with code 3 while working on this/);
    expect(replyText((await g.send({ profile: id, text: 'echo fine again', conversation: 'c' })).outcome)).toBe('fine again');
  });

  it('an agent that never answers initialize is restarted at the deadline, and the person is told when it never comes up', async () => {
    const id = profileId('heal-hang');
    const g = await gateway(manifest(id, { agent: { command: REF, env: { REFERENCE_AGENT_HANG_START: '1' } } }), { initTimeoutMs: 500 });
    const r = await g.send({ profile: id, text: 'echo never', conversation: 'x' });
    expect(replyText(r.outcome)).toMatch(/^<notice: The agent could not start: the agent did not complete the ACP handshake: no answer to initialize within 500 ms; replacing the sandbox from a snapshot failed too: agent .* has no snapshots/);
    expect(await auditOf(g, id)).toEqual(['restart', 'restart', 'error']);
  });
});

describe('replacement from a snapshot', () => {
  it('an agent whose workspace poisons every start is replaced from the generation before the poison, and the person is told which', async () => {
    const id = profileId('heal-poison');
    const g = await gateway(manifest(id, { agent: { command: REF, env: { REFERENCE_AGENT_CRASH_IF: 'poison' } } }), { initTimeoutMs: 5000 });
    expect(replyText((await g.send({ profile: id, text: 'remember colour teal', conversation: 'p' })).outcome)).toBe('remembered colour');
    const good = await g.driver.snapshot(id, { reason: 'periodic' });
    // The poison arrives after the good generation, and a later snapshot (e.g. at idle) takes it in.
    await g.send({ profile: id, text: 'sh touch ../../poison', conversation: 'p' }); // the workspace root, from the conversation's directory
    const bad = await g.driver.snapshot(id, { reason: 'idle' });
    expect(bad.generation).toBeGreaterThan(good.generation);
    await g.driver.crash(id); // the agent dies; every restart now dies too
    const r = await g.send({ profile: id, text: 'recall colour', conversation: 'p' });
    expect(replyText(r.outcome)).toMatch(new RegExp(`^teal\\n\\n\\(The agent kept failing to start, so its sandbox was replaced; its workspace came back from snapshot generation ${good.generation},`));
    expect(await auditOf(g, id)).toEqual(expect.arrayContaining(['restart', 'replace']));
    expect((await g.driver.exec(id, ['sh', '-c', 'test -e /workspace/poison && echo poisoned || echo clean'], { timeoutMs: 10_000 })).stdout).toBe('clean\n');
  });
});
