/**
 * Issue 10, item 1, the hostile half: an agent in conversation B reaches for conversation A's
 * directory (real gateway on PGlite, runsc sandbox, reference agent, local channel).
 *
 * What holds, and what does not (see sandbox/layout.ts): conversations of one profile share one
 * agent process, one uid and one workspace, so the sandbox cannot stop B's agent from reading or
 * writing A's directory. What the gateway guarantees is that it never mixes them up itself: a
 * turn collects only its own conversation's outbox, a file B's agent puts in A's outbox goes out
 * with A's answer (never with B's), a file B's agent finds in A's outbox is not B's to send unless
 * B's agent copies it, and a symlinked outbox (pointing into A's) is refused, not followed.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localConversation } from '../src/adapters/local/index.js';
import type { TurnOutcome } from '../src/adapters/types.js';
import { conversationDir } from '../src/sandbox/layout.js';
import { manifest, profileId, startTestGateway, type TestGateway } from './helpers/gateway.js';

const id = profileId('iso-hostile');
let gw: TestGateway;
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  gw = await startTestGateway({ manifests: [manifest(id)] });
  expect((await gw.send({ profile: id, text: 'echo awake' })).outcome).toMatchObject({ kind: 'reply', text: 'awake' });
});

afterAll(async () => {
  await gw?.close();
});

const conv = (label: string) => `${label}-${randomBytes(3).toString('hex')}`;
/** A's directory name as B's agent sees it in `ls /workspace/conversations`. */
const dirName = (c: string) => conversationDir(localConversation(id, c)).split('/').pop()!;
const files = (o: TurnOutcome) => (o.kind === 'reply' ? o.files.map((f) => `${f.name}=${f.data.toString()}`) : [`<${o.kind}: ${o.text}>`]);
const text = (o: TurnOutcome) => (o.kind === 'reply' ? o.text : `<${o.kind}: ${o.text}>`);
const send = (conversation: string, t: string) => gw.send({ profile: id, conversation, text: t });
async function transcriptFiles(eventId: string): Promise<string[]> {
  return (await gw.ctx.store.gateway.eventTranscript(eventId)).filter((r) => r.kind === 'file').map((r) => r.text);
}

describe('an agent in conversation B writing into conversation A', () => {
  it("while A's turn runs: the file goes out with A's answer (the gateway cannot tell who wrote it), never with B's", async () => {
    const [a, b] = [conv('a'), conv('b')];
    const pa = send(a, 'sh sleep 3; echo A-done');
    await pause(300);
    // (A's name is what `ls /workspace/conversations` shows; under runsc that `ls` failed once
    // with EINVAL while the gateway extracted into the volume, so it is not asserted.)
    const rb = await send(b, `sh printf X > ../${dirName(a)}/outbox/evil.txt && echo B-wrote`);
    const ra = await pa;
    // B's agent can write into A's directory: one uid, one workspace.
    expect(text(rb.outcome)).toBe('exit 0\nB-wrote\n');
    expect(files(rb.outcome)).toEqual([]);
    expect(text(ra.outcome)).toBe('exit 0\nA-done\n');
    expect(files(ra.outcome)).toEqual(['evil.txt=X']);
    expect(await transcriptFiles(ra.eventId)).toEqual(['evil.txt']);
    expect(await transcriptFiles(rb.eventId)).toEqual([]);
  });

  it("after A's turn ended: nothing is sent then; the file waits in A's outbox and goes with A's next answer, never to B", async () => {
    const [a, b] = [conv('a'), conv('b')];
    const first = await send(a, 'echo A-first');
    expect(files(first.outcome)).toEqual([]);
    const rb = await send(b, `sh printf Y > ../${dirName(a)}/outbox/evil2.txt && echo B-wrote`);
    expect(text(rb.outcome)).toBe('exit 0\nB-wrote\n');
    expect(files(rb.outcome)).toEqual([]);
    // A's ended turn is stored and delivered as it was.
    expect(await transcriptFiles(first.eventId)).toEqual([]);
    expect((await gw.ctx.store.gateway.getEvent(first.eventId))?.status).toBe('delivered');
    // A's next turn collects what is in A's outbox, whoever put it there.
    const next = await send(a, 'echo A-next');
    expect(files(next.outcome)).toEqual(['evil2.txt=Y']);
    const again = await send(b, 'echo B-again');
    expect(files(again.outcome)).toEqual([]);
  });

  it("B's outbox replaced by a symlink to A's outbox: B's turn refuses it and sends none of A's files; A still gets its own", async () => {
    const [a, b] = [conv('a'), conv('b')];
    const pa = send(a, 'sh sleep 1; printf A1 > outbox/fromA.txt; sleep 3; echo A-done');
    await pause(300);
    const rb = await send(b, `sh sleep 2; rm -rf outbox && ln -s ../${dirName(a)}/outbox outbox && echo B-linked`);
    const ra = await pa;
    expect(text(rb.outcome)).toContain('B-linked');
    expect(files(rb.outcome)).toEqual([]);
    expect(rb.outcome.kind === 'reply' ? rb.outcome.heldBack.map((h) => h.reason) : []).toEqual([expect.stringContaining('symlink')]);
    expect(files(ra.outcome)).toEqual(['fromA.txt=A1']);
    expect(await transcriptFiles(rb.eventId)).toEqual([]);
  });

  it("B's agent points a conversation directory that does not exist yet at A's: that conversation's turns send none of A's files", async () => {
    const [a, b, c] = [conv('a'), conv('b'), conv('c')];
    // A leaves a file in its outbox that its turn has not collected yet: written after the turn ended.
    await send(a, 'echo A-first');
    const rb = await send(b, `sh printf A-secret > ../${dirName(a)}/outbox/secret.txt; ln -s ${dirName(a)} ../${dirName(c)} && echo B-linked`);
    expect(text(rb.outcome)).toBe('exit 0\nB-linked\n');
    const rc = await send(c, 'echo C-here');
    expect(files(rc.outcome)).toEqual([]);
    expect(await transcriptFiles(rc.eventId)).toEqual([]);
    const ra = await send(a, 'echo A-next');
    expect(files(ra.outcome)).toEqual(['secret.txt=A-secret']);
  });
});
