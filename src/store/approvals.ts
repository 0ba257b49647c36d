/**
 * The approvals table's repository, behind the approval broker (governance/approvals.ts). Every
 * state change is one conditional UPDATE on `status = 'pending'`, so two answers, or an answer
 * racing the timeout, settle a request exactly once.
 *
 * Deliberately left out: who may answer (the broker checks `approvers`) and the arguments of the
 * call (never stored; only their hash).
 */
import { and, asc, eq, gt, lte, sql } from 'drizzle-orm';
import type { Db } from './index.js';
import { approvals, type approvalStatuses } from './schema.js';

export type ApprovalStatus = (typeof approvalStatuses)[number];

/** A row of the approvals table, as the broker needs it. */
export interface ApprovalRow {
  id: string;
  profile: string;
  sessionKey: string;
  eventId: string | null;
  tool: string;
  argsHash: string;
  approvers: string[];
  status: ApprovalStatus;
  answeredBy: string | null;
  requestedAt: Date;
  expiresAt: Date;
}

export interface ApprovalRepo {
  insert(row: Omit<ApprovalRow, 'status' | 'answeredBy'>): Promise<void>;
  get(id: string): Promise<ApprovalRow | undefined>;
  /** Moves a pending, unexpired row to `status`; undefined when it was not pending or has expired. */
  answer(id: string, status: 'approved' | 'denied', answeredBy: string): Promise<ApprovalRow | undefined>;
  /** Moves a pending row to `status` whatever its expiry (the requester's timeout, a cancelled call, shutdown). */
  close(id: string, status: 'timeout' | 'denied', answeredBy: string | null): Promise<ApprovalRow | undefined>;
  /** Pending, unexpired rows, oldest first; also times out expired rows nobody settled. */
  pending(): Promise<ApprovalRow[]>;
}

type Row = typeof approvals.$inferSelect;

function toStored(r: Row): ApprovalRow {
  return {
    id: r.id,
    profile: r.profile,
    sessionKey: r.sessionKey,
    eventId: r.eventId,
    tool: r.tool,
    argsHash: r.argsHash,
    approvers: r.approvers,
    status: r.status,
    answeredBy: r.answeredBy,
    requestedAt: r.requestedAt,
    expiresAt: r.expiresAt,
  };
}

export function approvalRepo(db: Db): ApprovalRepo {
  const pendingRow = (id: string) => and(eq(approvals.id, id), eq(approvals.status, 'pending'));
  return {
    async insert(row) {
      await db.insert(approvals).values({ ...row, status: 'pending' });
    },
    async get(id) {
      const [r] = await db.select().from(approvals).where(eq(approvals.id, id)).limit(1);
      return r ? toStored(r) : undefined;
    },
    async answer(id, status, answeredBy) {
      const [r] = await db
        .update(approvals)
        .set({ status, answeredBy, settledAt: sql`now()` })
        .where(and(pendingRow(id), gt(approvals.expiresAt, sql`now()`)))
        .returning();
      return r ? toStored(r) : undefined;
    },
    async close(id, status, answeredBy) {
      const [r] = await db.update(approvals).set({ status, answeredBy, settledAt: sql`now()` }).where(pendingRow(id)).returning();
      return r ? toStored(r) : undefined;
    },
    async pending() {
      // Requests whose holder died never time themselves out; settle them here.
      await db
        .update(approvals)
        .set({ status: 'timeout', settledAt: sql`now()` })
        .where(and(eq(approvals.status, 'pending'), lte(approvals.expiresAt, sql`now()`)));
      const rows = await db.select().from(approvals).where(eq(approvals.status, 'pending')).orderBy(asc(approvals.requestedAt));
      return rows.map(toStored);
    },
  };
}
