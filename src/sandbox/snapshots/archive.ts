/**
 * The tar of a workspace, in and out.
 *
 * In: the engine archives `/workspace` as `workspace/…`; a snapshot stores names relative to the
 * workspace (`notes/a.txt`), so a restore can only ever name paths inside it.
 *
 * Out: a stored archive is hostile until proven otherwise (a tampered store, a bug). Measured on
 * Docker 20.10 (notes/snapshots.md): putArchive into a container with a read-only root refuses
 * `../` names, hard links out and relative symlinks that point out, but maps absolute names into
 * the destination and — the dangerous one — follows a symlink planted by an earlier entry:
 * `l -> /etc` then `l/evil` writes /etc/evil into the container's own root filesystem. So every
 * restore first passes `checkEntry` over the whole archive (refusing the generation on any
 * violation), and the bytes handed to the engine are re-packed by `restorable`, which checks
 * again and normalises ownership and modes.
 */
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import tar, { type Header as TarHeader } from 'tar-stream';
import { SANDBOX_GID, SANDBOX_UID, WORKSPACE } from '../layout.js';
import type { ArchiveCounts } from './types.js';

type Header = Partial<TarHeader> & Pick<TarHeader, 'name'>;

/** Rewrites the engine's `workspace/…` archive to names relative to the workspace, counting as it goes. */
export function fromEngineArchive(engine: Readable, top = path.posix.basename(WORKSPACE)): { archive: Readable; counts: Promise<ArchiveCounts> } {
  const extract = tar.extract();
  const pack = tar.pack();
  const counts: ArchiveCounts = { files: 0, entries: 0 };
  const strip = (name: string) => name.replace(new RegExp(`^${top}(/|$)`), '');
  let settle!: { resolve: (c: ArchiveCounts) => void; reject: (e: Error) => void };
  const done = new Promise<ArchiveCounts>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => undefined); // observed by the store; never an unhandled rejection here
  extract.on('entry', (header, stream, next) => {
    const rel = strip(header.name);
    if (rel === '' || rel === '/' || rel === header.name) {
      // The workspace directory itself, or anything not under it: not part of the snapshot.
      stream.resume();
      stream.on('end', next);
      return;
    }
    stream.on('error', () => undefined); // reported by the extractor's own error
    header.name = rel;
    if (header.type === 'link' && header.linkname) header.linkname = strip(header.linkname);
    counts.entries++;
    if (header.type === 'file' || header.type === 'contiguous-file') counts.files++;
    stream.pipe(pack.entry(header, next));
  });
  extract.on('finish', () => {
    pack.finalize();
    settle.resolve(counts);
  });
  const out = new PassThrough();
  const fail = (err: Error) => {
    settle.reject(err);
    out.destroy(err);
  };
  extract.on('error', fail);
  engine.on('error', (err) => extract.destroy(err));
  engine.pipe(extract);
  pack.pipe(out);
  return { archive: out, counts: done };
}

/** Entry types a workspace can hold. No device nodes: the sandbox user can never make one. */
const ALLOWED_TYPES = new Set(['file', 'directory', 'symlink', 'link', 'fifo']);

/** A name relative to the workspace, or why it is unsafe. Trailing slashes and a leading `./` are dropped. */
export function snapshotEntryName(raw: string): { name: string } | { unsafe: string } {
  const name = raw.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
  if (name === '' || name === '.') return { unsafe: 'an entry for the workspace root' };
  if (name.startsWith('/')) return { unsafe: `absolute path ${JSON.stringify(raw.slice(0, 200))}` };
  if (name.includes('\u0000')) return { unsafe: 'NUL in a name' };
  if (name.split('/').some((p) => p === '..' || p === '.' || p === '')) return { unsafe: `path with "..", "." or empty segments: ${JSON.stringify(raw.slice(0, 200))}` };
  return { name };
}

/** State of one pass over an archive: what each name became. */
export type EntryState = Map<string, string>;

/**
 * Checks one entry against the ones before it; returns why it is unsafe, or undefined. An entry
 * must have a safe relative name, an allowed type, a name no earlier entry had, no earlier
 * symlink (or non-directory) among its ancestors, and a hard link must name an earlier regular file.
 */
export function checkEntry(h: Header, seen: EntryState): string | undefined {
  const n = snapshotEntryName(h.name);
  if ('unsafe' in n) return n.unsafe;
  const type = h.type ?? 'file';
  if (!ALLOWED_TYPES.has(type)) return `entry ${JSON.stringify(n.name.slice(0, 200))} is a ${type}`;
  if (seen.has(n.name)) return `entry ${JSON.stringify(n.name.slice(0, 200))} appears twice`;
  const parts = n.name.split('/');
  for (let i = 1; i < parts.length; i++) {
    const parent = parts.slice(0, i).join('/');
    const t = seen.get(parent);
    if (t !== undefined && t !== 'directory') return `entry ${JSON.stringify(n.name.slice(0, 200))} lies under ${t} ${JSON.stringify(parent.slice(0, 200))}`;
  }
  if (type === 'link') {
    const target = snapshotEntryName(h.linkname ?? '');
    if ('unsafe' in target) return `hard link ${JSON.stringify(n.name.slice(0, 200))} to an unsafe target: ${target.unsafe}`;
    if (seen.get(target.name) !== 'file') return `hard link ${JSON.stringify(n.name.slice(0, 200))} to ${JSON.stringify(target.name.slice(0, 200))}, which is not an earlier file`;
  }
  seen.set(n.name, type === 'link' ? 'file' : type);
  return undefined;
}

/**
 * A relative symlink target resolved against the workspace, the way the engine checks it. Links
 * that leave the workspace are refused by the engine's extractor; as an absolute target they
 * resolve the same inside the sandbox (`..` stops at `/`) and are accepted.
 */
export function symlinkTarget(name: string, linkname: string): string {
  if (linkname.startsWith('/')) return linkname;
  const resolved = path.posix.normalize(path.posix.join(WORKSPACE, path.posix.dirname(name), linkname));
  return resolved === WORKSPACE || resolved.startsWith(`${WORKSPACE}/`) ? linkname : resolved;
}

/** The header a restore writes: relative name, the sandbox user's ownership, no set-id bits. */
export function restoredHeader(h: Header): Header {
  const name = (snapshotEntryName(h.name) as { name: string }).name;
  const out: Header = {
    name: h.type === 'directory' ? `${name}/` : name, type: h.type ?? 'file', size: h.size, mtime: h.mtime,
    mode: (h.mode ?? (h.type === 'directory' ? 0o755 : 0o644)) & 0o1777,
    uid: SANDBOX_UID, gid: SANDBOX_GID, uname: '', gname: '',
  };
  if (h.type === 'symlink') out.linkname = symlinkTarget(name, h.linkname ?? '');
  if (h.type === 'link') out.linkname = (snapshotEntryName(h.linkname ?? '') as { name: string }).name;
  return out;
}

/**
 * Re-packs a verified archive for the engine: every entry checked again (a violation aborts the
 * stream, so a half-written restore is failed, never started) and given `restoredHeader`.
 */
export function restorable(verified: Readable): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  const out = new PassThrough();
  const seen: EntryState = new Map();
  extract.on('entry', (header, stream, next) => {
    stream.on('error', () => undefined); // reported by the extractor's own error
    const why = checkEntry(header, seen);
    if (why) {
      stream.resume();
      extract.destroy(new Error(`unsafe snapshot entry: ${why}`));
      return;
    }
    stream.pipe(pack.entry(restoredHeader(header), next));
  });
  extract.on('finish', () => pack.finalize());
  extract.on('error', (err) => out.destroy(err));
  verified.on('error', (err) => extract.destroy(err));
  pack.on('error', (err) => out.destroy(err));
  verified.pipe(extract);
  pack.pipe(out);
  return out;
}
