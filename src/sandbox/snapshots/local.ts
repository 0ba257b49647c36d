/**
 * The default snapshot store: a directory on the gateway host (AGENTVM_DATA_DIR/snapshots), one
 * folder per agent holding `<generation>.tar` and `<generation>.json`.
 *
 * Atomicity: each file is written under a temporary name, fsynced, then hard-linked to its final
 * name (a link never replaces an existing name, so two writers can never overwrite each other's
 * generation) and the folder fsynced; the manifest goes last. A process killed at any point leaves
 * at most a temporary file or an archive without a manifest, neither of which is a generation;
 * later writes sweep them once they are old enough not to be another writer's work in progress.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AGENT_ID_PATTERN } from '../spec.js';
import {
  HashingCounter, archiveName, checkAgent, checkGeneration, checkKeep, keyedLock, makeManifest, manifestName, missingSnapshot,
  parseManifest, parseName, prunable,
} from './common.js';
import type { SnapshotStore, StoredGeneration } from './types.js';

/** Leftovers younger than this may be another writer's work in progress. */
const STALE_MS = 10 * 60_000;

export interface LocalSnapshotStoreOptions {
  dir: string;
  /** Generations kept per agent (default 5). */
  keep?: number;
}

async function fsyncPath(p: string): Promise<void> {
  const h = await fs.open(p, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Links `tmp` to `final` unless `final` exists; true when linked. */
async function linkNew(tmp: string, final: string): Promise<boolean> {
  try {
    await fs.link(tmp, final);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

export function createLocalSnapshotStore(o: LocalSnapshotStoreOptions): SnapshotStore & { localPath(agentId: string, generation: number): string } {
  const root = path.resolve(o.dir);
  const keep = checkKeep(o.keep ?? 5);
  const lock = keyedLock();
  const folder = (agentId: string) => path.join(root, agentId);

  async function names(agentId: string): Promise<string[]> {
    return fs.readdir(folder(agentId)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
  }

  async function listLocked(agentId: string): Promise<StoredGeneration[]> {
    const out: StoredGeneration[] = [];
    for (const n of await names(agentId)) {
      const p = parseName(n);
      if (p?.kind !== 'manifest') continue;
      const text = await fs.readFile(path.join(folder(agentId), n), 'utf8').catch(() => undefined);
      out.push(text === undefined ? { generation: p.generation, manifestError: 'manifest unreadable' } : parseManifest(text, agentId, p.generation));
    }
    return out.sort((a, b) => b.generation - a.generation);
  }

  /** Deletes generations past `keep`, and leftovers of dead writers. */
  async function tidy(agentId: string): Promise<void> {
    const dir = folder(agentId);
    const all = await names(agentId);
    const complete = all.map(parseName).filter((p) => p?.kind === 'manifest').map((p) => p!.generation);
    const old = new Set(prunable(complete, keep));
    const kept = complete.filter((g) => !old.has(g));
    const oldestKept = kept.length > 0 ? Math.min(...kept) : 0;
    const now = Date.now();
    for (const n of all) {
      const p = parseName(n);
      const file = path.join(dir, n);
      if (p && (old.has(p.generation) || p.generation < oldestKept)) {
        // The manifest first: a generation without it no longer exists, whatever remains.
        if (p.kind === 'archive') await fs.rm(path.join(dir, manifestName(p.generation)), { force: true });
        await fs.rm(file, { force: true });
        continue;
      }
      const orphan = p?.kind === 'archive' && !complete.includes(p.generation);
      if (orphan || n.startsWith('.tmp-')) {
        const st = await fs.stat(file).catch(() => undefined);
        if (st && now - st.mtimeMs > STALE_MS) await fs.rm(file, { force: true });
      }
    }
  }

  const store: SnapshotStore & { localPath(agentId: string, generation: number): string } = {
    kind: 'local',
    location: root,
    keep,

    put(agentId, archive, counts, meta) {
      checkAgent(agentId);
      // Observed now: it may reject while the archive is still being written.
      const counted = Promise.resolve(counts);
      counted.catch(() => undefined);
      return lock(agentId, async () => {
        const dir = folder(agentId);
        await fs.mkdir(dir, { recursive: true, mode: 0o700 });
        const tag = `${process.pid}-${randomBytes(6).toString('hex')}`;
        const tmpArchive = path.join(dir, `.tmp-${tag}.tar`);
        const tmpManifest = path.join(dir, `.tmp-${tag}.json`);
        try {
          const counter = new HashingCounter();
          await pipeline(archive, counter, createWriteStream(tmpArchive, { mode: 0o600 }));
          await fsyncPath(tmpArchive);
          const c = await counted;
          const taken = (await names(agentId)).map(parseName).filter((p) => p !== undefined).map((p) => p.generation);
          let generation = Math.max(0, ...taken) + 1;
          while (!(await linkNew(tmpArchive, path.join(dir, archiveName(generation))))) generation++;
          checkGeneration(generation);
          const manifest = makeManifest(agentId, generation, counter.hash.digest('hex'), counter.bytes, c, meta);
          await fs.writeFile(tmpManifest, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
          await fsyncPath(tmpManifest);
          if (!(await linkNew(tmpManifest, path.join(dir, manifestName(generation))))) {
            throw new Error(`generation ${generation} of ${agentId} got a manifest from another writer`);
          }
          await fsyncPath(dir);
          await tidy(agentId);
          return manifest;
        } finally {
          await Promise.all([fs.rm(tmpArchive, { force: true }), fs.rm(tmpManifest, { force: true })]);
        }
      });
    },

    async list(agentId) {
      checkAgent(agentId);
      return listLocked(agentId);
    },

    async read(agentId, generation): Promise<Readable> {
      checkAgent(agentId);
      checkGeneration(generation);
      const file = store.localPath(agentId, generation);
      const h = await fs.open(file, 'r').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') throw missingSnapshot(agentId, generation, root);
        throw err;
      });
      return createReadStream('', { fd: h, autoClose: true });
    },

    localPath(agentId, generation) {
      checkAgent(agentId);
      checkGeneration(generation);
      return path.join(folder(agentId), archiveName(generation));
    },

    describe(agentId, generation) {
      return store.localPath(agentId, generation);
    },

    remove(agentId, generation) {
      checkAgent(agentId);
      return lock(agentId, async () => {
        const before = (await listLocked(agentId)).map((g) => g.generation);
        if (generation === undefined) {
          await fs.rm(folder(agentId), { recursive: true, force: true });
          return before.length;
        }
        checkGeneration(generation);
        await fs.rm(path.join(folder(agentId), manifestName(generation)), { force: true });
        await fs.rm(path.join(folder(agentId), archiveName(generation)), { force: true });
        return before.includes(generation) ? 1 : 0;
      });
    },

    async agents() {
      const entries = await fs.readdir(root, { withFileTypes: true }).catch(() => []);
      return entries.filter((e) => e.isDirectory() && AGENT_ID_PATTERN.test(e.name)).map((e) => e.name).sort();
    },

    async close() {
      // Nothing pooled: every operation opens and closes its own files.
    },
  };
  return store;
}
