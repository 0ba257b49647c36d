/**
 * The audit trail: an append-only, hash-chained record of every decision (route, wake, tool
 * list, tool call, approval, secret resolution by name, file sent out). Each row's hash covers
 * its content and the previous row's hash, so editing or deleting a row breaks the chain there.
 *
 * Every row is made storable here, before it is hashed, whoever wrote it: strings lose what the
 * database cannot hold (NUL, lone surrogates) and are cut to a bound; `data` is bounded in depth,
 * breadth and size (storableDeep). A subject that had to change keeps the SHA-256 of the original
 * in `data.subjectSha256`. So no caller can forget it, a hostile name never fails an insert, and
 * the hash covers exactly what is stored (`verify` passes).
 *
 * Deliberately left out: raw arguments and message bodies. Callers pass `hashOf(value)` for
 * anything a user or agent wrote; only names, ids, decisions and reasons are stored in clear.
 * Storage (the locked append, reads) is the store's: src/store/audit.ts.
 */
import { createHash } from 'node:crypto';
import { AgentVmError } from '../errors.js';
import { auditRepo, type AuditRepo, type AuditRow, type ChainHead, type NewAuditRow } from '../store/audit.js';
import { dbFailure } from '../store/errors.js';
import type { Db } from '../store/index.js';
import { storable, storableDeep } from '../text.js';

export type { AuditRow } from '../store/audit.js';

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
  /**
   * Appends one row. Rejects with AgentVmError('audit_unwritable'): `retryable` true when the
   * database is failing, false when it refused this row (the message never carries SQL).
   */
  record(entry: AuditEntry): Promise<AuditRow>;
  /** Appends several rows, in order, in one statement (one round of the chain); all or none. */
  recordMany(entries: readonly AuditEntry[]): Promise<AuditRow[]>;
  /** The newest `n` rows, oldest first. */
  tail(n: number): Promise<AuditRow[]>;
  /** Walks the chain from the start; reports the first row whose link or hash is wrong. */
  verify(): Promise<AuditVerifyResult>;
}

export type AuditVerifyResult = { ok: true; rows: number } | { ok: false; rows: number; brokenAt: number; reason: string };

export const GENESIS_HASH = '0'.repeat(64);

/** Bounds of a stored row (UTF-16 units); longer strings are cut with a mark. */
export const AUDIT_LIMITS = { profile: 128, action: 64, decision: 64, reason: 2000, subject: 256, dataString: 2048, dataBytes: 64 * 1024 } as const;

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

/**
 * `hashOf`, or undefined when the value cannot be hashed (nested deeper than the stack allows,
 * a cycle, a BigInt): for values from outside, which a caller must then refuse.
 */
export function tryHashOf(value: unknown): string | undefined {
  try {
    return hashOf(value);
  } catch {
    return undefined;
  }
}

function text(v: unknown, max: number): string {
  if (typeof v === 'string') return storable(v, max);
  try {
    return storable(String(v), max);
  } catch {
    return '[unprintable]';
  }
}

const optionalText = (v: unknown, max: number): string | null => (v === null || v === undefined ? null : text(v, max));

/** An entry as it will be stored: every string storable and bounded, `data` bounded (see the module doc). */
export function storableEntry(entry: AuditEntry): Required<AuditEntry> {
  const subject = optionalText(entry.subject, AUDIT_LIMITS.subject);
  let data: Record<string, unknown> | null = null;
  if (entry.data !== null && entry.data !== undefined) {
    const deep = storableDeep(entry.data, { maxString: AUDIT_LIMITS.dataString, maxDepth: 12, maxEntries: 1024 });
    data = deep !== null && typeof deep === 'object' && !Array.isArray(deep) ? (deep as Record<string, unknown>) : { value: deep };
    const size = JSON.stringify(data).length;
    if (size > AUDIT_LIMITS.dataBytes) data = { oversized: true, chars: size, sha256: hashOf(data) };
  }
  if (subject !== null && subject !== entry.subject) {
    const original = typeof entry.subject === 'string' ? entry.subject : text(entry.subject, 1 << 20);
    data = { ...data, subjectSha256: createHash('sha256').update(original).digest('hex') };
  }
  return {
    profile: optionalText(entry.profile, AUDIT_LIMITS.profile),
    action: text(entry.action, AUDIT_LIMITS.action),
    decision: text(entry.decision, AUDIT_LIMITS.decision),
    reason: optionalText(entry.reason, AUDIT_LIMITS.reason),
    subject,
    data,
  };
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

/** The rows continuing `head`: storable entries, numbered and chained. Pure but for the clock. */
function chain(entries: ReadonlyArray<Required<AuditEntry>>, head: ChainHead | undefined): NewAuditRow[] {
  let prevHash = head?.hash ?? GENESIS_HASH;
  let seq = head?.seq ?? 0;
  const at = new Date().toISOString();
  return entries.map((e) => {
    seq++;
    const row = { seq, at, profile: e.profile, action: e.action, decision: e.decision, reason: e.reason, subject: e.subject, data: e.data };
    const hash = rowHash(prevHash, row);
    const out = { ...row, prevHash, hash };
    prevHash = hash;
    return out;
  });
}

function unwritable(err: unknown): AgentVmError {
  const f = dbFailure(err);
  return new AgentVmError('audit_unwritable', `the audit trail cannot be written (${f.code ?? 'no code'}: ${f.message})`, {
    status: 503,
    retryable: f.transient,
    cause: err,
  });
}

const isRepo = (x: AuditRepo | Db): x is AuditRepo => typeof (x as Partial<AuditRepo>).append === 'function' && typeof (x as Partial<AuditRepo>).after === 'function';

/**
 * The audit log over the store's audit repository (`store.audit`). Passing the drizzle `Db` is
 * still accepted for callers not yet moved to `store.audit`; it will go.
 */
export function createAuditLog(source: AuditRepo | Db): AuditLog {
  const repo = isRepo(source) ? source : auditRepo(source);
  const append = async (entries: readonly AuditEntry[]): Promise<AuditRow[]> => {
    const ready = entries.map(storableEntry);
    try {
      return await repo.append((head) => chain(ready, head));
    } catch (err) {
      throw unwritable(err);
    }
  };
  return {
    async record(entry) {
      const [inserted] = await append([entry]);
      return inserted!;
    },
    async recordMany(entries) {
      if (entries.length === 0) return [];
      return append(entries);
    },
    tail: (n) => repo.tail(n),
    async verify() {
      let prev = GENESIS_HASH;
      let count = 0;
      let after = 0;
      let expectedSeq = 1;
      for (;;) {
        const page = await repo.after(after, 1000);
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
