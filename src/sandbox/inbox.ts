/**
 * Files going INTO a sandbox (attachments for the agent's inbox), packed as a tar the engine
 * extracts into the workspace volume. Names are flattened and checked here, so nothing can be
 * written outside the target folder whatever a platform sends as a file name.
 */
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { AgentVmError } from '../errors.js';

/** The sandbox user; files it receives must be its own. */
const UID = 1000;
const GID = 1000;

/** A file name safe to create in the inbox: no path, no leading dot, printable, ≤ 120 chars. */
export function safeFileName(name: string, fallback: string): string {
  const base = name.split(/[\\/]/).pop() ?? '';
  const cleaned = base.replace(/[^A-Za-z0-9._ -]/g, '_').replace(/^[.\s]+/, '').slice(0, 120).trim();
  return cleaned.length > 0 ? cleaned : fallback;
}

/** Tar of `dir/…/name` entries relative to the workspace; `dir` is relative (e.g. `inbox/ev1`). */
export function packFiles(dir: string, files: Array<{ name: string; data: Buffer }>): Readable {
  if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(dir) || dir.split('/').some((s) => s === '..' || s === '.')) {
    throw new AgentVmError('bad_inbox_dir', `invalid inbox folder "${dir}"`, { status: 400 });
  }
  const pack = tar.pack();
  const mtime = new Date();
  const parts = dir.split('/');
  for (let i = 1; i <= parts.length; i++) {
    pack.entry({ name: `${parts.slice(0, i).join('/')}/`, type: 'directory', mode: 0o755, uid: UID, gid: GID, mtime });
  }
  const used = new Set<string>();
  for (const [i, f] of files.entries()) {
    let name = safeFileName(f.name, `file-${i + 1}`);
    while (used.has(name)) name = `${i + 1}-${name}`;
    used.add(name);
    pack.entry({ name: `${dir}/${name}`, type: 'file', mode: 0o644, uid: UID, gid: GID, mtime, size: f.data.length }, f.data);
  }
  pack.finalize();
  return pack as unknown as Readable;
}
