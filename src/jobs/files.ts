/**
 * Files in and out of a job sandbox, only through the SandboxDriver: read with `readOutbox`
 * (the engine's archive, validated entry by entry: no symlinks, hard links, devices, unsafe names,
 * size caps) and written with `writeFiles`. Nothing here runs code inside any sandbox.
 *
 * `readOutbox` reads directories; a single file is read through its parent directory and picked
 * out by name (the parent's other files count against the caps only as far as they are read: a
 * per-file read on the driver seam would spare that). Directory names that `writeFiles` cannot
 * recreate (outside letters, digits, '.', '_' and '-') are refused, never renamed silently; base
 * names are made safe by `writeFiles` itself and the paths actually written are reported.
 */
import path from 'node:path';
import { AgentVmError } from '../errors.js';
import type { OutboxLimits, OutboxRefusalReason, SandboxDriver } from '../sandbox/types.js';

export interface TreeFile {
  /** Relative to where it will be written (the tree's own relative path, e.g. `src/a.py`). */
  path: string;
  data: Buffer;
}

export interface Refusal {
  path: string;
  reason: OutboxRefusalReason | 'missing' | 'unwritable_name';
  detail: string;
}

export interface ReadResult {
  files: TreeFile[];
  refused: Refusal[];
  bytes: number;
}

const DIR_OK = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/**
 * Reads `rel` (a file or a directory, relative to the agent's /workspace) and returns its files
 * with paths starting at `as` (`as/…` for a directory's tree, `as` for a file). `budget` is the
 * caps left for this whole collection, decreased as files are taken.
 */
export async function readTree(driver: SandboxDriver, agentId: string, rel: string, as: string, budget: OutboxLimits): Promise<ReadResult> {
  const out: ReadResult = { files: [], refused: [], bytes: 0 };
  const top = path.posix.basename(rel);
  let rootIsFile = false;
  let seen = false;
  for await (const e of driver.readOutbox(agentId, rel, budget)) {
    seen = true;
    if (e.kind === 'refused' && e.name === top && e.reason === 'not_regular_file' && /not a directory/.test(e.detail)) {
      rootIsFile = true;
      break;
    }
    take(out, e.kind === 'file' ? { path: `${as}/${e.name}`, data: e.data } : undefined, e.kind === 'refused' ? { path: e.name === top ? as : `${as}/${e.name}`, reason: e.reason, detail: e.detail } : undefined, budget);
  }
  if (!seen) {
    out.refused.push({ path: as, reason: 'missing', detail: `${rel} does not exist` });
    return out;
  }
  if (!rootIsFile) return out;
  // A file: read its directory, keep only it. Its siblings are skipped, not counted.
  const parent = path.posix.dirname(rel);
  if (parent === '.') throw new AgentVmError('job_invalid', `${rel}: files at the top of the workspace cannot be read; name a directory or a file inside one`, { status: 400 });
  let found = false;
  for await (const e of driver.readOutbox(agentId, parent, { ...budget, maxFiles: 100_000, maxTotalBytes: Number.MAX_SAFE_INTEGER })) {
    if (e.name !== top) continue;
    found = true;
    if (e.kind === 'file') {
      if (e.size > budget.maxFileBytes) take(out, undefined, { path: as, reason: 'too_large', detail: `${e.size} bytes is over the ${budget.maxFileBytes}-byte limit per file` }, budget);
      else if (e.size > budget.maxTotalBytes) take(out, undefined, { path: as, reason: 'total_too_large', detail: `over the ${budget.maxTotalBytes}-byte total left` }, budget);
      else if (budget.maxFiles < 1) take(out, undefined, { path: as, reason: 'too_many_files', detail: 'the file limit is reached' }, budget);
      else take(out, { path: as, data: e.data }, undefined, budget);
    } else {
      take(out, undefined, { path: as, reason: e.reason, detail: e.detail }, budget);
    }
    break;
  }
  if (!found) out.refused.push({ path: as, reason: 'missing', detail: `${rel} could not be read` });
  return out;
}

function take(out: ReadResult, file: TreeFile | undefined, refusal: Refusal | undefined, budget: OutboxLimits): void {
  if (file) {
    out.files.push(file);
    out.bytes += file.data.length;
    budget.maxFiles -= 1;
    budget.maxTotalBytes -= file.data.length;
  }
  if (refusal) out.refused.push(refusal);
}

/**
 * Writes `files` under `base` (relative to the agent's /workspace), one `writeFiles` per
 * directory. Returns the paths written (inside the sandbox) and the files refused because their
 * directory cannot be recreated safely.
 */
export async function writeTree(driver: SandboxDriver, agentId: string, base: string, files: readonly TreeFile[]): Promise<{ written: string[]; refused: Refusal[] }> {
  const byDir = new Map<string, Array<{ name: string; data: Buffer }>>();
  const refused: Refusal[] = [];
  for (const f of files) {
    const dir = path.posix.dirname(f.path);
    const full = dir === '.' ? base : `${base}/${dir}`;
    if (!DIR_OK.test(full) || full.split('/').some((s) => s === '.' || s === '..')) {
      refused.push({ path: f.path, reason: 'unwritable_name', detail: 'its directory name has characters other than letters, digits, ".", "_" and "-"' });
      continue;
    }
    const list = byDir.get(full) ?? [];
    list.push({ name: path.posix.basename(f.path), data: f.data });
    byDir.set(full, list);
  }
  const written: string[] = [];
  if (byDir.size === 0) await driver.writeFiles(agentId, base, []);
  for (const [dir, list] of byDir) written.push(...(await driver.writeFiles(agentId, dir, list)));
  return { written, refused };
}
