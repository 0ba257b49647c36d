/**
 * Loads every profile manifest in a directory. Each file stands alone: a bad file is reported
 * with its issues and the others still load. Ambiguity fails closed: two files claiming one id,
 * or two profiles claiming one binding, invalidate every file involved, because an event must
 * match exactly one profile.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { AgentVmError } from '../errors.js';
import { clickupScope, validateProfile, type Binding, type Profile, type ProfileIssue } from './profile.js';

/** Larger than any sane manifest; a bigger file is refused before it is parsed. */
export const MAX_MANIFEST_BYTES = 256 * 1024;

export interface InvalidProfile {
  file: string;
  /** The id the file declares, when it declares one as a string. */
  id?: string;
  issues: ProfileIssue[];
}

export interface LoadedProfiles {
  /** Valid profiles, in file-name order. */
  profiles: Profile[];
  invalid: InvalidProfile[];
  /** Profile id → the file (base name) it was loaded from, for every valid profile. */
  files: Record<string, string>;
}

/** One side of a binding conflict: `id`'s binding at `path` is also claimed by `otherId`. */
export interface BindingConflict {
  id: string;
  otherId: string;
  /** The binding key both claim, e.g. `slack team T1 channel C2`. */
  binding: string;
  path: string;
  message: string;
}

const MANIFEST = /\.ya?ml$/;

/** The exact routing keys a binding claims, each with the manifest path that claims it. */
export function bindingKeys(b: Binding, at: string): Array<{ key: string; path: string }> {
  const perChannel = (scope: string, channels: string[] | undefined, wide: string, widePath: string) =>
    channels === undefined
      ? [{ key: `${scope} ${wide}`, path: `${at}.${widePath}` }]
      : channels.map((c, j) => ({ key: `${scope} channel ${c}`, path: `${at}.channels[${j}]` }));
  switch (b.platform) {
    case 'local':
      return perChannel('local', b.channels, '', '');
    case 'slack':
      return perChannel(`slack team ${b.team}`, b.channels, '(team-wide)', 'team');
    case 'discord':
      return perChannel(`discord guild ${b.guild}`, b.channels, '(guild-wide)', 'guild');
    case 'clickup':
      return [{ key: `clickup ${clickupScope(b)} trigger ${b.trigger.toLowerCase()}`, path: `${at}.trigger` }];
  }
}

/**
 * Bindings claimed by more than one profile. Every profile involved gets an entry (both sides
 * of a conflict), so a caller can invalidate all of them. A channel-scoped binding and a
 * team-wide one on the same team are not identical and do not conflict here.
 */
export function findBindingConflicts(profiles: readonly Profile[]): BindingConflict[] {
  const claims = new Map<string, Array<{ id: string; path: string }>>();
  for (const p of profiles) {
    const seen = new Set<string>();
    p.bindings.forEach((b, i) => {
      // A local event names the profile it is for, so local bindings can never be ambiguous.
      if (b.platform === 'local') return;
      for (const { key, path: at } of bindingKeys(b, `bindings[${i}]`)) {
        if (seen.has(key)) continue; // the same profile twice is harmless
        seen.add(key);
        const list = claims.get(key) ?? [];
        list.push({ id: p.id, path: at });
        claims.set(key, list);
      }
    });
  }
  const out: BindingConflict[] = [];
  for (const [binding, list] of claims) {
    for (const c of list) {
      const others = [...new Set(list.filter((o) => o.id !== c.id).map((o) => o.id))];
      if (others.length === 0) continue;
      out.push({
        id: c.id,
        otherId: others[0]!,
        binding,
        path: c.path,
        message: `binding "${binding}" is also claimed by ${others.map((o) => `profile "${o}"`).join(', ')}; an event must match exactly one profile`,
      });
    }
  }
  return out;
}

async function listManifests(dir: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await fs.readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new AgentVmError('profiles_dir_missing', `profiles directory ${dir} does not exist; set AGENTVM_PROFILES_DIR`, { status: 400, cause: err });
    }
    throw err;
  }
  // Dotfiles are skipped: editors' swap files and Kubernetes ConfigMap internals (..data/).
  const names = entries.filter((n) => MANIFEST.test(n) && !n.startsWith('.')).sort();
  const files: string[] = [];
  for (const n of names) {
    // stat, not lstat: a ConfigMap mounts each manifest as a symlink.
    const st = await fs.stat(path.join(dir, n)).catch(() => undefined);
    if (st?.isFile()) files.push(n);
  }
  return files;
}

async function readManifest(dir: string, file: string): Promise<{ profile?: Profile; id?: string; issues: ProfileIssue[] }> {
  let text: string;
  try {
    const buf = await fs.readFile(path.join(dir, file));
    if (buf.length > MAX_MANIFEST_BYTES) {
      return { issues: [{ file, path: '', message: `file is ${buf.length} bytes; a manifest may be at most ${MAX_MANIFEST_BYTES}` }] };
    }
    text = buf.toString('utf8');
  } catch (err) {
    return { issues: [{ file, path: '', message: `cannot read the file: ${(err as Error).message}` }] };
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter: lines });
  if (doc.errors.length > 0) {
    return {
      issues: doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return { file, path: '', message: `YAML syntax error${pos ? ` at line ${pos.line}, column ${pos.col}` : ''}: ${e.message.split('\n')[0]}` };
      }),
    };
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { issues: [{ file, path: '', message: `YAML error: ${(err as Error).message}` }] };
  }
  if (data === null || data === undefined) return { issues: [{ file, path: '', message: 'the file is empty' }] };
  const declared = typeof data === 'object' && typeof (data as { id?: unknown }).id === 'string' ? (data as { id: string }).id : undefined;
  const r = validateProfile(data, file);
  const issues = [...r.issues];
  const stem = file.replace(MANIFEST, '');
  if (declared !== undefined && declared !== stem) {
    issues.push({ file, path: 'id', message: `id "${declared}" does not match the file name; rename the file to ${declared}.yaml or set id: ${stem}` });
  }
  return issues.length === 0 ? { profile: r.profile, id: declared, issues } : { id: declared, issues };
}

/** Reads `*.yaml`/`*.yml` in `dir` (not recursive, sorted by name). Throws only if `dir` is missing. */
export async function loadProfiles(dir: string): Promise<LoadedProfiles> {
  const names = await listManifests(dir);
  const results = await Promise.all(names.map(async (file) => ({ file, ...(await readManifest(dir, file)) })));

  // Two files for one id (support.yaml + support.yml, or a copy that kept its id): neither wins.
  const byStem = new Map<string, string[]>();
  for (const { file } of results) {
    const stem = file.replace(MANIFEST, '');
    byStem.set(stem, [...(byStem.get(stem) ?? []), file]);
  }
  const byId = new Map<string, string[]>();
  for (const r of results) if (r.id !== undefined) byId.set(r.id, [...(byId.get(r.id) ?? []), r.file]);
  for (const r of results) {
    const stem = r.file.replace(MANIFEST, '');
    const others = [...new Set([...(byStem.get(stem) ?? []), ...(r.id !== undefined ? (byId.get(r.id) ?? []) : [])])].filter((f) => f !== r.file);
    if (others.length > 0) {
      r.issues.push({ file: r.file, path: 'id', message: `duplicate id "${r.id ?? stem}": also claimed by ${others.join(', ')}` });
      r.profile = undefined;
    }
  }

  const valid = results.filter((r) => r.profile !== undefined && r.issues.length === 0);
  const fileOf = new Map(valid.map((r) => [r.profile!.id, r.file]));
  for (const c of findBindingConflicts(valid.map((r) => r.profile!))) {
    const r = valid.find((v) => v.profile!.id === c.id)!;
    r.issues.push({ file: r.file, path: c.path, message: c.message.replace(/profile "([^"]+)"/g, (m, id: string) => `${m} (${fileOf.get(id)})`) });
  }

  const profiles: Profile[] = [];
  const invalid: InvalidProfile[] = [];
  const files: Record<string, string> = {};
  for (const r of results) {
    if (r.profile !== undefined && r.issues.length === 0) {
      profiles.push(r.profile);
      files[r.profile.id] = r.file;
    } else {
      invalid.push(r.id !== undefined ? { file: r.file, id: r.id, issues: r.issues } : { file: r.file, issues: r.issues });
    }
  }
  return { profiles, invalid, files };
}
