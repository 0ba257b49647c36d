/**
 * Self-healing (issue 13, hostile): the agent's container removed behind the gateway's back
 * (`docker rm -f`) in the middle of a turn, under runsc through the real gateway. The person
 * gets exactly one answer (the turn runs again on a new container, not a false "the agent
 * stopped"), the workspace (its volume) is still the agent's, and the next turn is ordinary.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';
import type { TurnOutcome } from '../src/adapters/types.js';
import { until } from './helpers/wait.js';

const run = promisify(execFile);
const id = profileId('rmf');
let gw: TestGateway;

beforeAll(async () => {
  gw = await startTestGateway({ manifests: [manifest(id)] });
}, 120_000);
afterAll(async () => gw?.close());

describe('docker rm -f of the sandbox mid-turn', () => {
  it('answers once, on a new container, with the workspace kept', async () => {
    expect(replyText((await gw.send({ profile: id, text: 'sh printf kept > kept.txt; echo wrote', conversation: 'c' })).outcome)).toBe('exit 0\nwrote\n');
    const before = await gw.ctx.driver.status(id);
    expect(before.state).toBe('running');

    const event = localEvent(localMessageSchema.parse({ profile: id, text: 'slow 4000', conversation: 'c' }), 'test');
    expect((await gw.running.gateway.intake.accept(event)).status).not.toBe('rejected');
    const eventId = event.id;
    // The turn is under way: its event is running.
    await until('the turn to start', async () => ((await gw.ctx.store.gateway.getEvent(eventId))?.status === 'running' ? true : undefined), { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 500));
    await run('docker', ['rm', '-f', before.containerId]);

    const outcomes: TurnOutcome[] = [];
    for await (const o of gw.running.gateway.watcher.watch(eventId)) if (o.kind !== 'progress') outcomes.push(o);
    expect(outcomes).toHaveLength(1);
    expect(replyText(outcomes[0]!)).toBe('slept 4000');
    const after = await gw.ctx.driver.status(id);
    expect(after.state).toBe('running');
    expect(after.containerId).not.toBe(before.containerId);

    expect(replyText((await gw.send({ profile: id, text: 'sh cat kept.txt', conversation: 'c' })).outcome)).toBe('exit 0\nkept');
    const transcript = await gw.ctx.store.gateway.transcript(`local:${id}:c`);
    expect(transcript.filter((t) => t.kind === 'reply').map((t) => t.text)).toEqual(['exit 0\nwrote\n', 'slept 4000', 'exit 0\nkept']);
  }, 180_000);
});
