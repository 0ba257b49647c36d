/**
 * The snapshot, restore and pause part of the SandboxDriver contract (src/sandbox/types.ts), run
 * by describeSandboxDriver for every driver. Hostile cases act as a corrupted disk or a tampered
 * store: a flipped byte, a truncated archive, a manifest that lies, a tar that would write outside
 * the workspace. None may ever end in an empty workspace presented as the agent's.
 */
import fs from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';
import { expect, it } from 'vitest';
import { isAgentVmError } from '../../src/errors.js';
import { archiveName, manifestName } from '../../src/sandbox/snapshots/common.js';
import type { SnapshotStore } from '../../src/sandbox/snapshots/types.js';
import { SnapshotRefusedError } from '../../src/sandbox/snapshots/verify.js';
import { conversationPaths } from '../../src/sandbox/layout.js';
import type { SandboxDriver, SandboxSpec } from '../../src/sandbox/types.js';
import { tarOf } from './snapshot-store.js';

export interface SnapshotHarness {
  driver: SandboxDriver;
  /** The (local) store the driver writes generations to. */
  snapshots: SnapshotStore;
  spec(id: string, extra?: Partial<SandboxSpec>): SandboxSpec;
  loseWorkspace(id: string): Promise<void>;
  referenceAgent: string[];
  timeoutMs: number;
  id(label: string): string;
}

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string; err: unknown }> {
  try {
    await p;
    return { code: 'no error', message: '', err: undefined };
  } catch (err) {
    return { code: isAgentVmError(err) ? err.code : String(err), message: (err as Error).message, err };
  }
}

export function describeSandboxSnapshots(h: SnapshotHarness): void {
  const { driver, snapshots } = h;
  const sh = (a: string, script: string, timeoutMs = 20_000) => driver.exec(a, ['sh', '-c', script], { timeoutMs });
  const tamper = async (a: string, generation: number, what: 'archive' | 'manifest', change: (b: Buffer) => Buffer) => {
    const file = snapshots.localPath!(a, generation);
    const target = what === 'archive' ? file : file.replace(archiveName(generation), manifestName(generation));
    await fs.writeFile(target, change(await fs.readFile(target)));
  };
  const flip = (b: Buffer) => {
    const c = Buffer.from(b);
    c[c.length >> 1] = c[c.length >> 1]! ^ 0xff;
    return c;
  };

  it('keeps generations with their metadata; a corrupted or truncated newest one is skipped and reported, the newest good one restored', async () => {
    const a = h.id('gens');
    await driver.ensure(h.spec(a));
    for (const v of [1, 2, 3]) {
      expect((await sh(a, `mkdir -p /workspace/d && echo v${v} > /workspace/d/state`)).exitCode).toBe(0);
      const s = await driver.snapshot(a, { reason: 'periodic', sessions: [`sess-${v}`], release: `rel-${v}` });
      expect(s).toMatchObject({ agentId: a, generation: v, files: 1 });
      expect(s.sha256).toMatch(/^[0-9a-f]{64}$/);
    }
    await tamper(a, 3, 'archive', flip);
    await tamper(a, 2, 'archive', (b) => b.subarray(0, b.length - 700));
    await driver.sleep(a);
    await h.loseWorkspace(a);
    const back = await driver.ensure(h.spec(a));
    expect(back.restored).toBe(true);
    expect(back.restoredFrom).toMatchObject({ generation: 1, sessions: ['sess-1'], release: 'rel-1' });
    expect(back.restoredFrom!.skipped.map((s) => s.generation)).toEqual([3, 2]);
    expect(back.restoredFrom!.skipped[0]!.reason).toMatch(/^checksum mismatch/);
    expect(back.restoredFrom!.skipped[1]!.reason).toMatch(/^truncated/);
    expect((await sh(a, 'cat /workspace/d/state && touch /workspace/new-file && echo ok')).stdout).toBe('v1\nok\n');
  }, h.timeoutMs);

  it('refuses to wake an agent whose generations are all bad, leaves nothing behind, and starts empty only once they are deleted', async () => {
    const a = h.id('allbad');
    await driver.ensure(h.spec(a));
    await sh(a, 'echo precious > /workspace/p');
    await driver.snapshot(a);
    await driver.snapshot(a);
    await tamper(a, 2, 'archive', flip);
    // A manifest that lies about its checksum.
    await tamper(a, 1, 'manifest', (b) => Buffer.from(b.toString().replace(/"sha256": "[0-9a-f]+"/, `"sha256": "${'a'.repeat(64)}"`)));
    await driver.sleep(a);
    await h.loseWorkspace(a);
    for (let i = 0; i < 2; i++) {
      const f = await failure(driver.ensure(h.spec(a)));
      expect(f.code).toBe('snapshot_unusable');
      expect(f.err).toBeInstanceOf(SnapshotRefusedError);
      expect((f.err as SnapshotRefusedError).skipped.map((s) => s.generation)).toEqual([2, 1]);
      expect(f.message).toContain(`agent ${a}`);
      expect(f.message).toContain('It was not given an empty workspace');
      expect((await driver.status(a)).state).toBe('missing');
    }
    expect(await snapshots.remove(a)).toBe(2);
    const fresh = await driver.ensure(h.spec(a));
    expect(fresh).toMatchObject({ action: 'created', restored: false });
    expect((await sh(a, 'cat /workspace/p 2>/dev/null || echo gone')).stdout).toBe('gone\n');
  }, h.timeoutMs);

  it('refuses a generation whose tar would write outside the workspace (true checksum) and restores the good one before it', async () => {
    const a = h.id('hostiletar');
    await driver.ensure(h.spec(a));
    await sh(a, 'echo good > /workspace/g');
    await driver.snapshot(a);
    const evil = await tarOf([
      { name: 'etc-link', type: 'symlink', linkname: '/etc' },
      { name: 'etc-link/agentvm-evil', data: 'planted' },
      { name: '../agentvm-escape', data: 'planted' },
    ]);
    await snapshots.put(a, Readable.from([evil.bytes]), evil.counts, { reason: 'tampered' });
    await driver.sleep(a);
    await h.loseWorkspace(a);
    const back = await driver.ensure(h.spec(a));
    expect(back.restoredFrom?.generation).toBe(1);
    expect(back.restoredFrom?.skipped).toEqual([{ generation: 2, reason: expect.stringMatching(/^unsafe entry: entry "etc-link\/agentvm-evil" lies under symlink "etc-link"/) }]);
    expect((await sh(a, 'cat /workspace/g; test -e /etc/agentvm-evil && echo PLANTED; test -e /workspace/etc-link && echo LINK; true')).stdout).toBe('good\n');
  }, h.timeoutMs);

  it('pauses a running sandbox: frozen until ensure unpauses it; snapshot and sleep work on it', async () => {
    const a = h.id('pause');
    const ticker = ['sh', '-c', 'while true; do echo t >> /workspace/ticks; sleep 0.05; done'];
    await driver.ensure(h.spec(a, { command: ticker }));
    expect((await failure(driver.pause(h.id('nobody')))).code).toBe('sandbox_missing');
    await sh(a, 'for i in $(seq 100); do test -s /workspace/ticks && break; sleep 0.05; done');
    await driver.pause(a);
    await driver.pause(a); // a no-op when paused
    expect((await driver.status(a)).state).toBe('paused');
    expect((await failure(sh(a, 'true'))).code).toBe('sandbox_not_running');
    const frozen = await driver.snapshot(a, { reason: 'periodic' });
    await new Promise((r) => setTimeout(r, 400));
    const again = await driver.snapshot(a, { reason: 'periodic' });
    // Nothing ran while paused: the workspace did not change between the two snapshots.
    expect(again.sha256).toBe(frozen.sha256);
    const woken = await driver.ensure(h.spec(a, { command: ticker }));
    expect(woken.action).toBe('unpaused');
    expect((await driver.status(a)).state).toBe('running');
    expect((await sh(a, 'echo alive')).stdout).toBe('alive\n');
    await driver.pause(a);
    await driver.sleep(a);
    expect((await driver.status(a)).state).toBe('stopped');
    expect((await failure(driver.pause(a))).code).toBe('sandbox_not_running');
  }, h.timeoutMs);

  it('an attached ACP connection survives pause and unpause: a prompt sent while paused is answered after', async () => {
    const a = h.id('acppause');
    const sp = h.spec(a, { command: h.referenceAgent, stdin: true });
    await driver.ensure(sp);
    const p = conversationPaths('local:x:paused');
    await driver.writeFiles(a, p.outbox, []);
    const io = await driver.attach(a);
    const agent = acp.client({ name: 'contract' }).connect(
      acp.ndJsonStream(Writable.toWeb(io.stdin as Writable) as WritableStream<Uint8Array>, Readable.toWeb(io.stdout as Readable) as ReadableStream<Uint8Array>),
    ).agent;
    try {
      await agent.request('initialize', { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
      const session = (await agent.request('session/new', { cwd: p.cwd, mcpServers: [] })).sessionId;
      await driver.pause(a);
      let answered = false;
      const prompt = agent.request('session/prompt', { sessionId: session, prompt: [{ type: 'text', text: 'write paused.txt kept' }] }).then((r) => ((answered = true), r));
      await new Promise((r) => setTimeout(r, 300));
      expect(answered).toBe(false); // frozen: nothing answers
      expect((await driver.ensure(sp)).action).toBe('unpaused');
      expect((await prompt).stopReason).toBe('end_turn');
      const files = [];
      for await (const e of driver.readOutbox(a, p.outbox)) files.push(e);
      expect(files).toEqual([{ kind: 'file', name: 'paused.txt', size: 4, data: Buffer.from('kept') }]);
    } finally {
      io.close();
      await io.closed;
    }
  }, h.timeoutMs);

  it('destroy takes a final snapshot first and keeps it; without one, nothing is written', async () => {
    const a = h.id('final');
    await driver.ensure(h.spec(a));
    await sh(a, 'echo last-words > /workspace/w');
    const r = await driver.destroy(a);
    expect(r.finalSnapshot).toMatchObject({ agentId: a, generation: 1 });
    expect((await snapshots.list(a)).map((g) => g.manifest?.reason)).toEqual(['destroy']);
    expect((await driver.status(a)).state).toBe('missing');
    expect((await driver.destroy(a)).finalSnapshot).toBeNull(); // nothing left to read
    // The agent's world survives its sandbox: a new one starts from the final generation.
    const back = await driver.ensure(h.spec(a));
    expect(back.restoredFrom?.generation).toBe(1);
    expect((await sh(a, 'cat /workspace/w')).stdout).toBe('last-words\n');
    expect((await driver.destroy(a, { finalSnapshot: false })).finalSnapshot).toBeNull();
    expect((await snapshots.list(a)).map((g) => g.generation)).toEqual([1]);
  }, h.timeoutMs);

  it('restore replaces the workspace with a chosen, verified generation after saving the current one', async () => {
    const a = h.id('restore');
    await driver.ensure(h.spec(a));
    for (const v of [1, 2]) {
      await sh(a, `echo v${v} > /workspace/s`);
      await driver.snapshot(a);
    }
    await sh(a, 'echo v3 > /workspace/s');
    const r = await driver.restore(a, { generation: 1 });
    expect(r).toMatchObject({ agentId: a, generation: 1, wasRunning: true, skipped: [] });
    expect(r.savedAs?.generation).toBe(3);
    expect((await driver.status(a)).state).toBe('missing');
    expect((await driver.ensure(h.spec(a))).action).toBe('created');
    expect((await sh(a, 'cat /workspace/s')).stdout).toBe('v1\n');

    // A bad generation is refused before anything changes.
    await tamper(a, 2, 'archive', flip);
    const f = await failure(driver.restore(a, { generation: 2 }));
    expect(f.code).toBe('snapshot_unusable');
    expect(f.message).toMatch(/generation 2: checksum mismatch/);
    expect((await driver.status(a)).state).toBe('running');
    expect((await sh(a, 'cat /workspace/s')).stdout).toBe('v1\n');
    expect((await failure(driver.restore(a, { generation: 99 }))).code).toBe('snapshot_missing');

    // `before`: the newest good generation older than one that failed (a crash-loop replacement).
    const back = await driver.restore(a, { before: 4, snapshotFirst: false });
    expect(back).toMatchObject({ generation: 3, skipped: [] });
    await driver.ensure(h.spec(a));
    expect((await sh(a, 'cat /workspace/s')).stdout).toBe('v3\n');
  }, h.timeoutMs);
}
