/**
 * An agent that dies while another conversation's turn is opening its session (issue 10.1's
 * concurrent conversations, seen under runsc: the sandbox exits while turn B waits on
 * session/new): B is healed as a crash mid-prompt is (restart, run once more), not failed with
 * "the agent process ended during the turn". Real gateway, fake sandbox driver.
 */
import { afterEach, expect, it } from 'vitest';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';

const open: FakeGateway[] = [];
afterEach(async () => {
  for (const g of open.splice(0)) await g.close().catch(() => undefined);
});

it("a turn whose session/new is cut off by the agent's death runs once more on the restarted agent, as the turn that killed it does", async () => {
  const id = profileId('setup-crash');
  const g = await startFakeGateway({ manifests: [manifest(id)] });
  open.push(g);
  expect(replyText((await g.send({ profile: id, conversation: 'warm', text: 'echo up' })).outcome)).toBe('up');
  // A freezes the agent (so B's session/new goes unanswered), then kills it; on its retry it answers.
  const a = g.post({ profile: id, conversation: 'a', text: 'sh if [ -f .a-ran ]; then echo A-again; else touch .a-ran; kill -STOP $PPID; sleep 2; kill -9 $PPID; fi' });
  await new Promise((r) => setTimeout(r, 600));
  const b = await g.send({ profile: id, conversation: 'b', text: 'echo B-answered' });
  expect(replyText(b.outcome)).toBe('B-answered');
  expect(replyText(await g.outcome((await a).eventId))).toBe('exit 0\nA-again\n');
}, 60_000);
