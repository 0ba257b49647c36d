/**
 * The slot part of the SandboxDriver contract (src/sandbox/types.ts `slot`, `slots`, `discard`,
 * `inspectImage`), run by describeSandboxDriver for every driver: two sandboxes of one agent on
 * one workspace, the plain driver following the current one, and a trial that only ever sees a
 * copy of the newest snapshot generation.
 */
import { expect, it } from 'vitest';
import { isAgentVmError } from '../../src/errors.js';
import type { SandboxDriver, SandboxSpec } from '../../src/sandbox/types.js';

export interface SlotHarness {
  driver: SandboxDriver;
  spec(id: string, extra?: Partial<SandboxSpec>): SandboxSpec;
  timeoutMs: number;
  id(label: string): string;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return isAgentVmError(err) ? err.code : String(err);
  }
}

export function describeSandboxSlots(h: SlotHarness): void {
  const { driver } = h;
  const sh = (d: SandboxDriver, a: string, script: string) => d.exec(a, ['sh', '-c', script], { timeoutMs: 20_000 });
  const a_ = driver.slot('a');
  const b_ = driver.slot('b');
  const trial = driver.slot('trial');

  it('slots a and b share the workspace; the plain driver follows the current slot; discard keeps the workspace', async () => {
    const a = h.id('slots');
    const first = await driver.ensure(h.spec(a));
    expect(first).toMatchObject({ slot: 'a', action: 'created' });
    expect((await sh(driver, a, 'echo from-a > /workspace/shared.txt')).exitCode).toBe(0);

    const second = await b_.ensure(h.spec(a));
    expect(second).toMatchObject({ slot: 'b', action: 'created', specHash: first.specHash, imageId: first.imageId });
    expect(second.containerId).not.toBe(first.containerId);
    expect((await sh(b_, a, 'cat /workspace/shared.txt; echo from-b > /workspace/b.txt')).stdout).toBe('from-a\n');
    expect((await a_.status(a)).state).toBe('running'); // a view never stops the other slot

    await a_.sleep(a);
    expect(await driver.status(a)).toMatchObject({ slot: 'b', state: 'running', containerId: second.containerId });
    expect((await sh(driver, a, 'cat /workspace/b.txt')).stdout).toBe('from-b\n');
    expect((await driver.slots(a)).map((s) => [s.slot, s.state])).toEqual([['a', 'stopped'], ['b', 'running']]);
    expect((await driver.list()).filter((s) => s.agentId === a).map((s) => s.slot)).toEqual(['b']);

    await driver.sleep(a); // the plain driver puts every slot to sleep
    expect((await driver.slots(a)).map((s) => s.state)).toEqual(['stopped', 'stopped']);
    expect((await driver.status(a)).slot).toBe('b'); // started last
    expect((await a_.ensure(h.spec(a))).action).toBe('started');
    expect((await driver.status(a)).slot).toBe('a');

    await b_.discard(a);
    await b_.discard(a); // a no-op when gone
    expect((await driver.slots(a)).map((s) => s.slot)).toEqual(['a']);
    expect((await sh(driver, a, 'cat /workspace/b.txt')).stdout).toBe('from-b\n');
  }, h.timeoutMs);

  it('a trial runs on a fresh copy of the newest snapshot generation, never on the live workspace', async () => {
    const a = h.id('trial');
    await driver.ensure(h.spec(a));
    await sh(driver, a, 'echo v1 > /workspace/state');
    await driver.snapshot(a, { reason: 'operator' });
    await sh(driver, a, 'echo v2 > /workspace/state');

    const t = await trial.ensure(h.spec(a));
    expect(t).toMatchObject({ slot: 'trial', restored: true });
    expect((await sh(trial, a, 'cat /workspace/state; echo trial > /workspace/state; echo x > /workspace/trial-only')).stdout).toBe('v1\n');
    expect((await sh(driver, a, 'cat /workspace/state; test -e /workspace/trial-only && echo present || echo absent')).stdout).toBe('v2\nabsent\n');
    expect(await code(trial.snapshot(a))).toBe('slot_unsupported');
    expect(await code(trial.restore(a))).toBe('slot_unsupported');
    expect(await code(trial.destroy(a))).toBe('slot_unsupported');
    expect((await driver.list()).filter((s) => s.agentId === a).map((s) => s.slot)).toEqual(['a']);
    expect((await driver.slots(a)).map((s) => s.slot)).toEqual(['a', 'trial']);

    await trial.discard(a);
    expect((await driver.slots(a)).map((s) => s.slot)).toEqual(['a']);
    await trial.ensure(h.spec(a));
    expect((await sh(trial, a, 'cat /workspace/state; cat /workspace/trial-only 2>/dev/null || echo fresh')).stdout).toBe('v1\nfresh\n');
    await trial.ensure(h.spec(a, { env: { CHANGED: '1' } })); // re-created: fresh again
    const report = await driver.destroy(a, { finalSnapshot: false });
    expect(report.removed.containers).toBe(2);
    expect(await driver.slots(a)).toEqual([]);
  }, h.timeoutMs);

  it('restore replaces the workspace under every slot; the next wake of either starts on it', async () => {
    const a = h.id('slot-restore');
    await driver.ensure(h.spec(a));
    await sh(driver, a, 'echo old > /workspace/f');
    await driver.snapshot(a);
    await b_.ensure(h.spec(a));
    await sh(b_, a, 'echo newer > /workspace/f');
    const r = await driver.restore(a, { snapshotFirst: false });
    expect(r.wasRunning).toBe(true);
    expect(await driver.slots(a)).toEqual([]);
    await b_.ensure(h.spec(a));
    expect((await sh(b_, a, 'cat /workspace/f')).stdout).toBe('old\n');
  }, h.timeoutMs);

  it('reports the image id and release labels; labels are covered by the spec hash; only release labels are accepted', async () => {
    const a = h.id('labels');
    const spec = h.spec(a);
    const img = await driver.inspectImage(spec.image);
    expect(img?.id).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await driver.inspectImage(`sha256:${'0'.repeat(64)}`)).toBeUndefined();
    const one = await driver.ensure({ ...spec, labels: { 'agent-vm.release': 'r1' } });
    expect(one.imageId).toBe(img?.id);
    expect(await driver.status(a)).toMatchObject({ imageId: img?.id, releaseLabels: { 'agent-vm.release': 'r1' } });
    expect((await driver.ensure({ ...spec, labels: { 'agent-vm.release': 'r1' } })).action).toBe('none');
    const two = await driver.ensure({ ...spec, labels: { 'agent-vm.release': 'r2' } });
    expect(two.action).toBe('recreated');
    expect(two.specHash).not.toBe(one.specHash);
    expect(await code(driver.ensure({ ...spec, labels: { 'agent-vm.spec-hash': 'forged' } }))).toBe('spec_invalid');
    // By id, the image is the same as by name: the same sandbox.
    expect((await driver.ensure({ ...spec, image: img!.id, labels: { 'agent-vm.release': 'r2' } })).action).toBe('none');
  }, h.timeoutMs);
}
