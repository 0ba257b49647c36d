/**
 * Files going INTO a sandbox (attachments for the agent's inbox), packed as a tar the engine
 * extracts into the workspace volume.
 *
 * Names are made safe and unique here, once, for every platform: adapters hand over the names
 * the platform gave (hostile: paths, control characters, duplicates), and the names this module
 * picks are both what is written and what the agent is told. Nothing can land outside the
 * target folder, and two attachments called `image.png` become `image.png` and `image-2.png`.
 *
 * Deliberately left out: keeping a file's original name when it is unsafe; the agent is told
 * the name actually written, never the platform's.
 */
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { AgentVmError } from '../errors.js';

/** The sandbox user; files it receives must be its own. */
const UID = 1000;
const GID = 1000;

/** Bytes, not characters: ext4 allows 255 bytes per name, and a `-N` suffix must still fit. */
const MAX_NAME_BYTES = 200;
const MAX_EXT_CHARS = 16;

/** Letters and digits of any script, combining marks, and a few punctuation marks; nothing invisible. */
const UNSAFE_CHAR = /[^\p{L}\p{M}\p{N}._ ()+-]/gu;

function utf8Bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** The longest prefix of `s` (whole code points) that fits `maxBytes` of UTF-8. */
function cutToBytes(s: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const ch of s) {
    bytes += utf8Bytes(ch);
    if (bytes > maxBytes) break;
    end += ch.length;
  }
  return s.slice(0, end);
}

function splitExt(name: string): { stem: string; ext: string } {
  const dot = name.lastIndexOf('.');
  if (dot <= 0 || name.length - dot > MAX_EXT_CHARS) return { stem: name, ext: '' };
  return { stem: name.slice(0, dot), ext: name.slice(dot) };
}

/** `stem` + `suffix` + `ext`, with the stem cut so the whole fits MAX_NAME_BYTES. */
function fitName(stem: string, suffix: string, ext: string): string {
  return `${cutToBytes(stem, MAX_NAME_BYTES - utf8Bytes(suffix) - utf8Bytes(ext))}${suffix}${ext}`;
}

/**
 * A file name safe to create in the inbox: no path (only the last segment of `/` or `\`
 * separated names), no leading dots (no hidden files), no control, format or invisible
 * characters (each becomes `_`), at most 200 bytes. `fallback` when nothing is left.
 */
export function safeFileName(name: string, fallback: string): string {
  const base = name.split(/[\\/]/).pop() ?? '';
  const cleaned = base.normalize('NFC').replace(UNSAFE_CHAR, '_').replace(/^[.\s]+/, '').replace(/[.\s]+$/, '');
  if (cleaned.length === 0) return fallback;
  const { stem, ext } = splitExt(cleaned);
  return fitName(stem, '', ext);
}

/**
 * The names `files` are written under, in order: each made safe (`safeFileName`, `file-N` when
 * nothing is left) and unique within the batch, ignoring case (`image.png`, `image-2.png`,
 * `IMAGE-3.PNG`), so two attachments never overwrite each other.
 */
export function inboxFileNames(files: ReadonlyArray<{ name: string }>): string[] {
  const taken = new Set<string>();
  return files.map((f, i) => {
    const safe = safeFileName(f.name, `file-${i + 1}`);
    const { stem, ext } = splitExt(safe);
    let name = safe;
    for (let n = 2; taken.has(name.toLowerCase()); n++) name = fitName(stem, `-${n}`, ext);
    taken.add(name.toLowerCase());
    return name;
  });
}

const DIR = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

export interface PackedFiles {
  /** Tar of `dir/…/name` entries relative to the workspace. */
  archive: Readable;
  /** The name each file was written under (see `inboxFileNames`), in the order given. */
  names: string[];
}

function checkDir(dir: string): void {
  if (!DIR.test(dir) || dir.split('/').some((s) => s === '..' || s === '.')) {
    throw new AgentVmError('bad_inbox_dir', `invalid inbox folder "${dir}"`, { status: 400 });
  }
}

/** Directory entries for each of `dirs` and its parents (each once), owned by the sandbox user. */
function addDirs(pack: tar.Pack, dirs: readonly string[], mtime: Date): void {
  for (const d of dirs) checkDir(d);
  const seen = new Set<string>();
  for (const dir of dirs) {
    const parts = dir.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const name = `${parts.slice(0, i).join('/')}/`;
      if (seen.has(name)) continue;
      seen.add(name);
      pack.entry({ name, type: 'directory', mode: 0o755, uid: UID, gid: GID, mtime });
    }
  }
}

/** A tar of directories only: each of `dirs` and its parents, owned by the sandbox user. */
export function packDirs(dirs: readonly string[]): Readable {
  const pack = tar.pack();
  addDirs(pack, dirs, new Date());
  pack.finalize();
  return pack as unknown as Readable;
}

/**
 * Packs `files` for extraction at the workspace root into `dir` (relative, e.g.
 * `conversations/x/inbox/ev1`), its parents included, all owned by the sandbox user. The names
 * returned are the names written: tell the agent those.
 */
export function packFiles(dir: string, files: ReadonlyArray<{ name: string; data: Buffer }>): PackedFiles {
  checkDir(dir);
  const names = inboxFileNames(files);
  const pack = tar.pack();
  const mtime = new Date();
  addDirs(pack, [dir], mtime);
  for (const [i, f] of files.entries()) {
    pack.entry({ name: `${dir}/${names[i]!}`, type: 'file', mode: 0o644, uid: UID, gid: GID, mtime, size: f.data.length }, f.data);
  }
  pack.finalize();
  return { archive: pack as unknown as Readable, names };
}
