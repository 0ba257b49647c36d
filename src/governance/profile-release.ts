/**
 * The parts of a manifest about releases (src/releases): the health check a new release must pass
 * before it serves anyone, and the rule that from L2 up an agent runs only an image pinned by
 * digest. Kept beside profile.ts like profile-agent.ts and profile-jobs.ts.
 *
 *   health:
 *     probe:                    # optional: one prompt the new release must answer
 *       prompt: "echo ready"
 *       expect: "ready"         # optional: text the answer must contain
 *     timeoutSeconds: 60        # initialize + new session + probe, on a copy of the workspace
 *
 * Deliberately left out: probes that use the agent's tools or model (the probe runs with no MCP
 * servers, and the model relay honours no token outside a person's turn).
 */
import { z } from 'zod';
import type { RiskTier } from './profile.js';

/** An image named by digest: the engine's id (`sha256:<64 hex>`) or `<name>@sha256:<64 hex>`. */
export const DIGEST_REF = /^(?:[a-z0-9][a-z0-9._/:-]{0,255}@)?sha256:[0-9a-f]{64}$/;

/** Tiers whose agents run only an image pinned by digest in a release. */
export const DIGEST_TIERS: readonly RiskTier[] = ['L2', 'L3', 'L4', 'L5'];
/** Tiers whose releases serve a canary before they are promoted. */
export const CANARY_TIERS: readonly RiskTier[] = ['L3', 'L4', 'L5'];

export const healthSchema = z.strictObject({
  probe: z
    .strictObject({
      prompt: z.string().min(1, 'must not be empty').max(2000),
      expect: z.string().min(1, 'must not be empty').max(500).optional(),
    })
    .optional(),
  timeoutSeconds: z.number().int('must be a whole number').min(5).max(600).default(60),
});

export type HealthSettings = z.output<typeof healthSchema>;

/** A manifest naming a bare tag where the tier needs a digest. */
export function releaseViolations(p: { id: string; risk: RiskTier; image?: string | undefined }): Array<{ path: Array<string | number>; message: string }> {
  if (!DIGEST_TIERS.includes(p.risk) || p.image === undefined || DIGEST_REF.test(p.image)) return [];
  return [{
    path: ['image'],
    message: `risk ${p.risk} runs only an image pinned by digest: "${p.image.slice(0, 200)}" is a tag; name it as sha256:<id> or <name>@sha256:<digest>, or leave image out and pin it with agent-vm release apply ${p.id}`,
  }];
}
