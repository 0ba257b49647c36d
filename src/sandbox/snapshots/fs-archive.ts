/**
 * Workspace archives on this machine's own filesystem, for the fake driver: pack a directory the
 * way the engine archives a workspace (names relative to it), and extract a verified archive into
 * a new, empty directory without ever following a link (every entry is checked as in a real
 * restore, links are created as links, files with O_EXCL).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import tar from 'tar-stream';
import { checkEntry, snapshotEntryName, type EntryState } from './archive.js';
import type { ArchiveCounts } from './types.js';

/**
 * A tar of `dir`'s contents (names relative to it), or with `top` of `dir/top` itself and its
 * contents (names `top/…`, as the engine archives a path). Hard links kept; sockets left out,
 * as the engine's archiver does.
 */
export function packDirectory(dir: string, top?: string): { archive: Readable; counts: Promise<ArchiveCounts> } {
  const pack = tar.pack();
  const counts: ArchiveCounts = { files: 0, entries: 0 };
  const seen = new Map<string, string>();
  const walk = async (abs: string, name: string): Promise<void> => {
    const st = await fs.lstat(abs);
    const base = { name, mode: st.mode & 0o7777, mtime: st.mtime };
    if (st.isSymbolicLink()) {
      pack.entry({ ...base, type: 'symlink', linkname: await fs.readlink(abs) });
    } else if (st.isDirectory()) {
      pack.entry({ ...base, name: `${name}/`, type: 'directory' });
      for (const e of (await fs.readdir(abs)).sort()) await walk(path.join(abs, e), `${name}/${e}`);
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? seen.get(key) : undefined;
      if (first !== undefined) {
        pack.entry({ ...base, type: 'link', linkname: first });
      } else {
        if (st.nlink > 1) seen.set(key, name);
        counts.files++;
        pack.entry({ ...base, type: 'file', size: st.size }, await fs.readFile(abs));
      }
    } else if (st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice()) {
      pack.entry({ ...base, type: st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'character-device' : 'block-device' });
    } else {
      return; // a socket: the engine's archiver skips them too
    }
    counts.entries++;
  };
  const out = new PassThrough();
  pack.pipe(out);
  const done = (async () => {
    if (top !== undefined) await walk(path.join(dir, top), top);
    else for (const e of (await fs.readdir(dir)).sort()) await walk(path.join(dir, e), e);
    pack.finalize();
    return counts;
  })();
  done.catch((err: Error) => pack.destroy(err));
  return { archive: out, counts: done };
}

/** Extracts a verified archive into `dir`, which must not exist yet. Throws on any unsafe entry. */
export async function extractInto(dir: string, archive: Readable): Promise<void> {
  await fs.mkdir(path.dirname(dir), { recursive: true });
  await fs.mkdir(dir, { recursive: false, mode: 0o755 });
  const extract = tar.extract();
  const seen: EntryState = new Map();
  archive.on('error', (err) => extract.destroy(err));
  archive.pipe(extract);
  for await (const entry of extract) {
    const h = entry.header;
    const why = checkEntry(h, seen);
    if (why) {
      entry.resume();
      throw new Error(`unsafe snapshot entry: ${why}`);
    }
    const name = (snapshotEntryName(h.name) as { name: string }).name;
    const target = path.join(dir, ...name.split('/'));
    // checkEntry refused any entry under a link, so every parent here is a directory we made.
    await fs.mkdir(path.dirname(target), { recursive: true });
    const mode = (h.mode ?? 0o644) & 0o1777;
    if (h.type === 'directory') {
      await fs.mkdir(target, { recursive: true, mode });
      entry.resume();
    } else if (h.type === 'symlink') {
      await fs.symlink(h.linkname ?? '', target);
      entry.resume();
    } else if (h.type === 'link') {
      await fs.link(path.join(dir, ...(snapshotEntryName(h.linkname ?? '') as { name: string }).name.split('/')), target);
      entry.resume();
    } else if (h.type === 'fifo') {
      entry.resume(); // no mkfifo in Node; a fifo carries no state worth restoring in a test double
    } else {
      await pipeline(entry, createWriteStream(target, { flags: 'wx', mode }));
    }
  }
}
