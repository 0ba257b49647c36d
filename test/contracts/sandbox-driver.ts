/**
 * What every SandboxDriver guarantees (src/sandbox/types.ts), as one suite the Docker driver and
 * the fake driver both run. Isolation itself (users, capabilities, network, limits) is the
 * Docker driver's alone and is proven in test/sandbox*.test.ts; this is the functional contract
 * the gateway relies on.
 */
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';
import { afterAll, describe, expect, it } from 'vitest';
import { isAgentVmError } from '../../src/errors.js';
import { conversationPaths } from '../../src/sandbox/layout.js';
import type { SnapshotStore } from '../../src/sandbox/snapshots/types.js';
import type { OutboxEntry, SandboxDriver, SandboxSpec } from '../../src/sandbox/types.js';
import { agentId } from '../helpers/env.js';
import { describeSandboxSlots } from './sandbox-slots.js';
import { describeSandboxSnapshots } from './sandbox-snapshots.js';

export interface SandboxDriverHarness {
  name: string;
  driver: SandboxDriver;
  /** The local snapshot store the driver writes to (tests tamper with its files). */
  snapshots: SnapshotStore;
  /** A minimal valid spec for `id`. */
  spec(id: string, extra?: Partial<SandboxSpec>): SandboxSpec;
  /** The command that runs the reference agent in this driver's sandboxes. */
  referenceAgent: string[];
  /** Removes the workspace volume behind the driver's back. */
  loseWorkspace(id: string): Promise<void>;
  /** Deadline for tests that start agents (a busy 2-core machine). */
  timeoutMs: number;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return isAgentVmError(err) ? err.code : String(err);
  }
}

async function collect(it: AsyncIterable<OutboxEntry>): Promise<OutboxEntry[]> {
  const out: OutboxEntry[] = [];
  for await (const e of it) out.push(e);
  return out;
}

export function describeSandboxDriver(h: SandboxDriverHarness): void {
  const { driver } = h;
  const created = new Set<string>();
  const id = (label: string) => {
    const a = agentId(label);
    created.add(a);
    return a;
  };
  const sh = (a: string, script: string, timeoutMs = 20_000) => driver.exec(a, ['sh', '-c', script], { timeoutMs });

  afterAll(async () => {
    for (const a of created) {
      await driver.destroy(a, { finalSnapshot: false }).catch(() => undefined);
      await h.snapshots.remove(a).catch(() => undefined);
    }
  });

  describe(`SandboxDriver contract: ${h.name}`, () => {
    it('creates, reuses, stops and restarts a sandbox; the workspace survives sleep and a changed spec', async () => {
      const a = id('life');
      const first = await driver.ensure(h.spec(a));
      expect(first.action).toBe('created');
      expect(first.restored).toBe(false);
      expect((await driver.ensure(h.spec(a))).action).toBe('none');
      expect((await sh(a, 'echo kept > /workspace/note.txt')).exitCode).toBe(0);
      expect((await driver.status(a)).state).toBe('running');

      await driver.sleep(a);
      await driver.sleep(a); // a no-op on a stopped sandbox
      expect((await driver.status(a)).state).toBe('stopped');
      expect(await code(sh(a, 'true'))).toBe('sandbox_not_running');
      const woken = await driver.ensure(h.spec(a));
      expect(woken.action).toBe('started');
      expect(woken.containerId).toBe(first.containerId);

      const changed = await driver.ensure(h.spec(a, { env: { CHANGED: '1' } }));
      expect(changed.action).toBe('recreated');
      expect(changed.specHash).not.toBe(first.specHash);
      expect((await sh(a, 'cat /workspace/note.txt')).stdout).toBe('kept\n');
      expect((await driver.list()).map((s) => s.agentId)).toContain(a);
    }, h.timeoutMs);

    it('is idempotent under concurrent ensure calls', async () => {
      const a = id('concurrent');
      const handles = await Promise.all([driver.ensure(h.spec(a)), driver.ensure(h.spec(a)), driver.ensure(h.spec(a))]);
      expect(new Set(handles.map((x) => x.containerId)).size).toBe(1);
      expect(handles.map((x) => x.action).sort()).toEqual(['created', 'none', 'none']);
    }, h.timeoutMs);

    it('runs commands with exit codes, both streams, a timeout and an output cap; refuses a missing sandbox', async () => {
      const a = id('exec');
      await driver.ensure(h.spec(a));
      const r = await sh(a, 'echo out; echo err >&2; exit 3');
      expect(r).toMatchObject({ exitCode: 3, stdout: 'out\n', stderr: 'err\n', timedOut: false, truncated: false });
      const slow = await sh(a, 'sleep 30', 500);
      expect(slow.timedOut).toBe(true);
      expect(slow.exitCode).toBe(137); // killed at the deadline
      const big = await driver.exec(a, ['sh', '-c', 'head -c 100000 /dev/zero'], { timeoutMs: 20_000, maxOutputBytes: 1000 });
      expect(big.truncated).toBe(true);
      expect(big.stdout.length).toBeLessThanOrEqual(1000);
      // A command that does not exist exits 127, as in a shell, with the reason on stderr.
      const missing = await driver.exec(a, ['no-such-command-here', 'x'], { timeoutMs: 20_000 });
      expect(missing, JSON.stringify(missing)).toMatchObject({ exitCode: 127, stdout: '', timedOut: false });
      expect(missing.stderr).toMatch(/no-such-command-here/);
      expect(await code(sh(agentId('nobody'), 'true'))).toBe('sandbox_missing');
    }, h.timeoutMs);

    it("speaks ACP with the main process; a conversation's files come out of its own outbox only, and are removed when taken", async () => {
      const a = id('acp');
      await driver.ensure(h.spec(a, { command: h.referenceAgent, stdin: true }));
      const p1 = conversationPaths('local:x:one');
      const p2 = conversationPaths('local:x:two');
      for (const p of [p1, p2]) await driver.makeDirs(a, [p.outbox, p.inbox]);
      const io = await driver.attach(a);
      const conn = acp.client({ name: 'contract' }).connect(
        acp.ndJsonStream(Writable.toWeb(io.stdin as Writable) as WritableStream<Uint8Array>, Readable.toWeb(io.stdout as Readable) as ReadableStream<Uint8Array>),
      );
      const agent = conn.agent;
      try {
        await agent.request('initialize', { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
        const s1 = (await agent.request('session/new', { cwd: p1.cwd, mcpServers: [] })).sessionId;
        const s2 = (await agent.request('session/new', { cwd: p2.cwd, mcpServers: [] })).sessionId;
        await Promise.all([
          agent.request('session/prompt', { sessionId: s1, prompt: [{ type: 'text', text: 'write one.txt first' }] }),
          agent.request('session/prompt', { sessionId: s2, prompt: [{ type: 'text', text: 'sh printf two > outbox/two.txt' }] }),
        ]);
        expect(await collect(driver.readOutbox(a, p1.outbox))).toEqual([{ kind: 'file', name: 'one.txt', size: 5, data: Buffer.from('first') }]);
        expect(await collect(driver.readOutbox(a, p2.outbox))).toEqual([{ kind: 'file', name: 'two.txt', size: 3, data: Buffer.from('two') }]);
        await driver.removeFiles(a, p1.outbox, ['one.txt']);
        expect(await collect(driver.readOutbox(a, p1.outbox))).toEqual([]);
        // Left empty: a driver may skip reading it while unchanged, but never a file written since.
        const since = new Date();
        await driver.exec(a, ['sh', '-c', `printf late > ${p1.outboxPath}/late.txt`], { timeoutMs: 20_000 });
        expect(await collect(driver.readOutbox(a, p1.outbox, undefined, { unchangedSince: since }))).toEqual([{ kind: 'file', name: 'late.txt', size: 4, data: Buffer.from('late') }]);
        await driver.removeFiles(a, p1.outbox, ['late.txt']);
        expect(await collect(driver.readOutbox(a, p1.outbox, undefined, { unchangedSince: new Date(Date.now() + 5000) }))).toEqual([]);
        expect(await collect(driver.readOutbox(a, p2.outbox))).toHaveLength(1);
        expect(await code(driver.removeFiles(a, p1.outbox, ['../../other']))).toBe('file_name_invalid');
        expect(await collect(driver.readOutbox(a, 'conversations/none-such/outbox'))).toEqual([]);
      } finally {
        io.close();
        await io.closed;
      }
    }, h.timeoutMs);

    it('lets only regular files out, with a report for each refusal', async () => {
      const a = id('outbox');
      await driver.ensure(h.spec(a));
      await sh(a, [
        'mkdir -p /workspace/ob/sub',
        'printf ok > /workspace/ob/ok.txt',
        'printf deep > /workspace/ob/sub/deep.txt',
        'ln -s /etc/passwd /workspace/ob/passwd',
        'head -c 5000 /dev/zero > /workspace/ob/big.bin',
      ].join(' && '));
      const got = await collect(driver.readOutbox(a, 'ob', { maxFileBytes: 4096 }));
      const files = got.filter((e) => e.kind === 'file').map((e) => e.name).sort();
      const refused = Object.fromEntries(got.filter((e) => e.kind === 'refused').map((e) => [e.name, e.kind === 'refused' ? e.reason : '']));
      expect(files).toEqual(['ok.txt', 'sub/deep.txt']);
      expect(refused).toEqual({ passwd: 'symlink', 'big.bin': 'too_large' });

      await sh(a, 'rm -rf /workspace/ob2 && ln -s /etc /workspace/ob2');
      const linked = await collect(driver.readOutbox(a, 'ob2'));
      expect(linked).toHaveLength(1);
      expect(linked[0]).toMatchObject({ kind: 'refused', reason: 'symlink' });
    }, h.timeoutMs);

    it('writes files into the workspace under the names it reports, duplicates kept apart', async () => {
      const a = id('inbox');
      await driver.ensure(h.spec(a));
      const paths = await driver.writeFiles(a, 'conversations/c/inbox/e1', [
        { name: 'image.png', data: Buffer.from('A') },
        { name: 'image.png', data: Buffer.from('B') },
        { name: '../../escape.txt', data: Buffer.from('C') },
      ]);
      expect(new Set(paths).size).toBe(3);
      for (const p of paths) expect(p.startsWith('/workspace/conversations/c/inbox/e1/')).toBe(true);
      const r = await sh(a, `cat ${paths.map((p) => `'${p}'`).join(' ')}`);
      expect(r.stdout).toBe('ABC');
    }, h.timeoutMs);

    it('makes directories in one call, keeping what is in them; refuses a path out of the workspace', async () => {
      const a = id('dirs');
      await driver.ensure(h.spec(a));
      const p = conversationPaths('local:x:dirs');
      await driver.makeDirs(a, [p.outbox, p.inbox]);
      await sh(a, `echo kept > '/workspace/${p.outbox}/f'`);
      await driver.makeDirs(a, [p.outbox, p.inbox]);
      const r = await sh(a, `cat '/workspace/${p.outbox}/f' && test -d '/workspace/${p.inbox}' && test -w '/workspace/${p.inbox}' && echo writable`);
      expect(r.stdout).toBe('kept\nwritable\n');
      expect(await code(driver.makeDirs(a, ['conversations/../../etc']))).toBe('workspace_dir_invalid');
      expect(await code(driver.makeDirs(agentId('nobody'), [p.outbox]))).toBe('sandbox_missing');
    }, h.timeoutMs);

    it('restores the workspace from its snapshot when the volume is gone', async () => {
      const a = id('restore');
      await driver.ensure(h.spec(a));
      await sh(a, 'mkdir -p /workspace/deep && echo kept > /workspace/deep/file');
      const snap = await driver.snapshot(a, { reason: 'idle', sessions: ['s1'] });
      expect(snap.bytes).toBeGreaterThan(0);
      await driver.sleep(a);
      await h.loseWorkspace(a);
      const back = await driver.ensure(h.spec(a));
      expect(back.restored).toBe(true);
      expect(back.restoredFrom).toMatchObject({ generation: snap.generation, sha256: snap.sha256, sessions: ['s1'], skipped: [] });
      expect((await sh(a, 'cat /workspace/deep/file')).stdout).toBe('kept\n');
    }, h.timeoutMs);

    it('reports a main process that ended, and destroy leaves nothing (twice is fine)', async () => {
      const a = id('end');
      await driver.ensure(h.spec(a, { command: ['sh', '-c', 'sleep 0.3; exit 7'] }));
      for (let i = 0; i < 100 && (await driver.status(a)).state === 'running'; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await driver.status(a)).toMatchObject({ state: 'stopped', exitCode: 7 });
      expect((await driver.destroy(a)).finalSnapshot?.generation).toBe(1); // from the stopped sandbox
      expect((await driver.destroy(a)).finalSnapshot).toBeNull();
      expect((await driver.status(a)).state).toBe('missing');
      expect((await driver.list()).map((s) => s.agentId)).not.toContain(a);
    }, h.timeoutMs);

    describeSandboxSnapshots({ driver, snapshots: h.snapshots, spec: h.spec, loseWorkspace: h.loseWorkspace, referenceAgent: h.referenceAgent, timeoutMs: h.timeoutMs, id });
    describeSandboxSlots({ driver, spec: h.spec, timeoutMs: h.timeoutMs, id });
  });
}
