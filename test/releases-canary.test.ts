/**
 * L3 releases on real Docker + runsc through the real gateway: no release → refused (a tag is not
 * a pinned digest); a change needs a canary; the canary serves one conversation, the others stay
 * on the active release; promoted after AGENTVM_CANARY_TURNS healthy turns; a failed turn on the
 * canary rolls it back (audited, the plan says why), the active release untouched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { releaseServiceFor } from '../src/cli/releases.js';
import { createAuditLog } from '../src/governance/audit.js';
import { releaseRepo } from '../src/store/releases.js';
import { manifest, profileId, replyText, startTestGateway, writeProfiles, type TestGateway } from './helpers/gateway.js';
import { buildReleaseImage, docker } from './helpers/release-images.js';
import { until } from './helpers/wait.js';

const id = profileId('canary');
let gw: TestGateway;
let images: Array<{ ref: string; id: string }> = [];

const write = (image: string) => writeProfiles(gw.profilesDir, [manifest(id, { risk: 'L3', image })]);
const svc = () => releaseServiceFor(gw.ctx);
const slots = () => releaseRepo(gw.ctx.store.db).slots(id);
const canaryConv = `local:${id}:canary`;

beforeAll(async () => {
  for (const n of [1, 2, 3]) images.push(await buildReleaseImage('good', `${id}-${n}`));
  gw = await startTestGateway({ manifests: [manifest(id, { risk: 'L3', image: images[0]!.id })], env: { AGENTVM_CANARY_TURNS: '2' } });
}, 300_000);

afterAll(async () => {
  await gw?.close();
  for (const i of images) await docker(['rmi', '-f', i.ref]).catch(() => undefined);
});

describe('L3 canary (Docker, runsc)', () => {
  it('refuses to run an L3 agent without a release, then serves its first release', async () => {
    expect(replyText((await gw.send({ profile: id, text: 'echo hi' })).outcome)).toMatch(/risk L3: it runs only an image pinned by digest in a release.*release apply/);
    const [r] = await svc().apply([id], { who: 'test' });
    expect(r!.outcome).toBe('swapped');
    expect(replyText((await gw.send({ profile: id, text: 'echo hi' })).outcome)).toBe('hi');
  }, 180_000);

  it('a change needs a canary; promoted after N healthy turns on its conversation', async () => {
    await write(images[1]!.id);
    const [refused] = await svc().apply([id], { who: 'test' });
    expect(refused).toMatchObject({ outcome: 'refused' });
    expect(refused!.why).toMatch(/--canary/);
    const before = await slots();
    const [c] = await svc().apply([id], { who: 'test', canary: canaryConv });
    expect(c!.outcome).toBe('canary');
    // Other conversations stay on the active release.
    expect(replyText((await gw.send({ profile: id, text: 'echo other', conversation: 'other' })).outcome)).toBe('other');
    expect((await slots())!.canary).toMatchObject({ ok: 0, state: 'serving' });
    for (const n of [1, 2]) expect(replyText((await gw.send({ profile: id, text: `echo c${n}`, conversation: 'canary' })).outcome)).toBe(`c${n}`);
    const promoted = await until('promotion', async () => ((await slots())?.canary == null && (await slots())?.release === c!.release ? await slots() : undefined));
    expect(promoted.active).not.toBe(before!.active);
    expect(promoted.standby).toBe(before!.release);
    expect((await gw.ctx.driver.slot(promoted.active as 'a' | 'b').status(id)).imageId).toBe(images[1]!.id);
    expect(replyText((await gw.send({ profile: id, text: 'echo after', conversation: 'other' })).outcome)).toBe('after');
    const audit = await createAuditLog(gw.ctx.store.audit).tail(50);
    expect(audit.some((a) => a.action === 'release.canary' && a.decision === 'promoted' && a.subject === c!.release)).toBe(true);
  }, 240_000);

  it('a failed turn on the canary rolls it back; the active release is untouched', async () => {
    await write(images[2]!.id);
    const before = await slots();
    const [c] = await svc().apply([id], { who: 'test', canary: canaryConv });
    expect(c!.outcome).toBe('canary');
    await gw.send({ profile: id, text: 'crash', conversation: 'canary' });
    const after = await until('canary rolled back', async () => ((await slots())?.canary == null ? await slots() : undefined));
    expect(after).toMatchObject({ active: before!.active, release: before!.release });
    const rel = (await svc().list(id)).find((r) => r.id === c!.release)!;
    expect(rel.status).toBe('rolled_back');
    expect(String(rel.outcome.why)).toMatch(/a turn on the canary failed/);
    expect((await svc().plan([id]))[0]!.lastFailure).toMatch(/was rolled back: a turn on the canary failed/);
    expect(replyText((await gw.send({ profile: id, text: 'echo fine', conversation: 'canary' })).outcome)).toBe('fine');
    await until('canary slot stopped', async () => ((await gw.ctx.driver.slot(c!.slot!).status(id)).state === 'running' ? undefined : true));
  }, 240_000);
});
