/**
 * `release plan`: per profile, what its current release pins and what a release made now would
 * pin (declare.ts), as a list of changes and a manifest diff. Reads the engine and the database;
 * changes nothing.
 */
import { describeError } from '../errors.js';
import type { Profile } from '../governance/profile.js';
import { CANARY_TIERS } from '../governance/profile-release.js';
import type { ReleaseRepo } from '../store/releases.js';
import { printable } from '../text.js';
import { declare, manifestDiff, type DeclareDeps } from './declare.js';
import { toRelease } from './spec.js';
import type { Change, Declared, PlanItem, Release } from './types.js';

export interface PlanDeps extends DeclareDeps {
  repo: ReleaseRepo;
}

/** The release serving the agent now (the slots row's), if any. */
export async function currentRelease(repo: ReleaseRepo, profile: string): Promise<Release | undefined> {
  const row = await repo.slots(profile);
  if (!row?.release) return undefined;
  const r = await repo.get(row.release);
  return r ? toRelease(r) : undefined;
}

export function changesBetween(cur: Release | undefined, d: Declared): Change[] {
  const out: Change[] = [];
  const add = (what: Change['what'], from: string | null | undefined, to: string | null) => {
    if (cur === undefined || from !== to) out.push({ what, from: cur === undefined ? null : (from ?? null), to: to ?? '(none)' });
  };
  add('image', cur?.imageDigest, d.imageDigest);
  add('spec', cur?.specHash, d.specHash);
  add('runtime', cur?.runtime, d.runtime);
  add('agent', cur ? `${cur.agentProgram}${cur.agentVersion ? `@${cur.agentVersion}` : ''}` : undefined, `${d.agentProgram}${d.agentVersion ? `@${d.agentVersion}` : ''}`);
  add('manifest', cur?.manifestHash, d.manifestHash);
  return out;
}

export async function planProfiles(profiles: Profile[], d: PlanDeps): Promise<PlanItem[]> {
  const items: PlanItem[] = [];
  for (const p of profiles) {
    const current = await currentRelease(d.repo, p.id);
    const needsCanary = CANARY_TIERS.includes(p.risk);
    const [newest] = await d.repo.list(p.id, 1);
    const lastFailure = newest && (newest.status === 'failed' || newest.status === 'rolled_back') ? `${newest.id} ${newest.status === 'failed' ? 'failed' : 'was rolled back'}: ${String((newest.outcome as { why?: unknown } | null)?.why ?? 'no reason recorded')}` : undefined;
    let declared: Declared | undefined;
    try {
      declared = await declare(p, d);
    } catch (err) {
      items.push({ profile: p.id, risk: p.risk, current, declared: undefined, changes: [], manifestDiff: [], error: describeError(err), needsCanary, ...(lastFailure ? { lastFailure } : {}) });
      continue;
    }
    const changes = changesBetween(current, declared);
    items.push({ profile: p.id, risk: p.risk, current, declared, changes, manifestDiff: current && changes.some((c) => c.what === 'manifest') ? manifestDiff(current?.manifest, declared.manifest) : [], needsCanary, ...(lastFailure ? { lastFailure } : {}) });
  }
  return items;
}

const short = (s: string | null) => (s === null ? '(none)' : /^sha256:[0-9a-f]{64}$/.test(s) ? s.slice(0, 19) : s.length === 64 && /^[0-9a-f]+$/.test(s) ? s.slice(0, 12) : printable(s, 120));

/** The plan as the CLI prints it. */
export function formatPlan(items: PlanItem[]): string[] {
  const lines: string[] = [];
  for (const it of items) {
    const note = it.lastFailure ? `  last attempt: ${printable(it.lastFailure, 500)}` : undefined;
    const cur = it.current ? `${it.current.id} in slot ${it.current.slot}` : 'no release yet';
    if (it.error) {
      lines.push(`${it.profile} (${it.risk ?? '?'}): cannot be released: ${printable(it.error, 500)}`);
      continue;
    }
    if (it.changes.length === 0) {
      lines.push(`${it.profile} (${it.risk}): up to date (${cur})`);
      if (note) lines.push(note);
      continue;
    }
    lines.push(`${it.profile} (${it.risk}): ${it.changes.length} change(s) from ${cur}${it.needsCanary ? '; needs a canary (--canary <channel>)' : ''}`);
    for (const c of it.changes) lines.push(`  ${c.what.padEnd(8)} ${short(c.from)} → ${short(c.to)}`);
    for (const m of it.manifestDiff) lines.push(`    ${printable(m, 300)}`);
    if (note) lines.push(note);
  }
  return lines;
}
