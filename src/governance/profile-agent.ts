/**
 * The parts of a manifest about what the agent itself may do and use: the models it talks to
 * through the gateway's model relay (`models`), and how its own permission requests are answered
 * (`permissions`). Kept beside profile.ts so that file stays about the manifest as a whole.
 *
 *   models:                       # the key stays on the gateway; the sandbox gets a turn-bound token
 *     - provider: anthropic       # anthropic | openai | gemini (at most one entry each)
 *       key: secret://ANTHROPIC_API_KEY
 *       allow: [claude-sonnet-4-6]
 *       dailyTokens: 2000000      # optional: per profile per UTC day, all providers together
 *   permissions:                  # by ACP tool kind; default: deny
 *     allow: [read, search]
 *     ask: [edit, execute]        # a person answers (buttons in Slack/Discord, the operator API)
 *     deny: [fetch]
 *   # or: permissions: sandbox    # allow everything inside the sandbox (up to L2)
 */
import { z } from 'zod';
import { PRESETS, type PresetName } from './presets.js';
import { PERMISSION_KINDS, TIERS, type PermissionKind } from './tiers.js';
import type { RiskTier as TierName } from './profile.js';

export const MODEL_PROVIDERS = ['anthropic', 'openai', 'gemini'] as const;

const modelId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/, 'must be a model id, e.g. claude-sonnet-4-6');

export const modelSchema = z.strictObject({
  provider: z.enum(MODEL_PROVIDERS),
  key: z.string().regex(/^secret:\/\/[A-Za-z0-9_.-]+$/, 'must be a secret://<name> reference; the key itself never goes in a manifest'),
  allow: z.array(modelId).min(1, 'list the model ids the agent may use'),
  dailyTokens: z.number().int().positive().optional(),
});

const kinds = z.array(z.enum(PERMISSION_KINDS)).default([]);

export const permissionsSchema = z.union([
  z.literal('sandbox'),
  z.strictObject({ allow: kinds, ask: kinds, deny: kinds }),
]);

export type ModelEntry = z.output<typeof modelSchema>;
export type Permissions = z.output<typeof permissionsSchema>;
export type PermissionAnswer = 'allow' | 'ask' | 'deny';

/** How a request of `kind` is answered under `p` (deny wins; unknown or unlisted kinds are denied). */
export function permissionFor(p: Permissions, kind: string | null | undefined): PermissionAnswer {
  if (p === 'sandbox') return 'allow';
  const k = (kind ?? 'other') as PermissionKind;
  if (p.deny.includes(k)) return 'deny';
  if (p.allow.includes(k)) return 'allow';
  if (p.ask.includes(k)) return 'ask';
  return 'deny';
}

interface AgentRequest {
  risk: TierName;
  agent: { preset?: PresetName | undefined };
  models: ModelEntry[];
  permissions: Permissions;
}

/** Problems with `models` and `permissions` against the tier and the preset. */
export function agentViolations(p: AgentRequest): Array<{ path: Array<string | number>; message: string }> {
  const out: Array<{ path: Array<string | number>; message: string }> = [];
  const t = TIERS[p.risk];
  if (!t) return out;
  const seen = new Set<string>();
  p.models.forEach((m, i) => {
    if (seen.has(m.provider)) out.push({ path: ['models', i, 'provider'], message: `a second ${m.provider} entry; list every model of a provider in one entry's allow` });
    seen.add(m.provider);
  });
  if (p.models.length > 0 && !t.secrets) {
    out.push({ path: ['models'], message: `risk ${t.tier} may not use secrets, and a model key is one; raise risk to L1 or above` });
  }
  const preset = p.agent.preset ? PRESETS[p.agent.preset] : undefined;
  if (preset?.provider && !p.models.some((m) => m.provider === preset.provider)) {
    out.push({ path: ['models'], message: `preset ${preset.name} talks to ${preset.provider}: add a models entry with provider: ${preset.provider}, its key (secret://…) and the model ids it may use` });
  }
  if (p.permissions === 'sandbox') {
    if (!t.permissions.sandbox) out.push({ path: ['permissions'], message: `permissions: sandbox (allow everything) is allowed only up to L2; at risk ${t.tier} list kinds under allow/ask/deny` });
  } else {
    p.permissions.allow.forEach((k, i) => {
      if (!t.permissions.allow.includes(k)) {
        out.push({ path: ['permissions', 'allow', i], message: `risk ${t.tier} may not allow "${k}" without a person; move it to ask (allowed without a person here: ${t.permissions.allow.join(', ') || 'nothing'})` });
      }
    });
  }
  return out;
}

/**
 * Fills what a preset needs when the manifest does not say: memory and process limits it was seen
 * to work in (a preset's agent is a large node program; under runsc the pids limit also counts
 * gVisor's own threads). Applied to the raw document before validation.
 */
export function withPresetDefaults(data: unknown): unknown {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return data;
  const d = data as Record<string, unknown>;
  const preset = (d.agent as { preset?: unknown } | undefined)?.preset;
  if (typeof preset !== 'string' || !(preset in PRESETS)) return data;
  const p = PRESETS[preset as PresetName];
  const limits = d.limits !== null && typeof d.limits === 'object' && !Array.isArray(d.limits) ? (d.limits as Record<string, unknown>) : d.limits === undefined ? {} : undefined;
  if (!limits) return data;
  return {
    ...d,
    limits: { ...limits, ...(limits.memoryMiB === undefined ? { memoryMiB: p.minMemoryMiB } : {}), ...(limits.pids === undefined && p.provider ? { pids: 512 } : {}) },
  };
}
