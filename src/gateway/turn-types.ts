/**
 * What a turn needs and the policy it runs under, shared by turn.ts (the event's life) and
 * converse.ts (the agent's part).
 */
import type * as acp from '@agentclientprotocol/sdk';
import type { ChannelAdapter, InboundEvent, Platform } from '../adapters/types.js';
import type { AuditLog } from '../governance/audit.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SandboxDriver } from '../sandbox/types.js';
import type { GatewayRepo } from '../store/gateway.js';
import type { PermissionDecision } from './acp.js';
import type { AgentLink } from './link.js';
import type { TurnSignals } from './watch.js';

export interface PermissionContext {
  profile: Profile;
  event: InboundEvent;
  /** The conversation key (the approval flow finds the turn and its asker by it). */
  conversation: string;
  request: acp.RequestPermissionRequest;
}

/** One turn's MCP servers, and the revocation of their credentials when the turn ends. */
export interface TurnToolGrant {
  readonly servers: acp.McpServer[];
  /** Idempotent; called in the turn's `finally`. */
  release(): void;
}

export interface TurnPolicy {
  /** Answers session/request_permission. The default denies everything: no policy, no permission. */
  permission(ctx: PermissionContext): Promise<PermissionDecision>;
  /** MCP servers handed to the agent for one turn (session/new and session/load). Default none. */
  tools(ctx: { profile: Profile; conversation: string; eventId: string; ttlMs: number; /** The agent connection the servers go to (a token per session and connection). */ connection: unknown }): TurnToolGrant;
  /** Applied to reply text and text files leaving for a channel (secret redaction). Default identity. */
  redact(text: string): string;
  /** Characters of a streamed answer to hold back (the longest secret form less one), so no secret shows half-redacted. */
  holdback(): number;
  /** Grace after session/cancel before the turn abandons its session. */
  cancelGraceMs: number;
  /** Minimum time between stored progress entries of one turn. */
  progressEveryMs: number;
}

export const DEFAULT_POLICY: TurnPolicy = {
  permission: async () => ({ allow: false, reason: 'no policy allows it' }),
  tools: () => ({ servers: [], release: () => undefined }),
  redact: (t) => t,
  holdback: () => 0,
  cancelGraceMs: 5_000,
  progressEveryMs: 1_000,
};

export interface TurnDeps {
  /** The event was started by the unit's claim (its attempt counted, its prompt in the transcript); a turn runs only then. */
  started?: boolean;
  /** The conversation's ACP session as the claim read it (null: none); undefined: not read yet. */
  session?: string | null;
  profile: Profile;
  repo: GatewayRepo;
  audit: AuditLog;
  link: AgentLink;
  adapters: ReadonlyMap<Platform, ChannelAdapter>;
  signals: TurnSignals;
  logger: Logger;
  driver: SandboxDriver;
  outbox: { maxFileBytes: number; maxTotalBytes: number; maxFiles: number };
  /** Longest reply text sent as a message; beyond it the whole answer goes as a file. */
  reply: { maxBytes: number };
  /** Notes for the person gathered outside the turn (the agent was replaced or restored); drained per turn. */
  notes?: () => string[];
  /** The profile's model relay: tokens honoured from the turn's start to its end; notes and usage. */
  models?: { beginTurn(turnId: string): void; endTurn(turnId: string): { notes: string[]; usage?: unknown } };
  policy?: Partial<TurnPolicy>;
  /** Counts each turn's end (src/metrics.ts). */
  metrics?: Metrics;
}
