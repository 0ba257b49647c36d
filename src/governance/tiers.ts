/**
 * Risk tiers L0–L5, as data. A profile's `risk` is the amount of risk its operator accepts for
 * that agent: more capability needs a higher tier, and a higher tier brings stronger isolation
 * and more human oversight. A manifest asking for more than its tier allows is invalid
 * (profile.ts checks it); what the manifest cannot show (the runtime `auto` or the gateway's
 * default resolves to) is checked again at wake with `assertRuntimeAllowed`.
 *
 * Runtimes: `runc` (no kernel isolation, and only with AGENTVM_ALLOW_RUNC=1) only at L0–L1;
 * `auto` resolves to kata, then runsc (never runc), so it is accepted at L0–L3; L4–L5 must say
 * `runtime: kata` in the manifest, because `auto` may land on runsc.
 *
 * Approval modes, from the least to the most oversight:
 *   - `listed`: only the tools in `tools.approval` wait for a person;
 *   - `credentialed`: those, plus every tool of a server that acts with a secret (a `secret://`
 *     reference in its headers or env), since such a call acts in someone's name;
 *   - `all`: every tool call waits for a person.
 * Tool annotations (readOnlyHint...) never lower the mode: they come from the upstream.
 *
 * ACP permission requests (`session/request_permission`, an agent's own tools: edit a file, run a
 * command) follow the manifest's `permissions` (allow / ask a person / deny, by tool kind; default
 * deny). The tier caps what may be allowed without a person: every kind up to L2 (the sandbox is
 * the boundary; `permissions: sandbox` allows all), only read/search/think at L3, nothing at L4-L5.
 *
 * Deliberately left out: per-tool data classes and time-of-day rules.
 */
import type { RuntimeName, RuntimeSetting } from '../sandbox/types.js';
import { AgentVmError } from '../errors.js';
import { LIMIT_BOUNDS } from '../sandbox/spec.js';
import type { RiskTier } from './profile.js';

export type ApprovalMode = 'listed' | 'credentialed' | 'all';

/** ACP tool kinds an agent names when it asks permission (session/request_permission). */
export const PERMISSION_KINDS = ['read', 'edit', 'delete', 'move', 'search', 'execute', 'think', 'fetch', 'switch_mode', 'other'] as const;
export type PermissionKind = (typeof PERMISSION_KINDS)[number];

export interface TierRules {
  tier: RiskTier;
  /** One line for the README and `profiles validate`. */
  summary: string;
  /** Runtime settings a manifest may name. `auto` appears only where every choice it can make is allowed. */
  runtimes: readonly RuntimeSetting[];
  /** Whether `egress.allow` may list anything. */
  egress: boolean;
  /** Whether the profile may declare `secrets` (used gateway-side by its tool servers). */
  secrets: boolean;
  /** Largest limits a manifest may ask for. */
  limits: { cpus: number; memoryMiB: number; pids: number };
  approval: ApprovalMode;
  /**
   * ACP permission kinds a manifest may `allow` without a person (`permissions.allow`); the rest
   * can only be `ask` or `deny`. Whether `permissions: sandbox` (allow everything inside the
   * sandbox) is accepted at this tier.
   */
  permissions: { allow: readonly PermissionKind[]; sandbox: boolean };
}

const ALL_KINDS: readonly PermissionKind[] = PERMISSION_KINDS;

const row = (r: TierRules): Readonly<TierRules> =>
  Object.freeze({ ...r, runtimes: Object.freeze([...r.runtimes]), limits: Object.freeze({ ...r.limits }), permissions: Object.freeze({ allow: Object.freeze([...r.permissions.allow]), sandbox: r.permissions.sandbox }) });

export const TIERS: Readonly<Record<RiskTier, Readonly<TierRules>>> = Object.freeze({
  L0: row({
    tier: 'L0',
    summary: 'conversation and workspace only: no egress, no credentials',
    runtimes: ['kata', 'runsc', 'runc', 'auto'],
    egress: false,
    secrets: false,
    limits: { cpus: 2, memoryMiB: 2048, pids: 512 },
    approval: 'listed',
    permissions: { allow: ALL_KINDS, sandbox: true },
  }),
  L1: row({
    tier: 'L1',
    summary: 'tools with credentials and allowlisted egress',
    runtimes: ['kata', 'runsc', 'runc', 'auto'],
    egress: true,
    secrets: true,
    limits: { cpus: 2, memoryMiB: 2048, pids: 512 },
    approval: 'listed',
    permissions: { allow: ALL_KINDS, sandbox: true },
  }),
  L2: row({
    tier: 'L2',
    summary: 'as L1, never on runc',
    runtimes: ['kata', 'runsc', 'auto'],
    egress: true,
    secrets: true,
    limits: { cpus: 4, memoryMiB: 4096, pids: 1024 },
    approval: 'listed',
    permissions: { allow: ALL_KINDS, sandbox: true },
  }),
  L3: row({
    tier: 'L3',
    summary: 'as L2; every call to a credentialed tool server needs a person',
    runtimes: ['kata', 'runsc', 'auto'],
    egress: true,
    secrets: true,
    limits: { cpus: 8, memoryMiB: 8192, pids: 2048 },
    approval: 'credentialed',
    permissions: { allow: ['read', 'search', 'think'], sandbox: false },
  }),
  L4: row({
    tier: 'L4',
    summary: 'kata only; every tool call needs a person',
    runtimes: ['kata'],
    egress: true,
    secrets: true,
    limits: { cpus: 16, memoryMiB: 16_384, pids: 4096 },
    approval: 'all',
    permissions: { allow: [], sandbox: false },
  }),
  L5: row({
    tier: 'L5',
    summary: 'kata only; every tool call needs a person; largest limits',
    runtimes: ['kata'],
    egress: true,
    secrets: true,
    limits: { cpus: LIMIT_BOUNDS.cpus.max, memoryMiB: LIMIT_BOUNDS.memoryMiB.max, pids: LIMIT_BOUNDS.pids.max },
    approval: 'all',
    permissions: { allow: [], sandbox: false },
  }),
});

export function tierRules(tier: RiskTier): Readonly<TierRules> {
  return TIERS[tier];
}

/** A problem with a manifest's request against its tier: `path` as in ProfileIssue. */
export interface TierViolation {
  path: Array<string | number>;
  message: string;
}

/** The parts of a manifest a tier constrains (a subset of Profile, so profile.ts can call this before the type exists). */
export interface TierRequest {
  risk: RiskTier;
  runtime?: RuntimeSetting | undefined;
  limits: { cpus: number; memoryMiB: number; pids: number };
  egress: { allow: string[] };
  secrets: Record<string, string>;
}

/** Everything a manifest asks for beyond its tier; empty when it fits. */
export function tierViolations(p: TierRequest): TierViolation[] {
  const t = TIERS[p.risk];
  if (!t) return []; // an unknown tier is reported by the schema itself
  const out: TierViolation[] = [];
  if (p.runtime === undefined) {
    if (!t.runtimes.includes('auto')) {
      out.push({ path: ['runtime'], message: `risk ${t.tier} needs runtime: ${t.runtimes.join(' or ')} in the manifest; the gateway's default may pick another runtime` });
    }
  } else if (!t.runtimes.includes(p.runtime)) {
    out.push({ path: ['runtime'], message: `runtime ${p.runtime} is not allowed at risk ${t.tier}; allowed: ${t.runtimes.join(', ')}` });
  }
  for (const k of ['cpus', 'memoryMiB', 'pids'] as const) {
    if (p.limits[k] > t.limits[k]) {
      out.push({ path: ['limits', k], message: `${k} ${p.limits[k]} is more than risk ${t.tier} allows (at most ${t.limits[k]})` });
    }
  }
  if (!t.egress && p.egress.allow.length > 0) {
    out.push({ path: ['egress', 'allow'], message: `risk ${t.tier} may not open egress; remove egress.allow or raise risk to L1 or above` });
  }
  if (!t.secrets && Object.keys(p.secrets).length > 0) {
    out.push({ path: ['secrets'], message: `risk ${t.tier} may not use secrets; remove them or raise risk to L1 or above` });
  }
  return out;
}

/**
 * The wake-time check: the runtime the engine actually chose (or the gateway default a manifest
 * without `runtime` falls back to) must be allowed at the profile's tier. Throws `tier_runtime_refused`.
 */
export function assertRuntimeAllowed(tier: RiskTier, runtime: RuntimeName | RuntimeSetting): void {
  const t = TIERS[tier];
  const allowed = runtime === 'auto' ? t.runtimes.includes('auto') : t.runtimes.includes(runtime);
  if (!allowed) {
    throw new AgentVmError(
      'tier_runtime_refused',
      `risk ${tier} does not allow runtime ${runtime} (allowed: ${t.runtimes.join(', ')}); set runtime in the manifest or AGENTVM_RUNTIME`,
      { status: 400 },
    );
  }
}

/** The runtime setting to wake a profile with: the manifest's, else the gateway default, checked against the tier. */
export function runtimeForTier(tier: RiskTier, manifestRuntime: RuntimeSetting | undefined, gatewayDefault: RuntimeSetting): RuntimeSetting {
  const setting = manifestRuntime ?? gatewayDefault;
  assertRuntimeAllowed(tier, setting);
  return setting;
}

/** The tier table as a Markdown table, for the README and `--help` output. */
export function tierTableMarkdown(): string {
  const lines = [
    '| tier | runtimes | egress | secrets | max cpus / memory MiB / pids | needs a person\'s approval | summary |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  const approval: Record<ApprovalMode, string> = {
    listed: 'tools in `tools.approval`',
    credentialed: '`tools.approval` + every tool of a server using a secret',
    all: 'every tool call',
  };
  for (const t of Object.values(TIERS)) {
    lines.push(
      `| ${t.tier} | ${t.runtimes.join(', ')} | ${t.egress ? 'allowlist' : 'no'} | ${t.secrets ? 'yes' : 'no'} | ${t.limits.cpus} / ${t.limits.memoryMiB} / ${t.limits.pids} | ${approval[t.approval]} | ${t.summary} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}
