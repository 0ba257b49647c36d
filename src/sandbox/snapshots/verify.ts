/**
 * Verification before restore: a generation is used only when its archive has the manifest's size
 * and sha256, parses as a tar whose every entry is safe (archive.ts), and holds the counted files.
 * The bytes verified are the bytes restored: the local store's file is kept open (pruning cannot
 * take it away), a remote archive is spooled to a private temp file while it is verified.
 *
 * `chooseGeneration` walks the agent's generations newest first and returns the first good one,
 * with every generation it skipped and why, so the caller can audit them. It never returns
 * "nothing" for an agent that has generations: if none is good it throws `SnapshotRefusedError`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { AgentVmError } from '../../errors.js';
import { checkEntry, type EntryState } from './archive.js';
import { HashingCounter } from './common.js';
import type { SnapshotManifest, SnapshotStore, StoredGeneration } from './types.js';

export interface GenerationProblem {
  generation: number;
  reason: string;
}

/** A verified generation, ready to be read (as often as needed) until disposed. */
export interface VerifiedGeneration {
  manifest: SnapshotManifest;
  open(): Readable;
  dispose(): Promise<void>;
}

export type VerifyOutcome = { ok: true; manifest: SnapshotManifest } | { ok: false; generation: number; reason: string };

/** Raised when an agent has snapshot generations and none of them can be restored. */
export class SnapshotRefusedError extends AgentVmError {
  readonly agentId: string;
  readonly skipped: GenerationProblem[];
  constructor(agentId: string, skipped: GenerationProblem[], message: string) {
    super('snapshot_unusable', message, { status: 409 });
    this.agentId = agentId;
    this.skipped = skipped;
  }
}

/** Parses a tar fed to it chunk by chunk; never throws at the writer, records the first problem. */
function tarChecker(): { write(chunk: Buffer): void; end(): Promise<{ files: number; entries: number; problem?: string }> } {
  const extract = tar.extract();
  const seen: EntryState = new Map();
  let files = 0;
  let entries = 0;
  let problem: string | undefined;
  const finished = new Promise<void>((resolve) => {
    extract.on('finish', resolve);
    extract.on('close', resolve);
    extract.on('error', (err) => {
      problem ??= `not a readable tar: ${err.message}`;
      resolve();
    });
  });
  extract.on('entry', (h, stream, next) => {
    const why = checkEntry(h, seen);
    if (why) problem ??= `unsafe entry: ${why}`;
    entries++;
    if ((h.type ?? 'file') === 'file') files++;
    // A cut archive destroys the entry being read too; the extractor's own error reports it.
    stream.on('error', () => undefined);
    stream.on('end', next);
    stream.resume();
  });
  return {
    write(chunk) {
      if (problem === undefined && !extract.destroyed) extract.write(chunk);
    },
    async end() {
      if (!extract.destroyed) extract.end(() => undefined);
      await finished;
      return { files, entries, ...(problem ? { problem } : {}) };
    },
  };
}

/** Streams `source` once: hash, size, tar safety; copies the bytes to `sink` when given. */
async function inspect(source: Readable, sink?: Writable): Promise<{ sha256: string; bytes: number; files: number; entries: number; problem?: string; readError?: string }> {
  const counter = new HashingCounter();
  const check = tarChecker();
  const tee = new Writable({
    write(chunk: Buffer, _enc, cb) {
      check.write(chunk);
      if (!sink) return cb();
      if (sink.write(chunk)) cb();
      else sink.once('drain', () => cb());
    },
    final(cb) {
      if (!sink) return cb();
      sink.end(cb);
    },
  });
  let readError: string | undefined;
  await pipeline(source, counter, tee).catch((err: Error) => (readError = err.message));
  const r = await check.end();
  return { sha256: counter.hash.digest('hex'), bytes: counter.bytes, ...r, ...(readError ? { readError } : {}) };
}

function judge(m: SnapshotManifest, got: Awaited<ReturnType<typeof inspect>>): string | undefined {
  if (got.readError) return `unreadable: ${got.readError.slice(0, 200)}`;
  if (got.bytes < m.bytes) return `truncated: ${got.bytes} of ${m.bytes} bytes`;
  if (got.bytes !== m.bytes) return `size mismatch: ${got.bytes} bytes, manifest says ${m.bytes}`;
  if (got.sha256 !== m.sha256) return `checksum mismatch: sha256 ${got.sha256.slice(0, 16)}…, manifest says ${m.sha256.slice(0, 16)}…`;
  if (got.problem) return got.problem;
  if (got.files !== m.files || got.entries !== m.entries) return `content mismatch: ${got.files} files / ${got.entries} entries, manifest says ${m.files} / ${m.entries}`;
  return undefined;
}

/**
 * Verifies one listed generation. With `keep`, a good one comes back open for reading; the
 * caller must dispose it.
 */
export async function verifyGeneration(store: SnapshotStore, agentId: string, g: StoredGeneration, keep = false): Promise<VerifyOutcome & { verified?: VerifiedGeneration }> {
  const m = g.manifest;
  if (!m) return { ok: false, generation: g.generation, reason: g.manifestError ?? 'manifest missing' };
  if (store.localPath) {
    const file = store.localPath(agentId, g.generation);
    const h = await fs.open(file, 'r').catch(() => undefined);
    if (!h) return { ok: false, generation: g.generation, reason: 'archive missing' };
    const read = () => createReadStream('', { fd: h, start: 0, autoClose: false });
    const why = judge(m, await inspect(read()));
    if (why || !keep) {
      await h.close();
      return why ? { ok: false, generation: g.generation, reason: why } : { ok: true, manifest: m };
    }
    return { ok: true, manifest: m, verified: { manifest: m, open: read, dispose: () => h.close() } };
  }
  let source: Readable;
  try {
    source = await store.read(agentId, g.generation);
  } catch (err) {
    return { ok: false, generation: g.generation, reason: `archive unreadable: ${(err as Error).message.slice(0, 200)}` };
  }
  const dir = keep ? await fs.mkdtemp(path.join(os.tmpdir(), 'agentvm-restore-')) : undefined;
  const spool = dir ? path.join(dir, 'archive.tar') : undefined;
  const dispose = async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  };
  const why = judge(m, await inspect(source, spool ? createWriteStream(spool, { mode: 0o600 }) : undefined));
  if (why || !keep) {
    await dispose();
    return why ? { ok: false, generation: g.generation, reason: why } : { ok: true, manifest: m };
  }
  return { ok: true, manifest: m, verified: { manifest: m, open: () => createReadStream(spool!), dispose } };
}

export interface Choice {
  /** Undefined when the agent has no generations at all. */
  verified: VerifiedGeneration | undefined;
  skipped: GenerationProblem[];
  /** How many generations were considered. */
  considered: number;
}

/**
 * The newest good generation (or exactly `generation`, or the newest good one older than
 * `before`). Throws SnapshotRefusedError when there were candidates and none was good, and
 * `snapshot_missing` when an exact generation does not exist.
 */
export async function chooseGeneration(store: SnapshotStore, agentId: string, o: { generation?: number; before?: number; purpose: string }): Promise<Choice> {
  const all = await store.list(agentId);
  let candidates = all;
  if (o.generation !== undefined) {
    candidates = all.filter((g) => g.generation === o.generation);
    if (candidates.length === 0) {
      throw new AgentVmError('snapshot_missing', `agent ${agentId} has no snapshot generation ${o.generation} in ${store.location}; list them with \`agent-vm agents snapshots ${agentId}\``, { status: 404 });
    }
  } else if (o.before !== undefined) {
    candidates = all.filter((g) => g.generation < o.before!);
  }
  const skipped: GenerationProblem[] = [];
  for (const g of candidates) {
    const r = await verifyGeneration(store, agentId, g, true);
    if (r.ok && r.verified) return { verified: r.verified, skipped, considered: candidates.length };
    if (!r.ok) skipped.push({ generation: r.generation, reason: r.reason });
  }
  if (candidates.length === 0 && all.length === 0) return { verified: undefined, skipped, considered: 0 };
  const list = skipped.map((s) => `generation ${s.generation}: ${s.reason}`).join('; ');
  const what = candidates.length === 0 ? `it has no snapshot generation older than ${o.before}` : `none of its ${candidates.length} snapshot generation${candidates.length === 1 ? '' : 's'} in ${store.location} can be restored (${list})`;
  throw new SnapshotRefusedError(
    agentId,
    skipped,
    `agent ${agentId}: cannot ${o.purpose}: ${what}. It was not given an empty workspace. Inspect them with \`agent-vm agents snapshots ${agentId}\`; to start it empty on purpose, delete them with \`agent-vm agents snapshots ${agentId} --delete --apply\`.`,
  );
}
