/**
 * What every SnapshotStore guarantees (src/sandbox/snapshots/types.ts), as one suite the local
 * directory store and the S3 store both run: put/list/read, verification of what comes back,
 * keep-N, atomicity (an aborted stream, a killed writer process) and serialized writes.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { isAgentVmError } from '../../src/errors.js';
import { chooseGeneration, SnapshotRefusedError, verifyGeneration } from '../../src/sandbox/snapshots/verify.js';
import type { ArchiveCounts, SnapshotStore } from '../../src/sandbox/snapshots/types.js';
import { agentId } from '../helpers/env.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface SnapshotStoreHarness {
  name: string;
  /** A fresh, empty store (its own directory or prefix). */
  make(keep?: number): Promise<SnapshotStore>;
  /** Rewrites a stored object's bytes behind the store's back (a corrupted disk, a tampered bucket). */
  tamper(store: SnapshotStore, agentId: string, generation: number, what: 'archive' | 'manifest', change: (bytes: Buffer) => Buffer): Promise<void>;
  /** Options for test/helpers/snapshot-writer.ts to open the same store in another process. */
  writerOptions(store: SnapshotStore): unknown;
  /** Bytes the writer sends before it is killed (past the first multipart part, for S3). */
  killAfterBytes: number;
}

type Entry = { name: string; type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device'; data?: string; linkname?: string };

/** A tar of `entries` and what a writer would count in it. */
export async function tarOf(entries: Entry[]): Promise<{ bytes: Buffer; counts: ArchiveCounts }> {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? 'file';
    if (type === 'file') pack.entry({ name: e.name, type, size: Buffer.byteLength(e.data ?? '') }, e.data ?? '');
    else pack.entry({ name: e.name, type, ...(e.linkname !== undefined ? { linkname: e.linkname } : {}) });
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  return { bytes: Buffer.concat(chunks), counts: { files: entries.filter((e) => (e.type ?? 'file') === 'file').length, entries: entries.length } };
}

async function putTar(store: SnapshotStore, agent: string, entries: Entry[], meta = {}) {
  const t = await tarOf(entries);
  return { manifest: await store.put(agent, Readable.from([t.bytes]), t.counts, meta), bytes: t.bytes };
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** The generation chooseGeneration picks (released again at once). */
async function newestGood(store: SnapshotStore, agent: string): Promise<number | undefined> {
  const c = await chooseGeneration(store, agent, { purpose: 'test' });
  await c.verified?.dispose();
  return c.verified?.manifest.generation;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return isAgentVmError(err) ? err.code : String(err);
  }
}

/** A stream that sends `bytes` and then fails, as a dying engine connection would. */
function abortedAfter(bytes: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= bytes) return void this.destroy(new Error('connection reset (test)'));
      const n = Math.min(64 * 1024, bytes - sent);
      sent += n;
      this.push(Buffer.alloc(n, 1));
    },
  });
}

export function describeSnapshotStore(h: SnapshotStoreHarness): void {
  describe(`SnapshotStore contract: ${h.name}`, () => {
    it('stores generations with a manifest of their bytes, newest first, and reads them back', async () => {
      const store = await h.make();
      const a = agentId('gen');
      expect(await store.list(a)).toEqual([]);
      const one = await putTar(store, a, [{ name: 'notes/', type: 'directory' }, { name: 'notes/a.txt', data: 'first' }], { reason: 'idle', sessions: ['s-1', 'x\u0000y'], release: 'sha256:abc' });
      const two = await putTar(store, a, [{ name: 'b.txt', data: 'second' }]);
      expect(one.manifest).toMatchObject({
        format: 1, agentId: a, generation: 1, bytes: one.bytes.length, files: 1, entries: 2, reason: 'idle', sessions: ['s-1', 'x\u2400y'], release: 'sha256:abc',
        sha256: createHash('sha256').update(one.bytes).digest('hex'),
      });
      expect(Date.parse(one.manifest.createdAt)).not.toBeNaN();
      expect(two.manifest.generation).toBe(2);
      expect((await store.list(a)).map((g) => g.generation)).toEqual([2, 1]);
      expect((await store.read(a, 1).then(readAll)).equals(one.bytes)).toBe(true);
      expect(await code(store.read(a, 9))).toBe('snapshot_missing');
      expect(await store.agents()).toContain(a);
      for (const g of await store.list(a)) expect(await verifyGeneration(store, a, g)).toMatchObject({ ok: true });
      await store.close();
    });

    it('keeps the newest N generations and deletes older ones', async () => {
      const store = await h.make(3);
      const a = agentId('keep');
      for (let i = 1; i <= 5; i++) await putTar(store, a, [{ name: 'n.txt', data: String(i) }]);
      expect((await store.list(a)).map((g) => g.generation)).toEqual([5, 4, 3]);
      expect(await code(store.read(a, 2))).toBe('snapshot_missing');
      expect(await store.remove(a, 4)).toBe(1);
      expect((await store.list(a)).map((g) => g.generation)).toEqual([5, 3]);
      expect(await store.remove(a)).toBe(2);
      expect(await store.list(a)).toEqual([]);
    });

    it('refuses what does not match its manifest: flipped bytes, truncation, a lying manifest, a broken one', async () => {
      const store = await h.make();
      const a = agentId('verify');
      for (let i = 1; i <= 5; i++) await putTar(store, a, [{ name: 'f.txt', data: `content ${i}`.repeat(200) }]);
      await h.tamper(store, a, 5, 'archive', (b) => { const c = Buffer.from(b); c[600] = c[600]! ^ 0xff; return c; });
      await h.tamper(store, a, 4, 'archive', (b) => b.subarray(0, 700));
      await h.tamper(store, a, 3, 'manifest', (b) => Buffer.from(b.toString().replace(/"sha256": "[0-9a-f]+"/, `"sha256": "${'0'.repeat(64)}"`)));
      await h.tamper(store, a, 2, 'manifest', () => Buffer.from('{not json'));
      const byGen = new Map((await store.list(a)).map((g) => [g.generation, g]));
      const reason = async (g: number) => {
        const r = await verifyGeneration(store, a, byGen.get(g)!);
        return r.ok ? 'ok' : r.reason;
      };
      expect(await reason(5)).toMatch(/^checksum mismatch/);
      expect(await reason(4)).toMatch(/^truncated: 700 of \d+ bytes/);
      expect(await reason(3)).toMatch(/^checksum mismatch/);
      expect(await reason(2)).toBe('manifest is not JSON');
      expect(await reason(1)).toBe('ok');

      const choice = await chooseGeneration(store, a, { purpose: 'test' });
      expect(choice.verified?.manifest.generation).toBe(1);
      expect(choice.skipped.map((s) => s.generation)).toEqual([5, 4, 3, 2]);
      expect((await readAll(choice.verified!.open())).toString()).toContain('content 1');
      await choice.verified!.dispose();

      await h.tamper(store, a, 1, 'archive', (b) => b.subarray(0, 10));
      const refused = await chooseGeneration(store, a, { purpose: 'wake it' }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(SnapshotRefusedError);
      expect((refused as SnapshotRefusedError).skipped).toHaveLength(5);
      expect((refused as Error).message).toMatch(new RegExp(`^agent ${a}: cannot wake it: none of its 5 snapshot generations .* can be restored \\(generation 5: checksum mismatch`));
      expect((refused as Error).message).toContain('It was not given an empty workspace');
      expect(await chooseGeneration(store, agentId('none'), { purpose: 'x' })).toEqual({ verified: undefined, skipped: [], considered: 0 });
    });

    it('refuses a generation whose tar would write outside the workspace, even with a true checksum', async () => {
      const store = await h.make();
      const hostile: Array<[string, Entry[]]> = [
        ['dot-dot', [{ name: '../escape.txt', data: 'x' }]],
        ['absolute', [{ name: '/etc/evil', data: 'x' }]],
        ['write through a symlink', [{ name: 'l', type: 'symlink', linkname: '/etc' }, { name: 'l/evil', data: 'x' }]],
        ['hard link out', [{ name: 'h', type: 'link', linkname: '../../etc/passwd' }]],
        ['device', [{ name: 'null', type: 'character-device' }]],
        ['twice', [{ name: 'a', data: 'x' }, { name: 'a', type: 'symlink', linkname: '/etc/passwd' }]],
      ];
      for (const [label, entries] of hostile) {
        const a = agentId('hostile');
        await putTar(store, a, entries);
        const [g] = await store.list(a);
        const r = await verifyGeneration(store, a, g!);
        expect(r.ok, label).toBe(false);
        expect(r.ok ? '' : r.reason, label).toMatch(/^unsafe entry: /);
      }
      // Symlinks that point anywhere are workspace content (made by the agent): kept.
      const a = agentId('links');
      await putTar(store, a, [{ name: 'up', type: 'symlink', linkname: '../../..' }, { name: 'etc', type: 'symlink', linkname: '/etc' }]);
      expect(await verifyGeneration(store, a, (await store.list(a))[0]!)).toMatchObject({ ok: true });
    });

    it('leaves the previous generation current when a write is aborted half-way', async () => {
      const store = await h.make();
      const a = agentId('abort');
      await putTar(store, a, [{ name: 'kept.txt', data: 'good' }]);
      for (const size of [100_000, 10 * 1024 * 1024]) {
        expect(await code(store.put(a, abortedAfter(size), { files: 1, entries: 1 }))).toMatch(/connection reset|snapshot_store_error/);
      }
      const failedCounts = store.put(a, Readable.from([Buffer.alloc(1024)]), Promise.reject(new Error('the archive was not readable')));
      expect(await code(failedCounts)).toMatch(/not readable/);
      const gens = await store.list(a);
      expect(gens.map((g) => g.generation)).toEqual([1]);
      expect(await newestGood(store, a)).toBe(1);
      const next = await putTar(store, a, [{ name: 'n.txt', data: 'next' }]);
      expect(next.manifest.generation).toBeGreaterThan(1);
      expect(await verifyGeneration(store, a, (await store.list(a))[0]!)).toMatchObject({ ok: true });
    });

    it('leaves the previous generation current when the writing process is killed', async () => {
      const store = await h.make();
      const a = agentId('kill');
      await putTar(store, a, [{ name: 'kept.txt', data: 'good' }]);
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/helpers/snapshot-writer.ts'), JSON.stringify(h.writerOptions(store)), a, String(h.killAfterBytes)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.toString().includes('writing') && resolve());
        child.once('exit', () => reject(new Error(`the writer exited before writing: ${stderr.slice(0, 2000)}`)));
      });
      child.kill('SIGKILL');
      await exited;
      expect((await store.list(a)).map((g) => g.generation)).toEqual([1]);
      expect(await newestGood(store, a)).toBe(1);
      const next = await putTar(store, a, [{ name: 'n.txt', data: 'after the kill' }]);
      expect(await verifyGeneration(store, a, (await store.list(a)).find((g) => g.generation === next.manifest.generation)!)).toMatchObject({ ok: true });
    }, 60_000);

    it('serializes concurrent writes of one agent: distinct generations, each manifest true to its own bytes', async () => {
      const store = await h.make(10);
      const a = agentId('race');
      const puts = await Promise.all([1, 2, 3, 4, 5].map(async (i) => {
        const t = await tarOf([{ name: `f${i}.txt`, data: `writer ${i}`.repeat(100 * i) }]);
        // Each stream dribbles out in pieces, so unserialized writes would interleave.
        const parts = [t.bytes.subarray(0, 512), t.bytes.subarray(512)];
        const m = await store.put(a, Readable.from((async function* () { for (const p of parts) { await new Promise((r) => setTimeout(r, 5)); yield p; } })()), t.counts);
        return { m, sha: createHash('sha256').update(t.bytes).digest('hex') };
      }));
      expect(new Set(puts.map((p) => p.m.generation)).size).toBe(5);
      for (const p of puts) expect(p.m.sha256).toBe(p.sha);
      for (const g of await store.list(a)) expect(await verifyGeneration(store, a, g)).toMatchObject({ ok: true });
    });
  });
}
