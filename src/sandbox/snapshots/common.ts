/** What both snapshot stores share: names, manifests, metadata bounds, per-agent serialization. */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { z } from 'zod';
import { AgentVmError } from '../../errors.js';
import { storable } from '../../text.js';
import { assertAgentId } from '../spec.js';
import { MANIFEST_FORMAT, type ArchiveCounts, type SnapshotManifest, type SnapshotMeta, type StoredGeneration } from './types.js';

/** Generation numbers in names are zero-padded so names sort like numbers. */
const DIGITS = 10;
export const MAX_GENERATION = 10 ** DIGITS - 1;

export function archiveName(generation: number): string {
  return `${String(generation).padStart(DIGITS, '0')}.tar`;
}

export function manifestName(generation: number): string {
  return `${String(generation).padStart(DIGITS, '0')}.json`;
}

/** `0000000007.tar` → {generation: 7, kind: 'archive'}; anything else (temp files) → undefined. */
export function parseName(name: string): { generation: number; kind: 'archive' | 'manifest' } | undefined {
  const m = /^(\d{10})\.(tar|json)$/.exec(name);
  if (!m) return undefined;
  const generation = Number(m[1]);
  if (generation < 1) return undefined;
  return { generation, kind: m[2] === 'tar' ? 'archive' : 'manifest' };
}

export function checkAgent(agentId: string): void {
  assertAgentId(agentId);
}

export function checkGeneration(generation: number): void {
  if (!Number.isSafeInteger(generation) || generation < 1 || generation > MAX_GENERATION) {
    throw new AgentVmError('snapshot_generation_invalid', `snapshot generation must be a whole number from 1, got ${JSON.stringify(generation)}`, { status: 400 });
  }
}

export function checkKeep(keep: number): number {
  if (!Number.isSafeInteger(keep) || keep < 1 || keep > 1000) {
    throw new AgentVmError('config_invalid', `snapshots to keep must be 1–1000, got ${keep}`, { status: 400 });
  }
  return keep;
}

/** Caller metadata, bounded: the session ids come from the agent, so they are hostile. */
export function boundedMeta(meta: SnapshotMeta | undefined): Pick<SnapshotManifest, 'reason' | 'sessions' | 'release'> {
  if (!meta) return {};
  return {
    ...(meta.reason !== undefined ? { reason: storable(String(meta.reason), 64) } : {}),
    ...(meta.sessions !== undefined ? { sessions: meta.sessions.slice(0, 64).map((s) => storable(String(s), 256)) } : {}),
    ...(meta.release !== undefined ? { release: storable(String(meta.release), 512) } : {}),
  };
}

const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  agentId: z.string(),
  generation: z.number().int().min(1),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().min(0),
  files: z.number().int().min(0),
  entries: z.number().int().min(0),
  createdAt: z.string(),
  reason: z.string().optional(),
  sessions: z.array(z.string()).optional(),
  release: z.string().optional(),
});

export function makeManifest(agentId: string, generation: number, sha256: string, bytes: number, counts: ArchiveCounts, meta?: SnapshotMeta): SnapshotManifest {
  return {
    format: MANIFEST_FORMAT, agentId, generation, sha256, bytes, files: counts.files, entries: counts.entries,
    createdAt: new Date().toISOString(), ...boundedMeta(meta),
  };
}

/** A stored manifest, read back: anything that does not parse, or names another agent or generation, is an error. */
export function parseManifest(text: string, agentId: string, generation: number): StoredGeneration {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { generation, manifestError: 'manifest is not JSON' };
  }
  const r = manifestSchema.safeParse(raw);
  if (!r.success) return { generation, manifestError: `manifest invalid: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ').slice(0, 300)}` };
  const m = r.data as SnapshotManifest;
  if (m.agentId !== agentId || m.generation !== generation) {
    return { generation, manifestError: `manifest names agent ${JSON.stringify(m.agentId).slice(0, 80)} generation ${m.generation}, stored as ${agentId} generation ${generation}` };
  }
  return { generation, manifest: m };
}

/** Counts and hashes the bytes passing through. */
export class HashingCounter extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/** Serializes async work per key (an agent's writes); different keys run in parallel. */
export function keyedLock(): <T>(key: string, fn: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<unknown>>();
  return <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const prev = tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return next;
  };
}

export function missingSnapshot(agentId: string, generation: number, where: string): AgentVmError {
  return new AgentVmError('snapshot_missing', `agent ${agentId} has no snapshot generation ${generation} in ${where}`, { status: 404 });
}

/** Generations older than the newest `keep`, given every generation number present (any order). */
export function prunable(generations: number[], keep: number): number[] {
  return [...new Set(generations)].sort((a, b) => b - a).slice(keep);
}
