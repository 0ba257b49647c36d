/**
 * Releases on real Docker + runsc through the real gateway: a broken and a slow image change
 * nothing; a good one swaps while messages keep flowing (none lost, none failed); rollback swaps
 * back to the kept slot; a container re-created by hand shows as drift and is not reused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { releaseServiceFor } from '../src/cli/releases.js';
import { driftReport } from '../src/releases/drift.js';
import { loadProfiles } from '../src/governance/profiles.js';
import { releaseRepo } from '../src/store/releases.js';
import { manifest, profileId, replyText, startTestGateway, writeProfiles, type TestGateway } from './helpers/gateway.js';
import { buildReleaseImage, docker } from './helpers/release-images.js';

const id = profileId('rel');
let gw: TestGateway;
let images: Record<'v1' | 'v2' | 'broken' | 'slow', { ref: string; id: string }>;

const write = (image: string, extra: Record<string, unknown> = {}) => writeProfiles(gw.profilesDir, [manifest(id, { image, health: { timeoutSeconds: 20, probe: { prompt: 'echo ready', expect: 'ready' } }, ...extra })]);
const svc = () => releaseServiceFor(gw.ctx);
const slots = () => releaseRepo(gw.ctx.store.db).slots(id);
const drift = async () => driftReport((await loadProfiles(gw.profilesDir)).profiles, { repo: releaseRepo(gw.ctx.store.db), driver: gw.ctx.driver, image: gw.ctx.config.image, runtime: gw.ctx.config.runtime });

beforeAll(async () => {
  const tag = id;
  const [v1, v2, broken, slow] = [await buildReleaseImage('good', `${tag}-1`), await buildReleaseImage('good', `${tag}-2`), await buildReleaseImage('broken', tag), await buildReleaseImage('slow', tag)];
  images = { v1, v2, broken, slow };
  gw = await startTestGateway({ manifests: [manifest(id, { image: v1.ref })] });
}, 300_000);

afterAll(async () => {
  await gw?.close();
  for (const i of Object.values(images ?? {})) await docker(['rmi', '-f', i.ref]).catch(() => undefined);
});

describe('releases (Docker, runsc)', () => {
  it('plans, applies a first release into slot b, and answers from it', async () => {
    await write(images.v1.ref);
    expect(replyText((await gw.send({ profile: id, text: 'echo before' })).outcome)).toBe('before');
    const plan = await svc().plan([id]);
    expect(plan[0]!.changes.map((c) => c.what)).toEqual(['image', 'spec', 'runtime', 'agent', 'manifest']);
    const [r] = await svc().apply([id], { who: 'test', why: 'first' });
    expect(r).toMatchObject({ outcome: 'swapped', slot: 'b' });
    expect(r!.health?.ok).toBe(true);
    expect(replyText((await gw.send({ profile: id, text: 'echo after' })).outcome)).toBe('after');
    const b = await gw.ctx.driver.slot('b').status(id);
    expect(b).toMatchObject({ state: 'running', imageId: images.v1.id });
    expect((await gw.ctx.driver.slot('a').status(id)).state).not.toBe('running');
    expect((await svc().plan([id]))[0]!.changes).toEqual([]);
  }, 180_000);

  it('a broken image (agent exits at start) and a slow one (misses the deadline) change nothing', async () => {
    const before = await slots();
    await write(images.broken.ref);
    const [bad] = await svc().apply([id], { who: 'test' });
    expect(bad!.outcome).toBe('failed');
    expect(bad!.why).toMatch(/health check failed at (initialize|start|session)/);
    await write(images.slow.ref, { health: { timeoutSeconds: 5 } });
    const [slow] = await svc().apply([id], { who: 'test' });
    expect(slow!.outcome).toBe('failed');
    expect(slow!.why).toMatch(/deadline|initialize/);
    expect((await svc().plan([id]))[0]!.lastFailure).toMatch(/failed: health check failed/);
    expect(await slots()).toMatchObject({ active: before!.active, release: before!.release, version: before!.version });
    expect((await gw.ctx.driver.slots(id)).map((s) => s.slot)).not.toContain('trial');
    expect(replyText((await gw.send({ profile: id, text: 'echo still' })).outcome)).toBe('still');
    expect((await gw.ctx.driver.slot('b').status(id)).imageId).toBe(images.v1.id);
  }, 240_000);

  it('a good release swaps while messages flow (0 lost, 0 failed); rollback swaps back', async () => {
    await write(images.v2.ref);
    let stop = false;
    const results: Array<{ text: string; got: string; ms: number }> = [];
    const loop = async (conv: string) => {
      for (let i = 0; !stop; i++) {
        const t0 = performance.now();
        const text = `echo ${conv}-${i}`;
        const r = await gw.send({ profile: id, text, conversation: conv });
        results.push({ text, got: replyText(r.outcome), ms: performance.now() - t0 });
      }
    };
    const loops = [loop('c1'), loop('c2')];
    await new Promise((r) => setTimeout(r, 1500));
    const [r] = await svc().apply([id], { who: 'test', why: 'v2' });
    expect(r).toMatchObject({ outcome: 'swapped', slot: 'a' });
    const swappedAt = results.length;
    // Keep sending until both conversations ran turns on the new slot.
    while (results.length < swappedAt + 6) await new Promise((res) => setTimeout(res, 200));
    stop = true;
    await Promise.all(loops);
    for (const x of results) expect(x.got).toBe(x.text.slice(5));
    expect((await gw.ctx.driver.slot('a').status(id)).imageId).toBe(images.v2.id);
    expect((await gw.ctx.driver.slot('b').status(id)).state).toBe('stopped');
    console.log(JSON.stringify({ turns: results.length, maxMs: Math.round(Math.max(...results.map((x) => x.ms))), medianMs: Math.round(results.map((x) => x.ms).sort((a, b) => a - b)[results.length >> 1]!) }));

    const back = await svc().rollback(id, { who: 'test', why: 'test rollback' });
    expect(back).toMatchObject({ how: 'swap', to: (await svc().list(id)).find((x) => x.imageDigest === images.v1.id && x.status === 'active')!.id });
    expect(back.ms).toBeLessThan(1000);
    expect(replyText((await gw.send({ profile: id, text: 'echo rolled' })).outcome)).toBe('rolled');
    expect((await gw.ctx.driver.slot('b').status(id))).toMatchObject({ state: 'running', imageId: images.v1.id });
    await new Promise((res) => setTimeout(res, 500));
  }, 300_000);

  it('a container re-created by hand with another image is drift, and is never reused', async () => {
    await write(images.v1.ref);
    expect((await drift()).find((x) => x.agent === id)!.drift).toEqual([]);
    const row = await slots();
    const name = (await docker(['ps', '-a', '--filter', `label=agent-vm.agent=${id}`, '--format', '{{.Names}}'])).split('\n').find((n) => (row!.active === 'b' ? n.endsWith('.b') : !n.includes('.')))!;
    const labels = JSON.parse(await docker(['inspect', '-f', '{{json .Config.Labels}}', name])) as Record<string, string>;
    await docker(['rm', '-f', name]);
    await docker(['create', '--name', name, '--runtime', 'runsc', ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]), images.v2.ref, 'sleep', 'infinity']);
    await docker(['start', name]);
    const d = (await drift()).find((x) => x.agent === id)!;
    expect(d.drift.join(' ')).toMatch(/image sha256:[0-9a-f]{12} runs/);
    expect(replyText((await gw.send({ profile: id, text: 'echo fixed' })).outcome)).toBe('fixed');
    expect((await drift()).find((x) => x.agent === id)!.drift).toEqual([]);
  }, 180_000);
});
