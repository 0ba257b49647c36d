/**
 * The snapshot store seam. A snapshot is a **generation**: one tar of an agent's /workspace (entry
 * names relative to the workspace) plus a manifest describing it. Generations of one agent are
 * numbered 1, 2, 3, … and never rewritten; the newest `keep` are kept.
 *
 * What every store guarantees (test/contracts/snapshot-store.ts runs against each):
 *   - A generation exists only once its archive AND its manifest are completely stored; the
 *     manifest is written last. A write that dies half-way (an aborted stream, a killed process)
 *     leaves no new generation: the previous one stays the newest.
 *   - The manifest's `sha256` and `bytes` are computed by the store from the bytes it stored.
 *   - Writes of one agent are serialized within a process; generation numbers only grow.
 *   - After a successful put, generations older than the newest `keep` are deleted.
 *
 * Deliberately left out:
 *   - Verification. A store hands back bytes as stored; `verify.ts` checks them against the
 *     manifest (and the tar's safety) before anything is restored. A checksum detects corruption
 *     and truncation, not a writer who rewrites both archive and manifest: whoever can write the
 *     store can choose an agent's next workspace (restores still never write outside it).
 *   - Cross-process serialization of one agent's writes. One gateway unit holds an agent's lease;
 *     the local store also refuses to overwrite a generation another process wrote (hard links).
 *   - Encryption at rest: use the bucket's (SSE) or the disk's.
 */
import type { Readable } from 'node:stream';

export const MANIFEST_FORMAT = 1;

/** Why a generation was taken; free text is allowed for callers with their own reasons. */
export type SnapshotReason = 'idle' | 'periodic' | 'destroy' | 'operator' | 'pre-restore' | (string & {});

/** What a caller may attach to a generation (all optional). Strings are bounded and made storable. */
export interface SnapshotMeta {
  reason?: SnapshotReason;
  /** The agent's ACP session ids at the time (so a restored agent can `session/load` them). */
  sessions?: string[];
  /** The release (image digest, slot) the agent was running. */
  release?: string;
}

export interface SnapshotManifest {
  format: typeof MANIFEST_FORMAT;
  agentId: string;
  generation: number;
  /** Hex sha256 of the archive bytes as stored. */
  sha256: string;
  /** Archive size in bytes. */
  bytes: number;
  /** Regular files in the archive. */
  files: number;
  /** Every entry (files, directories, links). */
  entries: number;
  /** ISO-8601. */
  createdAt: string;
  reason?: string;
  sessions?: string[];
  release?: string;
}

/** One listed generation. `manifestError` is set (and `manifest` unset) when its manifest cannot be read. */
export interface StoredGeneration {
  generation: number;
  manifest?: SnapshotManifest;
  manifestError?: string;
}

/** What the writer knows only once the archive has been read to its end. */
export interface ArchiveCounts {
  files: number;
  entries: number;
}

export interface SnapshotStore {
  readonly kind: 'local' | 's3';
  /** Where the store is, for messages: a directory or `s3://bucket/prefix`. Never credentials. */
  readonly location: string;
  /** How many generations per agent are kept. */
  readonly keep: number;
  /**
   * Stores `archive` as the agent's next generation. `counts` resolves once the archive has been
   * read through (the caller counts while producing it). Rejects, leaving no generation, if the
   * archive stream errors or `counts` rejects.
   */
  put(agentId: string, archive: Readable, counts: Promise<ArchiveCounts> | ArchiveCounts, meta?: SnapshotMeta): Promise<SnapshotManifest>;
  /** The agent's generations, newest first (complete ones only: a manifest was written). */
  list(agentId: string): Promise<StoredGeneration[]>;
  /** The archive bytes as stored; `snapshot_missing` if there is no such archive. */
  read(agentId: string, generation: number): Promise<Readable>;
  /**
   * A local file holding the archive, when the store keeps one (the local store), so a verifier
   * can read the very bytes it later restores (an open descriptor survives pruning).
   */
  localPath?(agentId: string, generation: number): string;
  /** Where a generation's archive is, for messages (a path or an s3:// URL). */
  describe(agentId: string, generation: number): string;
  /** Deletes one generation, or every generation of the agent; returns how many were deleted. */
  remove(agentId: string, generation?: number): Promise<number>;
  /** Agents that have at least one stored object. */
  agents(): Promise<string[]>;
  close(): Promise<void>;
}
