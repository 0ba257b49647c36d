/**
 * A unit's model endpoint: the governance model relay for a profile with `models`, listening on
 * the host's address on the agent's own network (MODEL_RELAY_PORT), so the agent's model key
 * never enters the sandbox. The sandbox gets the relay's base URLs and a token per provider in
 * its environment; the token is honoured only while a turn of the profile runs.
 *
 * Tokens are derived, not stored: an HMAC of the profile and provider keyed with the provider key
 * itself. The same key gives the same token after a gateway restart (the sandbox's spec, which
 * covers its environment, stays the same: no re-create); a rotated key gives a new one.
 *
 * Per turn it collects what the person should hear (a model not allowed, the budget spent, the
 * key missing, an upstream failure) and the tokens used, for the reply and the transcript.
 * Every call is an audit row (model names, statuses and token counts; never prompts).
 */
import { createHmac } from 'node:crypto';
import type { Config } from '../config.js';
import type { AuditLog } from '../governance/audit.js';
import { createModelRelay } from '../governance/model-relay/index.js';
import type { ModelBudget, ModelRelay, ModelRelayEvent, ModelUsage } from '../governance/model-relay/types.js';
import type { Profile } from '../governance/profile.js';
import type { SecretResolver } from '../governance/secrets.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { MODEL_RELAY_PORT } from '../sandbox/layout.js';
import { describeError } from '../errors.js';

export interface TurnModelReport {
  /** Sentences for the person (deduplicated). */
  notes: string[];
  /** Tokens used during the turn, when any model was called. */
  usage?: { inputTokens: number; outputTokens: number; totalTokens: number; calls: number };
}

export interface ModelEndpoint {
  /** Binds the relay on `hostAddress` (once per address), issues the profile's tokens and honours the turns already open. */
  bind(hostAddress: string): Promise<void>;
  /** The sandbox's environment for the profile's models (relay base URLs and tokens); needs `bind` first. */
  env(): Record<string, string>;
  beginTurn(turnId: string): void;
  /** Ends the turn and returns what it gathered. Idempotent (a second call returns nothing). */
  endTurn(turnId: string): TurnModelReport;
  close(): Promise<void>;
}

export const usesModels = (p: Profile): boolean => p.models.length > 0;

export function createModelEndpoint(
  profile: Profile,
  d: { secrets: SecretResolver; audit: AuditLog; logger: Logger; upstreams: Config['modelApis']; budget?: ModelBudget; port?: number; metrics?: Metrics },
): ModelEndpoint {
  let relay: ModelRelay | undefined;
  let boundTo: string | undefined;
  let env: Record<string, string> = {};
  const turns = new Map<string, TurnModelReport & { seen: Set<string> }>();

  function onEvent(e: ModelRelayEvent): void {
    const ids = 'turnIds' in e ? e.turnIds : [];
    if (e.type === 'usage') d.metrics?.modelTokens(profile.id, e.provider, e.usage);
    const note = 'note' in e ? e.note : undefined;
    for (const id of ids) {
      const t = turns.get(id);
      if (!t) continue;
      if (note && e.type !== 'usage_missing' && !t.seen.has(note)) {
        t.seen.add(note);
        t.notes.push(note);
      }
      if (e.type === 'usage') add(t, e.usage);
    }
    const row = auditRow(e);
    if (row) void d.audit.record({ profile: profile.id, ...row }).catch((err: unknown) => d.logger.warn({ err: describeError(err) }, 'model audit row not written'));
  }

  function add(t: TurnModelReport, u: ModelUsage): void {
    const s = (t.usage ??= { inputTokens: 0, outputTokens: 0, totalTokens: 0, calls: 0 });
    s.inputTokens += u.inputTokens;
    s.outputTokens += u.outputTokens;
    s.totalTokens += u.totalTokens;
    s.calls += 1;
  }

  return {
    async bind(hostAddress) {
      if (!usesModels(profile) || (relay && boundTo === hostAddress)) return;
      await relay?.close().catch(() => undefined);
      relay = await createModelRelay({
        listen: { host: hostAddress, port: d.port ?? MODEL_RELAY_PORT },
        upstreams: d.upstreams,
        secrets: d.secrets,
        logger: d.logger,
        onEvent,
        ...(d.budget ? { budget: d.budget } : {}),
      });
      boundTo = hostAddress;
      const next: Record<string, string> = {};
      for (const m of profile.models) {
        const name = m.key.slice('secret://'.length);
        // Without the key the token cannot be derived; the relay reports the key missing per call.
        const key = await d.secrets.resolve(name).catch(() => `unresolved:${name}`);
        const token = `avm-${createHmac('sha256', key).update(`agent-vm model relay\n${profile.id}\n${m.provider}`).digest('base64url')}`;
        const issued = relay.issueToken({ profile: profile.id, provider: m.provider, key: m.key, allow: m.allow, ...(m.dailyTokens ? { dailyTokens: m.dailyTokens } : {}), token });
        Object.assign(next, issued.env);
      }
      env = next;
      // Turns opened before this relay existed (the turn that wakes the agent binds it) or on the
      // one it replaces are honoured here too.
      for (const turnId of turns.keys()) relay.beginTurn({ profile: profile.id, turnId });
    },
    env: () => ({ ...env }),
    beginTurn(turnId) {
      if (!usesModels(profile)) return;
      // Kept even before `bind`: a sleeping agent's first turn opens before its wake binds the relay.
      turns.set(turnId, { notes: [], seen: new Set() });
      relay?.beginTurn({ profile: profile.id, turnId });
    },
    endTurn(turnId) {
      const t = turns.get(turnId);
      turns.delete(turnId);
      relay?.endTurn(turnId);
      if (!t) return { notes: [] };
      return { notes: t.notes, ...(t.usage ? { usage: t.usage } : {}) };
    },
    async close() {
      await relay?.close();
      relay = undefined;
      boundTo = undefined;
    },
  };
}

/** The audit row for a relay event; calls and refusals only (usage is in the call's row). */
function auditRow(e: ModelRelayEvent): { action: string; decision: string; reason?: string; subject?: string; data?: Record<string, unknown> } | undefined {
  switch (e.type) {
    case 'call':
      return { action: 'model.call', decision: e.status < 400 ? 'ok' : 'error', subject: e.model ?? e.route, data: { provider: e.provider, status: e.status, durationMs: Math.round(e.durationMs), bytesOut: e.bytesOut, turnIds: e.turnIds } };
    case 'usage':
      return { action: 'model.usage', decision: 'ok', subject: e.model ?? e.route, data: { provider: e.provider, ...e.usage, turnIds: e.turnIds } };
    case 'model_denied':
      return { action: 'model.denied', decision: 'deny', reason: e.note, subject: e.model ?? e.route, data: { provider: e.provider, allowed: e.allowed } };
    case 'budget_exhausted':
      return { action: 'model.budget', decision: 'deny', reason: e.note, data: { provider: e.provider, used: e.used, limit: e.limit, day: e.day } };
    case 'key_unresolved':
      return { action: 'model.key', decision: 'deny', reason: e.note, data: { provider: e.provider, secret: e.secret } };
    case 'upstream_error':
      return { action: 'model.upstream', decision: 'error', reason: e.note, subject: e.model ?? e.route, data: { provider: e.provider, status: e.status } };
    case 'unauthorized':
      return { action: 'model.unauthorized', decision: 'deny', reason: e.reason, data: { provider: e.provider ?? null, route: e.route } };
    default:
      return undefined;
  }
}
