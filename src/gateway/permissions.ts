/**
 * Answers an agent's own permission requests (ACP session/request_permission: write a file, run a
 * command) by the profile's `permissions`: allow, ask a person (the same approval flow as tool
 * calls: buttons in Slack and Discord, the operator API), or deny — by the tool kind the agent
 * names, deny winning, anything unlisted denied. The tier capped what a manifest may allow
 * (profile-agent.ts). An agent that names no kind is asking for `other`.
 */
import type * as acp from '@agentclientprotocol/sdk';
import { hashOf } from '../governance/audit.js';
import { askApprover, type Approver } from '../governance/approvals.js';
import { permissionFor } from '../governance/profile-agent.js';
import { printable } from '../text.js';
import type { PermissionDecision } from './acp.js';
import type { PermissionContext } from './turn-types.js';

const INPUT_PREVIEW = 2000;

function pick(options: acp.PermissionOption[], kinds: Array<acp.PermissionOption['kind']>): string | undefined {
  for (const k of kinds) {
    const o = options.find((x) => x.kind === k);
    if (o) return o.optionId;
  }
  return undefined;
}

export function createPermissionPolicy(o: { approve?: Approver; timeoutMs: number; redact: (t: string) => string }) {
  return async function permission(ctx: PermissionContext): Promise<PermissionDecision> {
    const { request, profile } = ctx;
    const kind = request.toolCall.kind ?? 'other';
    const title = printable(request.toolCall.title ?? 'an action', 300);
    const answer = permissionFor(profile.permissions, kind);
    // Once, never "always": the next request is decided again.
    const allowOnce = () => {
      const id = pick(request.options, ['allow_once', 'allow_always']);
      return id ? ({ allow: true, optionId: id } as const) : ({ allow: false, reason: 'the agent offered no way to allow it' } as const);
    };
    if (answer === 'allow') return allowOnce();
    if (answer === 'deny') return { allow: false, reason: `permissions do not allow "${kind}" actions for this agent` };
    const input = request.toolCall.rawInput === undefined ? undefined : o.redact(JSON.stringify(request.toolCall.rawInput) ?? '');
    const a = await askApprover(
      o.approve,
      {
        profile: profile.id,
        sessionKey: ctx.conversation,
        tool: `permission.${kind}`,
        argsHash: hashOf(request.toolCall.rawInput ?? null),
        arguments: { action: title, ...(input ? { input: input.length > INPUT_PREVIEW ? `${input.slice(0, INPUT_PREVIEW)}…` : input } : {}) },
      },
      { timeoutMs: o.timeoutMs },
    );
    if (a.decision === 'approved') return allowOnce();
    return { allow: false, reason: a.decision === 'timeout' ? 'nobody approved it in time' : `a person denied it (${a.reason})` };
  };
}
