/**
 * Releases: every change to what an agent runs is planned, applied, audited and undoable in one
 * step. The shapes shared by planning (plan.ts), applying (service.ts), the unit's slot routing
 * (slotted-link.ts), drift (drift.ts) and the CLI and operator API.
 *
 * A release pins, per profile: the agent image by the engine's image id (never a tag alone), the
 * agent program and its version, the manifest's hash, the runtime, and the sandbox spec it runs
 * with (`SpecTemplate`). The running agent is woken from its current release's spec, so a
 * manifest edit changes nothing in the sandbox until it is released; the gateway's own policy
 * (tools, permissions, bindings) is read from the manifest when the gateway loads it.
 *
 * Deliberately left out: releases of several profiles as one unit (each profile has its own), and
 * images from a registry (the engine's own images only; a digest names what the engine has).
 */
import type { Profile, RiskTier } from '../governance/profile.js';
import type { SandboxSpec, SlotName } from '../sandbox/types.js';

/** The label a slot's container carries: the release spec hash it was created from. */
export const RELEASE_SPEC_LABEL = 'agent-vm.release-spec';

/**
 * The sandbox spec a release runs, without anything per wake: no slot, no labels, and the model
 * relay's variables (`relayKeys`) blank; the wake fills them from the unit's relay.
 */
export interface SpecTemplate extends Omit<SandboxSpec, 'slot' | 'labels'> {
  /** Environment variables the model relay fills in at each wake. */
  relayKeys?: string[];
}

/** What a profile's manifest and the engine say it should run now (before any release). */
export interface Declared {
  profile: string;
  risk: RiskTier;
  /** The image as named (tag or id), and what the engine has under that name now. */
  imageRef: string;
  imageDigest: string;
  /** `preset:<name>` or the command line. */
  agentProgram: string;
  /** From the image's `agent-vm.preset-version` (or `org.opencontainers.image.version`) label. */
  agentVersion: string | null;
  manifestHash: string;
  manifest: Profile;
  /** The runtime setting the sandbox asks for (the manifest's, else the gateway's), checked against the tier. */
  runtime: string;
  spec: SpecTemplate;
  /** hashOf(spec): what `release plan` compares and slot containers carry (RELEASE_SPEC_LABEL). */
  specHash: string;
}

export type ReleaseStatus = 'applying' | 'canary' | 'active' | 'superseded' | 'failed' | 'rolled_back';

/** A stored release, as the releases module reads it. */
export interface Release {
  id: string;
  profile: string;
  number: number;
  status: ReleaseStatus;
  imageRef: string;
  imageDigest: string;
  agentProgram: string;
  agentVersion: string | null;
  manifestHash: string;
  manifest: Profile;
  runtime: string;
  specHash: string;
  spec: SpecTemplate;
  slot: SlotName;
  rollbackTarget: string | null;
  createdBy: string;
  reason: string | null;
  outcome: ReleaseOutcome;
  createdAt: string;
}

/** What happened to a release: its health check, swap, canary, and why it failed or was undone. */
export interface ReleaseOutcome {
  health?: HealthResult;
  /** Time the agent's turns were held for the swap (last turn on the old slot to the new slot ready). */
  swapMs?: number;
  canary?: CanaryState;
  /** Why it failed, was rolled back or superseded. */
  why?: string;
  /** Only the manifest's gateway-side parts changed: recorded, nothing restarted. */
  recordOnly?: boolean;
  rollbackMs?: number;
  [key: string]: unknown;
}

export interface HealthResult {
  ok: boolean;
  /** Which step failed: start, initialize, session, probe, deadline. */
  failed?: string;
  why?: string;
  ms: number;
  steps: Record<string, number>;
  /** The snapshot generation the trial workspace came from (none: an empty one). */
  generation?: number;
}

/** A canary in progress (or ended): the conversations it serves and its count of healthy turns. */
export interface CanaryState {
  release: string;
  slot: SlotName;
  /** A conversation key, or a prefix of keys ending before a ':' (a channel). */
  match: string;
  needed: number;
  ok: number;
  state: 'serving' | 'promoted' | 'rolled_back';
  why?: string;
}

/** One line of a plan: a pinned property from the current release to what would be released. */
export interface Change {
  what: 'image' | 'spec' | 'runtime' | 'agent' | 'manifest';
  from: string | null;
  to: string;
}

export interface PlanItem {
  profile: string;
  risk: RiskTier | null;
  current: Release | undefined;
  declared: Declared | undefined;
  /** Empty: nothing to do. */
  changes: Change[];
  /** Dotted paths of the manifest that changed: `limits.memoryMiB: 512 → 1024`. */
  manifestDiff: string[];
  /** Why this profile cannot be released now (an image missing, a bare tag at L2+, …). */
  error?: string;
  /** A canary is required for this profile (L3 and above). */
  needsCanary: boolean;
  /** The newest release of the profile failed or was rolled back: which and why. */
  lastFailure?: string;
}

/** One agent in `agent-vm status`: what is declared, what runs, and how they differ. */
export interface DriftReport {
  agent: string;
  release: string | null;
  slot: SlotName | null;
  state: string;
  /** Empty: no drift. Each names what differs, e.g. `image sha256:ab… runs, sha256:cd… released`. */
  drift: string[];
  /** Manifest or image changes not released yet (a plan would show them). */
  pending: string[];
  canary: CanaryState | null;
}

export function matchesCanary(match: string, conversation: string): boolean {
  return conversation === match || conversation.startsWith(`${match}:`);
}
