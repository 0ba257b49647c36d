/**
 * Drift: what runs (the active slot's container: its image id, its release labels, its runtime)
 * against what is declared (the agent's current release), for every profile and every agent with
 * slots. A sandbox changed behind agent-vm's back shows here; the driver never reuses it either
 * (a container whose image, runtime or labels differ from the spec is re-created at the next wake).
 * Manifest or image changes not released yet are `pending`, not drift.
 */
import { DIGEST_TIERS } from '../governance/profile-release.js';
import type { Profile } from '../governance/profile.js';
import type { SandboxDriver, SandboxStatus } from '../sandbox/types.js';
import type { ReleaseRepo } from '../store/releases.js';
import { printable } from '../text.js';
import type { DeclareDeps } from './declare.js';
import { planProfiles } from './plan.js';
import { canaryOf, RELEASE_ID_LABEL, slotName, toRelease } from './spec.js';
import { RELEASE_SPEC_LABEL, type DriftReport, type Release } from './types.js';

const short = (s: string | undefined | null) => (s ? (s.startsWith('sha256:') ? s.slice(0, 19) : s.length === 64 ? s.slice(0, 12) : printable(s, 80)) : '(none)');

/** What differs between a release and the container that should be running it. */
export function driftOf(r: Release, st: SandboxStatus): string[] {
  if (st.state === 'missing') return [];
  const out: string[] = [];
  if (st.imageId !== undefined && st.imageId !== r.imageDigest) out.push(`image ${short(st.imageId)} runs, ${short(r.imageDigest)} released`);
  const labels = st.releaseLabels ?? {};
  if (labels[RELEASE_ID_LABEL] !== r.id) out.push(`container is of release ${short(labels[RELEASE_ID_LABEL])}, ${r.id} is current`);
  else if (labels[RELEASE_SPEC_LABEL] !== r.specHash) out.push(`spec ${short(labels[RELEASE_SPEC_LABEL])} runs, ${short(r.specHash)} released`);
  if (r.runtime !== 'auto' && st.runtime !== undefined && !st.runtime.includes(r.runtime)) out.push(`runtime ${printable(st.runtime, 40)} runs, ${r.runtime} released`);
  return out;
}

export async function driftReport(profiles: Profile[], d: DeclareDeps & { repo: ReleaseRepo; driver: SandboxDriver }): Promise<DriftReport[]> {
  const plans = await planProfiles(profiles, d);
  const rows = await d.repo.allSlots();
  const ids = [...new Set([...profiles.map((p) => p.id), ...rows.map((r) => r.agent)])].sort();
  const out: DriftReport[] = [];
  for (const agent of ids) {
    const row = rows.find((r) => r.agent === agent);
    const plan = plans.find((p) => p.profile === agent);
    const profile = profiles.find((p) => p.id === agent);
    const relRow = row?.release ? await d.repo.get(row.release) : undefined;
    const release = relRow ? toRelease(relRow) : undefined;
    const st = row ? await d.driver.slot(slotName(row.active)).status(agent) : await d.driver.status(agent);
    const drift = release ? driftOf(release, st) : [];
    if (!release && profile && DIGEST_TIERS.includes(profile.risk) && st.state !== 'missing') drift.push(`risk ${profile.risk} without a release: runs ${short(st.imageId)}, not a pinned digest`);
    if (!profile) drift.push('no valid manifest declares this agent any more');
    const pending = plan?.error ? [`cannot plan: ${printable(plan.error, 200)}`] : (plan?.changes ?? []).map((c) => c.what);
    out.push({ agent, release: release?.id ?? null, slot: row ? slotName(row.active) : null, state: st.state, drift, pending, canary: canaryOf(row) });
  }
  return out;
}

/** The status table as the CLI prints it. */
export function formatDrift(reports: DriftReport[]): string[] {
  const lines = [['AGENT', 'RELEASE', 'SLOT', 'STATE', 'CANARY', 'PENDING', 'DRIFT'].join('\t')];
  for (const r of reports) {
    const canary = r.canary ? `${r.canary.release} ${r.canary.ok}/${r.canary.needed}` : '-';
    lines.push([r.agent, r.release ?? '-', r.slot ?? '-', r.state, canary, r.pending.length > 0 ? r.pending.join(',') : '-', r.drift.length > 0 ? `DRIFT: ${r.drift.join('; ')}` : 'no'].join('\t'));
  }
  return lines;
}
