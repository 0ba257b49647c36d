/**
 * The audit trail: an append-only, hash-chained record of every decision (route, wake, tool
 * list, tool call, approval, secret resolution by name, file sent out). Each row's hash covers
 * its content and the previous row's hash, so editing or deleting a row breaks the chain there.
 *
 * Deliberately left out: raw arguments and message bodies. Callers pass `hashOf(value)` for
 * anything a user or agent wrote; only names, ids, decisions and reasons are stored in clear.
 */
import { createHash } from 'node:crypto';
import { asc, desc, gt, sql } from 'drizzle-orm';
import type { Db } from '../store/index.js';
import { audit } from '../store/schema.js';

export type AuditRow = typeof audit.$inferSelect;

export interface AuditEntry {
  profile?: string | null;
  /** What was decided about: `route`, `wake`, `tool.list`, `tool.call`, `permission`, `secret.resolve`, `file.out`... */
  action: string;
  /** `allow`, `deny`, `reject`, `ok`, `error`... */
  decision: string;
  reason?: string | null;
  /** The thing decided about: an event id, a tool name, a file name. Never a secret or message body. */
  subject?: string | null;
  data?: Record<string, unknown> | null;
}

export interface AuditLog {
  record(entry: AuditEntry): Promise<AuditRow>;
  /** Appends several rows, in order, in one transaction (one lock, one round of the chain). */
  recordMany(entries: readonly AuditEntry[]): Promise<AuditRow[]>;
  /** The newest `n` rows, oldest first. */
  tail(n: number): Promise<AuditRow[]>;
  /** Walks the chain from the start; reports the first row whose link or hash is wrong. */
  verify(): Promise<AuditVerifyResult>;
}

export type AuditVerifyResult = { ok: true; rows: number } | { ok: false; rows: number; brokenAt: number; reason: string };

export const GENESIS_HASH = '0'.repeat(64);

/** SHA-256 of a value's canonical JSON: how arguments and bodies enter the audit trail. */
export function hashOf(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}

/** JSON with object keys sorted at every level, so equal values hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === 'object' && !(v instanceof Date)) {
    return Object.fromEntries(
      Object.keys(v as Record<string, unknown>)
        .sort()
        .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

function rowHash(prevHash: string, r: Pick<AuditRow, 'seq' | 'at' | 'profile' | 'action' | 'decision' | 'reason' | 'subject' | 'data'>): string {
  return hashOf({
    prev: prevHash,
    seq: r.seq,
    at: new Date(r.at).toISOString(),
    profile: r.profile ?? null,
    action: r.action,
    decision: r.decision,
    reason: r.reason ?? null,
    subject: r.subject ?? null,
    data: r.data ?? null,
  });
}

// Any constant works; it only has to be the same in every process appending to one database.
const CHAIN_LOCK = 0x617564; // 'aud'

export function createAuditLog(db: Db): AuditLog {
  const append = (entries: readonly AuditEntry[]): Promise<AuditRow[]> =>
    db.transaction(async (tx) => {
      // Serialises appends across processes so two rows never claim the same predecessor.
      await tx.execute(sql`select pg_advisory_xact_lock(${CHAIN_LOCK})`);
      const [last] = await tx.select({ seq: audit.seq, hash: audit.hash }).from(audit).orderBy(desc(audit.seq)).limit(1);
      let prevHash = last?.hash ?? GENESIS_HASH;
      let seq = last?.seq ?? 0;
      const at = new Date().toISOString();
      const values = entries.map((entry) => {
        seq++;
        const row = {
          seq,
          at,
          profile: entry.profile ?? null,
          action: entry.action,
          decision: entry.decision,
          reason: entry.reason ?? null,
          subject: entry.subject ?? null,
          data: entry.data ?? null,
        };
        const hash = rowHash(prevHash, row);
        const v = { ...row, prevHash, hash };
        prevHash = hash;
        return v;
      });
      return tx.insert(audit).values(values).returning();
    });
  return {
    async record(entry) {
      const [inserted] = await append([entry]);
      return inserted!;
    },
    async recordMany(entries) {
      if (entries.length === 0) return [];
      const rows = await append(entries);
      return rows.sort((a, b) => a.seq - b.seq);
    },
    async tail(n) {
      const rows = await db.select().from(audit).orderBy(desc(audit.seq)).limit(n);
      return rows.reverse();
    },
    async verify() {
      let prev = GENESIS_HASH;
      let count = 0;
      let after = 0;
      let expectedSeq = 1;
      for (;;) {
        const page = await db.select().from(audit).where(gt(audit.seq, after)).orderBy(asc(audit.seq)).limit(1000);
        if (page.length === 0) return { ok: true, rows: count };
        for (const r of page) {
          if (r.seq !== expectedSeq) return { ok: false, rows: count, brokenAt: expectedSeq, reason: `row ${expectedSeq} is missing` };
          if (r.prevHash !== prev) return { ok: false, rows: count, brokenAt: r.seq, reason: `row ${r.seq} does not link to row ${r.seq - 1}` };
          if (rowHash(prev, r) !== r.hash) return { ok: false, rows: count, brokenAt: r.seq, reason: `row ${r.seq} was changed after it was written` };
          prev = r.hash;
          count++;
          expectedSeq++;
          after = r.seq;
        }
      }
    },
  };
}
