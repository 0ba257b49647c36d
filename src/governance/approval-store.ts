/**
 * The approvals table behind the approval broker (approvals.ts). Every state change
 * is one conditional UPDATE on `status = 'pending'`, so two answers, or an answer racing the
 * timeout, settle a request exactly once.
 */
import { and, asc, eq, gt, lte, sql } from 'drizzle-orm';
import type { ApprovalStore, StoredApproval } from './approvals.js';
import type { Db } from '../store/index.js';
import { approvals } from '../store/schema.js';

type Row = typeof approvals.$inferSelect;

function toStored(r: Row): StoredApproval {
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

export function approvalStore(db: Db): ApprovalStore {
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
