/**
 * The audit table's repository: appends at the end of the chain as one writer across every
 * process, and reads rows back. The chain itself (what a row's hash covers) is governance's
 * (src/governance/audit.ts): this module only guarantees that rows are appended contiguously after
 * the head the builder was given, atomically, never two rows with one predecessor.
 *
 * Appending is cheap on the usual path: this process remembers the head it last wrote and inserts
 * right after it, in one INSERT that first takes the cross-process advisory lock (so it never
 * collides with a writer that holds it). `seq` is the primary key and rows are contiguous, so if
 * anyone appended since (another process), the first row's `seq` is taken and the whole statement
 * fails: only then does this re-read the head under the lock, in a transaction. Appends from one
 * process are serialised here, so they never race each other. PGlite belongs to one process, so
 * there the lock is skipped.
 *
 * Deliberately left out: making values storable (governance does it before hashing, so the hash
 * covers exactly what is stored) and retries on failure (the caller's queue decides).
 */
import { asc, desc, gt, sql } from 'drizzle-orm';
import type { Db } from './index.js';
import { withDeadline } from '../deadline.js';
import { dbFailure } from './errors.js';
import { statement, valuesList, type RawQuery } from './raw.js';
import { audit } from './schema.js';

export type AuditRow = typeof audit.$inferSelect;

/** The newest row of the chain. */
export interface ChainHead {
  seq: number;
  hash: string;
}

/** A row ready to insert: `seq` and `prevHash` continue the head the builder was given. */
export interface NewAuditRow {
  seq: number;
  /** ISO 8601. */
  at: string;
  profile: string | null;
  action: string;
  decision: string;
  reason: string | null;
  subject: string | null;
  data: unknown;
  prevHash: string;
  hash: string;
}

export interface AuditRepo {
  /**
   * Appends the rows `build(head)` returns (head undefined: the trail is empty) at the end of the
   * chain, all or none. `build` may run more than once when another process appended first, so it
   * must depend on nothing but its argument and the clock. Resolves with the rows as inserted.
   */
  append(build: (head: ChainHead | undefined) => NewAuditRow[]): Promise<AuditRow[]>;
  /** The newest `n` rows, oldest first. */
  tail(n: number): Promise<AuditRow[]>;
  /** Up to `limit` rows with seq greater than `seq`, in order. */
  after(seq: number, limit: number): Promise<AuditRow[]>;
}

// Any constant works; it only has to be the same in every process appending to one database.
const CHAIN_LOCK = 0x617564; // 'aud'
const MAX_LOCKED_ATTEMPTS = 5;
const APPEND_DEADLINE_MS = 10_000;

function toRow(r: NewAuditRow): AuditRow {
  return { ...r, data: r.data ?? null };
}

const AUDIT_COLUMNS = 'seq, at, profile, action, decision, reason, subject, data, prev_hash, hash';
/** The casts of AUDIT_COLUMNS, in order, for a row sent as flat parameters (`rowParams`). */
const AUDIT_CASTS = ['::bigint', '::timestamptz', '::text', '::text', '::text', '::text', '::text', '::jsonb', '::text', '::text'] as const;
const valuesTexts = new Map<number, string>();

/** A row's parameters, in the order of AUDIT_COLUMNS; `data` as JSON text (the same jsonb as a JSON string cast). */
function rowParams(r: NewAuditRow): unknown[] {
  return [r.seq, r.at, r.profile, r.action, r.decision, r.reason, r.subject, r.data === null || r.data === undefined ? null : JSON.stringify(r.data), r.prevHash, r.hash];
}

/**
 * One process (PGlite): a plain VALUES insert, sent raw (raw.ts). PGlite parses every statement
 * anyway, and this is the cheapest form there: the text is a constant per row count (cached) and
 * the parameters a flat array, so nothing is built per row but that array.
 */
function valuesInsert(raw: RawQuery, rows: NewAuditRow[]): Promise<unknown> {
  let text = valuesTexts.get(rows.length);
  if (text === undefined) {
    text = `insert into audit (${AUDIT_COLUMNS}) values ${valuesList(rows.length, AUDIT_CASTS)}`;
    if (valuesTexts.size < 64) valuesTexts.set(rows.length, text);
  }
  return raw(text, rows.flatMap(rowParams));
}

/**
 * Many processes (PostgreSQL): rows are produced only after the chain lock's one row, so nothing
 * is inserted before the lock is held. One constant statement whatever the number of rows: they
 * travel as one JSON parameter, so it is prepared once per connection and nothing is built per
 * row. `data` goes in as the JSON value it is (the same jsonb as a JSON string cast).
 */
const LOCKED_INSERT = statement([
  `insert into audit (${AUDIT_COLUMNS})
    select x.seq, x.at, x.profile, x.action, x.decision, x.reason, x.subject, x.data, x.prev_hash, x.hash
      from jsonb_to_recordset(`,
  `::jsonb)
        as x(seq bigint, at timestamptz, profile text, action text, decision text, reason text, subject text, data jsonb, prev_hash text, hash text),
        (select pg_advisory_xact_lock(${CHAIN_LOCK})) as chain_lock
      order by x.seq`,
]);

/**
 * The usual append on the MCP proxy's path is one row (a call's allow row, waited for alone):
 * its columns as parameters, with no JSON to build or take apart (0.05 ms less per append than
 * the recordset, measured on this project's machines).
 */
const LOCKED_INSERT_ONE = statement([
  `insert into audit (${AUDIT_COLUMNS}) select `,
  ...AUDIT_CASTS.map((cast, i) => (i < AUDIT_CASTS.length - 1 ? `${cast}, ` : `${cast} from (select pg_advisory_xact_lock(${CHAIN_LOCK})) as chain_lock`)),
]);

function lockedInsert(db: Db, raw: RawQuery | undefined, rows: NewAuditRow[]): Promise<unknown> {
  if (rows.length === 1) return LOCKED_INSERT_ONE.run(db, raw, rowParams(rows[0]!));
  const batch = JSON.stringify(
    rows.map((r) => ({ seq: r.seq, at: r.at, profile: r.profile, action: r.action, decision: r.decision, reason: r.reason, subject: r.subject, data: r.data ?? null, prev_hash: r.prevHash, hash: r.hash })),
  );
  return LOCKED_INSERT.run(db, raw, [batch]);
}

// One repository per database handle, so every AuditLog of a process shares its head and its queue.
const repos = new WeakMap<object, AuditRepo>();

/**
 * `raw`: the hot-path client (raw.ts). When it is the embedded database's (`raw.embedded`), this
 * process is the database's only writer, so appends skip the cross-process lock.
 */
export function auditRepo(db: Db, opts: { raw?: RawQuery } = {}): AuditRepo {
  const existing = repos.get(db);
  if (existing) return existing;
  let head: ChainHead | undefined;
  let known = false;
  /** Bumped when an append is given up on: a late completion of it must not move the head. */
  let generation = 0;
  let tailOfQueue: Promise<unknown> = Promise.resolve();

  /** Inserts after the remembered head, in one statement; undefined when someone appended since. */
  async function appendAfterKnownHead(rows: NewAuditRow[]): Promise<AuditRow[] | undefined> {
    try {
      const raw = opts.raw;
      await (raw?.embedded ? valuesInsert(raw, rows) : lockedInsert(db, raw, rows));
      return rows.map(toRow);
    } catch (err) {
      // Someone appended since: our first seq is taken (all or nothing, one statement).
      if (dbFailure(err).code === '23505') return undefined;
      throw err;
    }
  }

  async function appendLocked(build: (head: ChainHead | undefined) => NewAuditRow[], gen: number): Promise<AuditRow[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { rows, last } = await db.transaction(async (tx) => {
          // Serialises appends across processes so two rows never claim the same predecessor.
          await tx.execute(sql`select pg_advisory_xact_lock(${CHAIN_LOCK})`);
          const [h] = await tx.select({ seq: audit.seq, hash: audit.hash }).from(audit).orderBy(desc(audit.seq)).limit(1);
          const built = build(h);
          const inserted = built.length === 0 ? [] : await tx.insert(audit).values(built).returning();
          return { rows: inserted, last: built.at(-1) ?? h };
        });
        if (gen === generation) {
          head = last ? { seq: last.seq, hash: last.hash } : undefined;
          known = true;
        }
        return rows.sort((a, b) => a.seq - b.seq);
      } catch (err) {
        // Only a writer that skips the lock could take our seq first (none here); retry a little, then give up.
        if (attempt >= MAX_LOCKED_ATTEMPTS || dbFailure(err).code !== '23505') throw err;
      }
    }
  }

  async function append(build: (head: ChainHead | undefined) => NewAuditRow[]): Promise<AuditRow[]> {
    const gen = generation;
    if (known) {
      const rows = build(head);
      if (rows.length === 0) return [];
      try {
        const done = await appendAfterKnownHead(rows);
        if (done) {
          const last = rows.at(-1)!;
          if (gen === generation) head = { seq: last.seq, hash: last.hash };
          return done;
        }
      } catch (err) {
        known = false;
        throw err;
      }
    }
    return appendLocked(build, gen);
  }

  /**
   * PostgreSQL only: an append that gets no answer within APPEND_DEADLINE_MS is given up on, so
   * one statement stuck on a dead connection (postgres.js can leave a transaction's query
   * pending forever when its connection closes: porsager/postgres#1186) cannot hold every later
   * append, and every turn waiting for one, for ever. It fails as the database being out of
   * reach (callers retry); the next append re-reads the head under the chain lock. If the stuck
   * one commits after all, its rows are in the chain and the next append continues after them.
   */
  function bounded(run: Promise<AuditRow[]>): Promise<AuditRow[]> {
    if (opts.raw?.embedded) return run; // PGlite runs in this process: nothing to wait for but itself
    return withDeadline(run, APPEND_DEADLINE_MS, () => {
      generation++;
      known = false;
      return Object.assign(new Error(`the audit append got no answer from the database within ${APPEND_DEADLINE_MS / 1000} s`), { code: 'ETIMEDOUT' });
    });
  }

  const repo: AuditRepo = {
    append(build) {
      const run = tailOfQueue.then(() => bounded(append(build)));
      tailOfQueue = run.catch(() => undefined);
      return run;
    },
    async tail(n) {
      const rows = await db.select().from(audit).orderBy(desc(audit.seq)).limit(n);
      return rows.reverse();
    },
    after(seq, limit) {
      return db.select().from(audit).where(gt(audit.seq, seq)).orderBy(asc(audit.seq)).limit(limit);
    },
  };
  repos.set(db, repo);
  return repo;
}
