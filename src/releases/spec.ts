/**
 * Stored releases as the releases module reads them, and the sandbox spec a release runs with in
 * one slot (its template, the model relay's variables filled in, the release labels).
 */
import { AgentVmError } from '../errors.js';
import type { Profile } from '../governance/profile.js';
import type { ReleaseRow, SlotsRow } from '../store/releases.js';
import type { SandboxSpec, SlotName, SlotRef } from '../sandbox/types.js';
import { RELEASE_SPEC_LABEL, type CanaryState, type Release, type ReleaseOutcome, type SpecTemplate } from './types.js';

export const RELEASE_ID_LABEL = 'agent-vm.release';

export function toRelease(row: ReleaseRow): Release {
  return {
    id: row.id,
    profile: row.profile,
    number: row.number,
    status: row.status,
    imageRef: row.imageRef,
    imageDigest: row.imageDigest,
    agentProgram: row.agentProgram,
    agentVersion: row.agentVersion,
    manifestHash: row.manifestHash,
    manifest: row.manifest as Profile,
    runtime: row.runtime,
    specHash: row.specHash,
    spec: row.spec as SpecTemplate,
    slot: row.slot === 'b' ? 'b' : 'a',
    rollbackTarget: row.rollbackTarget,
    createdBy: row.createdBy,
    reason: row.reason,
    outcome: (row.outcome ?? {}) as ReleaseOutcome,
    createdAt: row.createdAt.toISOString(),
  };
}

export const otherSlot = (s: SlotName): SlotName => (s === 'a' ? 'b' : 'a');
export const slotName = (s: string | null | undefined): SlotName => (s === 'b' ? 'b' : 'a');

/** A slots row's canary, if one is serving. */
export function canaryOf(row: SlotsRow | undefined): CanaryState | null {
  const c = row?.canary as CanaryState | null | undefined;
  return c && typeof c === 'object' && c.state === 'serving' && typeof c.release === 'string' ? c : null;
}

/**
 * The spec release `r` runs with in `slot`: its template, the relay's variables from `relayEnv`
 * (a release whose agent needs them and gets none is refused: it would start without its model).
 */
export function releaseSpec(r: Pick<Release, 'id' | 'spec' | 'specHash'>, slot: SlotRef, relayEnv?: Readonly<Record<string, string>>): SandboxSpec {
  const { relayKeys, ...template } = r.spec;
  const env = { ...template.env };
  for (const k of relayKeys ?? []) {
    const v = relayEnv?.[k];
    if (v === undefined) throw new AgentVmError('release_spec', `release ${r.id} needs the model relay's ${k}, which this process does not serve`, { status: 500 });
    env[k] = v;
  }
  return { ...template, env, slot, labels: { [RELEASE_ID_LABEL]: r.id, [RELEASE_SPEC_LABEL]: r.specHash } };
}
