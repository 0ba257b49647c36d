/**
 * Approvals: a tool call that needs a person (tools.approval, or the tier's rule) waits for an
 * answer, and anything but an explicit 'approved' is a denial: no approver, a timeout, an
 * error, an unknown answer.
 *
 * `createApprovalBroker` is the in-memory queue the gateway and the local channel share: the
 * proxy calls `request`, the channel learns of it through `onRequest` (or polls `pending`) and
 * posts it to the conversation, and whoever answers calls `answer(id, ...)`.
 *
 * Deliberately left out: persistence (a gateway restart drops pending requests, which then end
 * as denials for the agent) and who may answer (the channel adapter checks that).
 */
import { randomUUID } from 'node:crypto';

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
   * conversation's own channel. Never written to the audit trail or logs.
   */
  arguments?: Record<string, unknown>;
}

/** Decides one request. Must settle; the proxy also gives up after its own timeout. */
export type Approver = (req: ApprovalRequest) => Promise<ApprovalDecision>;

export interface PendingApproval extends ApprovalRequest {
  id: string;
  requestedAt: Date;
  expiresAt: Date;
}

export interface ApprovalBroker {
  /** Usable as the proxy's `approve`: resolves when answered, or with 'timeout'. */
  request: Approver;
  /** Requests still waiting, oldest first. */
  pending(): PendingApproval[];
  /** Answers a pending request. False when there is no such request (answered, expired, unknown). */
  answer(id: string, decision: 'approved' | 'denied'): boolean;
  /** Denies every pending request (shutdown). */
  close(): void;
}

export interface ApprovalBrokerOptions {
  timeoutMs: number;
  /** Called once per new request, so the channel can post it. Errors are swallowed (the request still times out). */
  onRequest?: (req: PendingApproval) => void;
  /** Called when a request is settled, e.g. to update the posted message. */
  onSettled?: (req: PendingApproval, decision: ApprovalDecision) => void;
  now?: () => number;
}

export function createApprovalBroker(options: ApprovalBrokerOptions): ApprovalBroker {
  const now = options.now ?? Date.now;
  const waiting = new Map<string, { req: PendingApproval; settle: (d: ApprovalDecision) => void }>();
  let closed = false;

  const broker: ApprovalBroker = {
    request(req) {
      if (closed) return Promise.resolve('denied');
      const id = randomUUID();
      const at = now();
      const pending: PendingApproval = { ...req, id, requestedAt: new Date(at), expiresAt: new Date(at + options.timeoutMs) };
      return new Promise<ApprovalDecision>((resolve) => {
        const timer = setTimeout(() => settle('timeout'), options.timeoutMs);
        timer.unref?.();
        function settle(d: ApprovalDecision): void {
          if (!waiting.delete(id)) return;
          clearTimeout(timer);
          resolve(d);
          try {
            options.onSettled?.(pending, d);
          } catch {
            // a failing notifier must not change the decision
          }
        }
        waiting.set(id, { req: pending, settle });
        try {
          options.onRequest?.(pending);
        } catch {
          // the request still stands and times out if nobody sees it
        }
      });
    },
    pending() {
      return [...waiting.values()].map((w) => w.req).sort((a, b) => a.requestedAt.getTime() - b.requestedAt.getTime());
    },
    answer(id, decision) {
      const w = waiting.get(id);
      if (!w) return false;
      w.settle(decision === 'approved' ? 'approved' : 'denied');
      return true;
    },
    close() {
      closed = true;
      for (const w of [...waiting.values()]) w.settle('denied');
    },
  };
  return broker;
}

/**
 * Runs an approver with a deadline and normalises its answer: only the exact string 'approved'
 * approves; a throw is 'denied', the deadline is 'timeout'.
 */
export async function askApprover(approve: Approver | undefined, req: ApprovalRequest, timeoutMs: number): Promise<{ decision: ApprovalDecision; reason: string }> {
  if (!approve) return { decision: 'denied', reason: 'approval required but no approver is configured' };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  try {
    const d = await Promise.race([approve(req).catch(() => 'error' as const), deadline]);
    if (d === 'approved') return { decision: 'approved', reason: 'approved by a person' };
    if (d === 'timeout') return { decision: 'timeout', reason: `nobody answered within ${Math.round(timeoutMs / 1000)} s` };
    if (d === 'error') return { decision: 'denied', reason: 'the approver failed' };
    return { decision: 'denied', reason: d === 'denied' ? 'denied by a person' : 'the approver gave no valid answer' };
  } finally {
    clearTimeout(timer);
  }
}
