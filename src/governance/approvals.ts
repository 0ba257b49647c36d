/**
 * Approvals: a tool call that needs a person (tools.approval, or the tier's rule) waits for an
 * answer, and anything but an explicit 'approved' is a denial: no approver, a timeout, an
 * error, an unknown answer.
 *
 * `createApprovalBroker` keeps every request in an `ApprovalStore` (the `approvals` table in
 * production), so the process whose channel receives the answer (a Slack button press, the local
 * API) need not be the unit holding the call: the unit polls the row, and an answer given in the
 * same process wakes it at once. Who may answer is fixed when the request is made (`approvers`,
 * as `<platform>:<user id>`); the operator API (`by` absent) may always answer. An answer is taken
 * only while the row is pending and unexpired, in one conditional update, so a button pressed as
 * the request times out cannot approve it.
 *
 * One timer: the broker's (`timeoutMs`, from AGENTVM_APPROVAL_TIMEOUT_SECONDS). The proxy sets none
 * of its own; it passes the call's AbortSignal instead, so a call the agent gives up on settles
 * its request too. Every way a request ends (answer, timeout, cancel, shutdown) reaches
 * `onSettled`, which updates the prompt the channel posted, so no button outlives its call.
 */
import { randomUUID } from 'node:crypto';
import type { ApprovalRepo, ApprovalRow } from '../store/approvals.js';

export type ApprovalDecision = 'approved' | 'denied' | 'timeout';

export interface ApprovalRequest {
  profile: string;
  /** The session the call came from (the gateway's key for the conversation's ACP session). */
  sessionKey: string;
  /** `<server>.<tool>` as in the manifest. */
  tool: string;
  /** sha256 of the canonical JSON of the arguments: what the audit trail stores. */
  argsHash: string;
  /**
   * The arguments themselves, already redacted of secret values, for the person to read in the
   * conversation's own channel. Never stored, written to the audit trail or logged.
   */
  arguments?: Record<string, unknown>;
}

/** What an approver decided, and (for the audit trail) who decided it, as `<platform>:<user id>`. */
export interface ApprovalAnswer {
  decision: ApprovalDecision;
  by: string | null;
}

/**
 * Decides one request. Must settle on its own deadline, and at once (denied) when `signal` aborts:
 * the call was cancelled. The broker's `request` is one.
 */
export type Approver = (req: ApprovalRequest, signal?: AbortSignal) => Promise<ApprovalDecision | ApprovalAnswer>;

export interface PendingApproval extends ApprovalRequest {
  id: string;
  /** The turn the call belongs to, when known. */
  eventId?: string;
  /** `<platform>:<user id>` of who may answer through a channel. */
  approvers: string[];
  requestedAt: Date;
  expiresAt: Date;
}

/** Who answered: a person on a platform, or (absent) the operator API. */
export interface Answerer {
  platform: string;
  user: string;
}

export type AnswerResult =
  | { status: 'answered' }
  /** Answered already, expired, or never existed. */
  | { status: 'unknown' }
  /** This person is not one of the request's approvers. */
  | { status: 'not_allowed'; approvers: string[] };

/** A row of the approvals table, as the broker needs it. */
export type StoredApproval = ApprovalRow;

/** Where requests live: `store.approvals` (src/store/approvals.ts), or memoryApprovalStore. */
export type ApprovalStore = ApprovalRepo;

export interface ApprovalBroker {
  /**
   * Usable as the proxy's `approve`: resolves when answered, with 'timeout' after `timeoutMs`, or
   * denied (by `system:cancelled`) as soon as `signal` aborts.
   */
  request(req: ApprovalRequest, signal?: AbortSignal): Promise<ApprovalAnswer>;
  /** Requests still waiting, oldest first. */
  pending(): Promise<PendingApproval[]>;
  /** Answers a pending request, as `by` or (absent) as the operator. */
  answer(id: string, decision: 'approved' | 'denied', by?: Answerer): Promise<AnswerResult>;
  /** Denies every request this broker is waiting on (shutdown). */
  close(): Promise<void>;
}

export interface ApprovalBrokerOptions {
  store: ApprovalStore;
  timeoutMs: number;
  /** How often a waiting request re-reads its row for an answer given elsewhere. Default 250 ms. */
  pollMs?: number;
  /** The turn and approvers of a request (the gateway looks up the event). Default: none, operator only. */
  describe?: (req: ApprovalRequest) => Promise<{ eventId?: string; approvers: string[] }>;
  /** Called once per new request, so the channel can post it. Errors are swallowed (the request still times out). */
  onRequest?: (req: PendingApproval) => void;
  /** Called when a request this broker made is settled, e.g. to update the posted message. */
  onSettled?: (req: PendingApproval, decision: ApprovalDecision, answeredBy: string | null) => void;
  now?: () => number;
}

const OPERATOR = 'local:api';
/** Who "answered" a request whose call was cancelled (the agent gave up, the turn ended). */
export const CANCELLED_BY = 'system:cancelled';

export function createApprovalBroker(options: ApprovalBrokerOptions): ApprovalBroker {
  const now = options.now ?? Date.now;
  const pollMs = options.pollMs ?? 250;
  const { store } = options;
  /** Requests this process is waiting on: an answer given here, or close(), wakes them without a poll. */
  const waiting = new Map<string, () => void>();
  let closed = false;

  async function request(req: ApprovalRequest, signal?: AbortSignal): Promise<ApprovalAnswer> {
    if (closed) return { decision: 'denied', by: 'system:shutdown' };
    if (signal?.aborted) return { decision: 'denied', by: CANCELLED_BY };
    const ctx = (await options.describe?.(req)) ?? { approvers: [] };
    const at = now();
    const pending: PendingApproval = {
      ...req,
      id: randomUUID(),
      ...(ctx.eventId ? { eventId: ctx.eventId } : {}),
      approvers: ctx.approvers,
      requestedAt: new Date(at),
      expiresAt: new Date(at + options.timeoutMs),
    };
    await store.insert({
      id: pending.id,
      profile: req.profile,
      sessionKey: req.sessionKey,
      eventId: pending.eventId ?? null,
      tool: req.tool,
      argsHash: req.argsHash,
      approvers: pending.approvers,
      requestedAt: pending.requestedAt,
      expiresAt: pending.expiresAt,
    });
    try {
      options.onRequest?.(pending);
    } catch {
      // the request still stands and times out if nobody sees it
    }

    let settled: StoredApproval | undefined;
    const wakeOnAbort = () => waiting.get(pending.id)?.();
    signal?.addEventListener('abort', wakeOnAbort, { once: true });
    try {
      while (!settled) {
        const left = pending.expiresAt.getTime() - now();
        if (closed || signal?.aborted || left <= 0) {
          const [status, by] = closed ? (['denied', 'system:shutdown'] as const) : signal?.aborted ? (['denied', CANCELLED_BY] as const) : (['timeout', null] as const);
          settled = (await store.close(pending.id, status, by).catch(() => undefined)) ?? (await store.get(pending.id).catch(() => undefined));
          break;
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(pollMs, left));
          function done(): void {
            clearTimeout(timer);
            waiting.delete(pending.id);
            resolve();
          }
          waiting.set(pending.id, done);
        });
        const row = await store.get(pending.id).catch(() => undefined);
        if (row && row.status !== 'pending') settled = row;
      }
    } finally {
      signal?.removeEventListener('abort', wakeOnAbort);
    }
    // Unreadable store: fail closed.
    const decision: ApprovalDecision = settled && settled.status !== 'pending' ? settled.status : 'denied';
    const by = settled?.answeredBy ?? null;
    try {
      options.onSettled?.(pending, decision, by);
    } catch {
      // a failing notifier must not change the decision
    }
    return { decision, by };
  }

  return {
    request,
    async pending() {
      return (await store.pending()).map(toPending);
    },
    async answer(id, decision, by) {
      const row = await store.get(id);
      if (!row || row.status !== 'pending' || row.expiresAt.getTime() <= now()) return { status: 'unknown' };
      const who = by ? `${by.platform}:${by.user}` : OPERATOR;
      if (by && !row.approvers.includes(who)) return { status: 'not_allowed', approvers: row.approvers };
      const taken = await store.answer(id, decision === 'approved' ? 'approved' : 'denied', who);
      if (!taken) return { status: 'unknown' };
      waiting.get(id)?.();
      return { status: 'answered' };
    },
    async close() {
      closed = true;
      for (const wake of [...waiting.values()]) wake();
    },
  };
}

function toPending(r: StoredApproval): PendingApproval {
  return {
    id: r.id,
    profile: r.profile,
    sessionKey: r.sessionKey,
    tool: r.tool,
    argsHash: r.argsHash,
    ...(r.eventId ? { eventId: r.eventId } : {}),
    approvers: r.approvers,
    requestedAt: r.requestedAt,
    expiresAt: r.expiresAt,
  };
}

/** An `ApprovalStore` in memory: for tests and tools that run without a database. */
export function memoryApprovalStore(now: () => number = Date.now): ApprovalStore {
  const rows = new Map<string, StoredApproval>();
  const copy = (r: StoredApproval | undefined) => (r ? { ...r, approvers: [...r.approvers] } : undefined);
  return {
    async insert(row) {
      rows.set(row.id, { ...row, status: 'pending', answeredBy: null });
    },
    async get(id) {
      return copy(rows.get(id));
    },
    async answer(id, status, answeredBy) {
      const r = rows.get(id);
      if (!r || r.status !== 'pending' || r.expiresAt.getTime() <= now()) return undefined;
      Object.assign(r, { status, answeredBy });
      return copy(r);
    },
    async close(id, status, answeredBy) {
      const r = rows.get(id);
      if (!r || r.status !== 'pending') return undefined;
      Object.assign(r, { status, answeredBy });
      return copy(r);
    },
    async pending() {
      const t = now();
      return [...rows.values()]
        .filter((r) => r.status === 'pending' && r.expiresAt.getTime() > t)
        .sort((a, b) => a.requestedAt.getTime() - b.requestedAt.getTime())
        .map((r) => copy(r)!);
    },
  };
}

/**
 * Runs an approver and normalises its answer: only the exact string 'approved' approves; a throw
 * is 'denied'. The approver's own deadline is the one that counts; `timeoutMs` is only a safety
 * net for approvers without one (none in the gateway), and `signal` is passed on so a cancelled
 * call settles the request where it is shown.
 */
export async function askApprover(
  approve: Approver | undefined,
  req: ApprovalRequest,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<{ decision: ApprovalDecision; reason: string }> {
  if (!approve) return { decision: 'denied', reason: 'approval required but no approver is configured' };
  const { timeoutMs, signal } = opts;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    if (timeoutMs !== undefined) timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  try {
    const got = await Promise.race([approve(req, signal).catch(() => 'error' as const), deadline]);
    const d: unknown = typeof got === 'object' && got !== null ? got.decision : got;
    const by = typeof got === 'object' && got !== null && typeof got.by === 'string' ? got.by : undefined;
    if (d === 'approved') return { decision: 'approved', reason: `approved by ${by ?? 'a person'}` };
    if (d === 'timeout') return { decision: 'timeout', reason: got === 'timeout' ? `nobody answered within ${Math.round((timeoutMs ?? 0) / 1000)} s` : 'nobody answered in time' };
    if (d === 'denied' && by === CANCELLED_BY) return { decision: 'denied', reason: 'the call was cancelled before anyone answered' };
    if (d === 'error') return { decision: 'denied', reason: 'the approver failed' };
    return { decision: 'denied', reason: d === 'denied' ? `denied by ${by ?? 'a person'}` : 'the approver gave no valid answer' };
  } finally {
    clearTimeout(timer);
  }
}
