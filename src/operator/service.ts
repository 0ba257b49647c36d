/**
 * What an operator can see and do, once: the JSON API (index.ts), the dashboard (ui.ts) and, over
 * HTTP, the CLI's `--server` mode all call these functions, so they never disagree.
 *
 * Every change (wake, sleep, snapshot, an approval answered, a re-pin) is written to the audit
 * trail as the operator who made it (`local:api` or the dashboard session, auth.ts). Text that an
 * agent, a platform or a tool server wrote goes through `redact` before it is returned, so no
 * secret value the gateway knows reaches a page or a JSON answer.
 *
 * Deliberately left out: releases (to come), destroying sandboxes (CLI only), and message bodies
 * in lists (only a conversation's own transcript shows them).
 */
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';
import type { ApprovalBroker, PendingApproval } from '../governance/approvals.js';
import type { AuditLog, AuditRow, AuditVerifyResult } from '../governance/audit.js';
import { pinView, repinQuarantined, type PinView } from '../governance/mcp-pins.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SnapshotStore } from '../sandbox/snapshots/types.js';
import type { SandboxDriver } from '../sandbox/types.js';
import type { FeedbackRepo, FeedbackRow, FeedbackValue } from '../store/feedback.js';
import type { AgentRow } from '../store/index.js';
import type { ConversationSummary, EventSummary, OperatorQueries } from '../store/operator.js';
import type { PinRepo } from '../store/pins.js';
import type { TranscriptRepo } from '../store/transcripts.js';
import type { Operator } from './auth.js';

/** A profile's unit in this process, as far as an operator drives it (gateway/unit.ts). */
export interface OperableUnit {
  wake(): Promise<void>;
  /** False: turns are running, nothing was done. */
  sleep(reason: string): Promise<boolean>;
}

export interface OperatorDeps {
  approvals: Pick<ApprovalBroker, 'pending' | 'answer'>;
  pins: PinRepo;
  audit: AuditLog;
  logger: Logger;
  queries?: OperatorQueries;
  transcripts?: Pick<TranscriptRepo, 'transcript'>;
  agents?: {
    profiles: () => ReadonlyMap<string, Profile>;
    rows: () => Promise<AgentRow[]>;
    driver: Pick<SandboxDriver, 'list' | 'snapshot'>;
    units: ReadonlyMap<string, OperableUnit>;
    /** The snapshot store, for each agent's generations. */
    snapshots?: Pick<SnapshotStore, 'list'>;
  };
  metrics?: Metrics;
  /** People's 👍/👎 on answers (Slack feedback buttons). */
  feedback?: Pick<FeedbackRepo, 'list' | 'counts'>;
  /** Removes secret values the gateway knows from text shown to operators. Default identity. */
  redact?: (text: string) => string;
}

export interface AgentView {
  id: string;
  name: string | null;
  risk: string | null;
  /** The runtime the manifest asks for (`auto`, `runsc`, …). */
  runtimeSetting: string | null;
  /** As last recorded: running, sleeping, destroyed; `never` when it never woke. */
  state: string;
  /** What the engine says now: running, paused, stopped, missing. */
  sandbox: string;
  /** The runtime the sandbox actually ran on at its last wake, and the engine's name for it. */
  runtime: string | null;
  engineRuntime: string | null;
  image: string | null;
  specHash: string | null;
  lastWakeAt: string | null;
  lastWakeMs: number | null;
  lastTurn: { eventId: string; conversation: string; status: string; at: string } | null;
  /** Newest first. */
  wakes: Array<{ at: string; action: string | null; runtime: string | null; wakeMs: number | null; restored: boolean }>;
  /** Snapshots taken at sleep or by an operator, as audited, newest first. */
  snapshots: Array<{ at: string; bytes: number | null; by: string }>;
  /** Snapshot generations in the store, newest first (at most 10); `error` when a manifest cannot be read. */
  generations: Array<{ generation: number; at: string | null; bytes: number | null; files: number | null; reason: string | null; release: string | null; error: string | null }>;
  /** Self-healing escalations (`heal` audit rows: decision is the level, restart or replace), newest first. */
  healing: Array<{ at: string; level: string; reason: string | null }>;
  /** A unit in this process serves it (wake and sleep work here). */
  served: boolean;
}

export type TranscriptItem =
  | { type: 'entry'; at: string; eventId: string; kind: string; text: string; meta: unknown }
  | { type: 'audit'; at: string; seq: number; action: string; decision: string; subject: string | null; reason: string | null };

export type AgentAction = 'wake' | 'sleep' | 'snapshot';

/** A rating as operators see it (`at` as ISO 8601). */
export type FeedbackView = Omit<FeedbackRow, 'at'> & { at: string };

export interface OperatorService {
  agents(): Promise<AgentView[]>;
  agentAction(id: string, action: AgentAction, by: Operator): Promise<{ id: string; action: AgentAction; detail: string }>;
  conversations(f: { profile?: string; limit?: number }): Promise<ConversationSummary[]>;
  conversation(id: string): Promise<{ conversation: string; events: EventSummary[]; items: TranscriptItem[]; feedback: FeedbackView[] }>;
  /** Ratings of answers, newest first, and how many of each value match in all. */
  feedback(f: { profile?: string; limit?: number }): Promise<{ summary: Record<FeedbackValue, number>; rows: FeedbackView[] }>;
  approvals(): Promise<PendingApproval[]>;
  answerApproval(id: string, decision: 'approved' | 'denied', by: Operator): Promise<{ id: string; decision: string }>;
  pins(profile?: string): Promise<PinView[]>;
  repin(profile: string, tool: string, by: Operator, expect?: string): Promise<PinView>;
  audit(f: { profile?: string; action?: string; decision?: string; subject?: string; before?: number; limit?: number }): Promise<AuditRow[]>;
  verify(): Promise<AuditVerifyResult>;
}

const feedbackView = (r: FeedbackRow): FeedbackView => ({ ...r, at: r.at.toISOString() });

const iso = (d: Date | string | null | undefined) => (d == null ? null : typeof d === 'string' ? d : d.toISOString());

function need<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new AgentVmError('operator_unavailable', `${what} is not available in this process`, { status: 503 });
  return v;
}

export function createOperatorService(d: OperatorDeps): OperatorService {
  const log = d.logger.child({ component: 'operator' });
  const redact = d.redact ?? ((t: string) => t);
  const redactDeep = (v: unknown): unknown =>
    typeof v === 'string' ? redact(v) : Array.isArray(v) ? v.map(redactDeep) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactDeep(x)])) : v;

  async function record(by: Operator, action: string, decision: string, subject: string, extra: Record<string, unknown> = {}, profile: string | null = null): Promise<void> {
    await d.audit.record({ profile, action, decision, subject, reason: `by ${by.id}`, data: { by: by.id, via: by.via, ...extra } });
  }

  return {
    async agents() {
      const a = need(d.agents, 'the agent list');
      const q = need(d.queries, 'the operator queries');
      const profiles = a.profiles();
      const [rows, live, last] = await Promise.all([a.rows(), a.driver.list().catch(() => []), q.lastTurns()]);
      const byRow = new Map(rows.map((r) => [r.id, r]));
      const byLive = new Map(live.map((s) => [s.agentId, s]));
      const byTurn = new Map(last.map((e) => [e.profile ?? '', e]));
      const ids = [...new Set([...profiles.keys(), ...rows.map((r) => r.id)])].sort();
      return Promise.all(
        ids.map(async (id): Promise<AgentView> => {
          const p = profiles.get(id);
          const r = byRow.get(id);
          const turn = byTurn.get(id);
          const [wakes, sleeps, snaps, heals, stored] = await Promise.all([
            q.audit({ profile: id, action: 'wake', limit: 10 }),
            q.audit({ profile: id, action: 'sleep', limit: 10 }),
            q.audit({ profile: id, action: 'operator.snapshot', limit: 10 }),
            q.audit({ profile: id, action: 'heal', limit: 10 }),
            a.snapshots ? a.snapshots.list(id).catch(() => []) : Promise.resolve([]),
          ]);
          const snapshots = [
            ...sleeps.filter((s) => typeof (s.data as { snapshotBytes?: unknown } | null)?.snapshotBytes === 'number').map((s) => ({ at: s.at, bytes: (s.data as { snapshotBytes: number }).snapshotBytes, by: 'sleep' })),
            ...snaps.filter((s) => s.decision === 'ok').map((s) => ({ at: s.at, bytes: (s.data as { bytes?: number } | null)?.bytes ?? null, by: String((s.data as { by?: unknown } | null)?.by ?? 'operator') })),
          ].sort((x, y) => (x.at < y.at ? 1 : -1));
          return {
            id,
            name: p?.name ?? null,
            risk: p?.risk ?? null,
            runtimeSetting: p?.runtime ?? null,
            state: r?.state ?? 'never',
            sandbox: byLive.get(id)?.state ?? 'missing',
            runtime: r?.runtime ?? null,
            engineRuntime: r?.engineRuntime ?? null,
            image: r?.image ?? null,
            specHash: r?.specHash ?? null,
            lastWakeAt: iso(r?.lastWakeAt),
            lastWakeMs: r?.lastWakeMs ?? null,
            lastTurn: turn ? { eventId: turn.id, conversation: turn.conversation, status: turn.status, at: iso(turn.updatedAt)! } : null,
            wakes: wakes.map((w) => {
              const x = (w.data ?? {}) as { action?: string; runtime?: string; wakeMs?: number; restored?: boolean };
              return { at: w.at, action: x.action ?? null, runtime: x.runtime ?? null, wakeMs: typeof x.wakeMs === 'number' ? x.wakeMs : null, restored: x.restored === true };
            }),
            snapshots,
            generations: [...stored]
              .sort((x, y) => y.generation - x.generation)
              .slice(0, 10)
              .map((g) => ({
                generation: g.generation,
                at: g.manifest?.createdAt ?? null,
                bytes: g.manifest?.bytes ?? null,
                files: g.manifest?.files ?? null,
                reason: g.manifest?.reason ?? null,
                release: g.manifest?.release ?? null,
                error: g.manifestError ?? null,
              })),
            healing: heals.map((h) => ({ at: h.at, level: h.decision, reason: h.reason })),
            served: a.units.has(id),
          };
        }),
      );
    },

    async agentAction(id, action, by) {
      const a = need(d.agents, 'agent control');
      if (!a.profiles().has(id)) throw new AgentVmError('not_found', `no profile "${id}" is served by this gateway`, { status: 404 });
      try {
        let detail: string;
        if (action === 'snapshot') {
          const s = await a.driver.snapshot(id, { reason: 'operator' });
          d.metrics?.snapshotTaken(id, s.bytes);
          detail = `generation ${s.generation}, ${s.bytes} bytes`;
          await record(by, 'operator.snapshot', 'ok', id, { generation: s.generation, bytes: s.bytes, sha256: s.sha256 }, id);
        } else {
          const unit = a.units.get(id);
          if (!unit) throw new AgentVmError('unit_elsewhere', `the unit of "${id}" does not run in this process; ${action} it where it runs (agent-vm unit ${id}) or with agent-vm agents ${action}`, { status: 409 });
          if (action === 'wake') {
            await unit.wake();
            detail = 'awake';
          } else {
            if (!(await unit.sleep(`operator ${by.id}`))) throw new AgentVmError('turns_running', `"${id}" has turns running; try again when they end`, { status: 409 });
            detail = 'asleep';
          }
          await record(by, `operator.${action}`, 'ok', id, {}, id);
        }
        log.info({ agent: id, action, by: by.id }, 'operator action');
        return { id, action, detail };
      } catch (err) {
        const status = isAgentVmError(err) ? err.status : 500;
        await record(by, `operator.${action}`, 'error', id, { error: describeError(err).slice(0, 300) }, id).catch(() => undefined);
        if (isAgentVmError(err)) throw err;
        throw new AgentVmError(`${action}_failed`, `${action} of "${id}" failed: ${describeError(err)}`, { status: status >= 500 ? 502 : status, cause: err });
      }
    },

    conversations(f) {
      return need(d.queries, 'the operator queries').conversations({ ...(f.profile ? { profile: f.profile } : {}), limit: f.limit ?? 100 });
    },

    async conversation(id) {
      const q = need(d.queries, 'the operator queries');
      const t = need(d.transcripts, 'transcripts');
      const [events, entries, rated] = await Promise.all([q.conversationEvents(id, 500), t.transcript(id), d.feedback ? d.feedback.list({ conversation: id, limit: 1000 }) : []]);
      if (events.length === 0 && entries.length === 0) throw new AgentVmError('not_found', 'no such conversation', { status: 404 });
      const audit = await q.turnAudit(events.map((e) => e.id), 500);
      const items: TranscriptItem[] = [
        ...entries.map((e): TranscriptItem => ({ type: 'entry', at: e.createdAt.toISOString(), eventId: e.eventId, kind: e.kind, text: redact(e.text), meta: redactDeep(e.meta) })),
        ...audit.map((r): TranscriptItem => ({ type: 'audit', at: r.at, seq: r.seq, action: r.action, decision: r.decision, subject: r.subject === null ? null : redact(r.subject), reason: r.reason === null ? null : redact(r.reason) })),
      ].sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0));
      return { conversation: id, events, items, feedback: rated.map(feedbackView) };
    },

    async feedback(f) {
      const repo = need(d.feedback, 'feedback');
      const filter = f.profile ? { profile: f.profile } : {};
      const [summary, rows] = await Promise.all([repo.counts(filter), repo.list({ ...filter, limit: f.limit ?? 100 })]);
      return { summary, rows: rows.map(feedbackView) };
    },

    approvals: () => d.approvals.pending(),

    async answerApproval(id, decision, by) {
      const pending = (await d.approvals.pending()).find((p) => p.id === id);
      const result = await d.approvals.answer(id, decision);
      if (result.status !== 'answered') throw new AgentVmError('not_found', 'no such pending approval (already answered, expired, or unknown)', { status: 404 });
      await record(by, 'operator.approval', decision, id, { tool: pending?.tool ?? null }, pending?.profile ?? null).catch((err: unknown) => log.warn({ err: describeError(err), approval: id }, 'could not audit an approval answer'));
      return { id, decision };
    },

    async pins(profile) {
      const rows = await d.pins.list(profile === undefined || profile === '' ? undefined : profile);
      return rows.map((r) => redactDeep(pinView(r)) as PinView);
    },

    async repin(profile, tool, by, expect) {
      if (expect !== undefined && !/^[0-9a-f]{64}$/.test(expect)) {
        throw new AgentVmError('bad_request', '"expect" must be the 64-hex-digit hash of the quarantined definition (GET /v1/pins)', { status: 400 });
      }
      const pin = await repinQuarantined({ pins: d.pins, audit: d.audit }, profile, tool, by.id, expect);
      log.info({ profile, tool, by: by.id }, 'tool re-pinned by an operator');
      return redactDeep(pin) as PinView;
    },

    async audit(f) {
      const rows = await need(d.queries, 'the operator queries').audit({
        ...(f.profile ? { profile: f.profile } : {}),
        ...(f.action ? { action: f.action } : {}),
        ...(f.decision ? { decision: f.decision } : {}),
        ...(f.subject ? { subject: f.subject } : {}),
        ...(f.before !== undefined ? { beforeSeq: f.before } : {}),
        limit: f.limit ?? 100,
      });
      return rows.map((r) => ({ ...r, subject: r.subject === null ? null : redact(r.subject), reason: r.reason === null ? null : redact(r.reason), data: redactDeep(r.data) }));
    },

    verify: () => d.audit.verify(),
  };
}
