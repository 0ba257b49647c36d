/**
 * A write-behind queue in front of the audit log, for decisions made on a hot path (the MCP
 * proxy, the intake). Rows keep their order and are appended in batches by one writer, so a
 * decision the caller does not wait for costs microseconds, and one the caller does wait for
 * (`push(entry, { wait: true })`: an allowed call, before it runs) shares its statement with
 * whatever else is queued instead of paying for a transaction of its own.
 *
 * Fails closed: while the writer is failing (database down) or the backlog is full, `healthy`
 * is false and callers must deny anything that would need a row; queued rows are retried until
 * they are written. `flush()` waits for everything queued so far (tests, end of a turn, close).
 *
 * One bad row never blocks the queue: when a batch is refused and the database is not plainly
 * down, the batch is split until the refused row is alone; that row is replaced by a marker row
 * (same profile, action and decision; the reason says it was refused; data carries the hash of
 * what it held), and the rest proceed. Only if the marker is refused too is the database deemed
 * failing. Reasons for callers (`problem`) never carry SQL or driver text: that goes to the log.
 *
 * Deliberately left out: spilling to disk. Rows queued when the process dies are lost; that
 * window is one batch (milliseconds). Callers that cannot accept it wait for their row.
 */
import { isAgentVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { dbFailure } from '../store/errors.js';
import { tryHashOf, type AuditEntry, type AuditLog } from './audit.js';

export interface AuditQueue {
  /**
   * Queues a row. The promise resolves true once it (or, if the database refused it, its marker)
   * is written, false if it never will be (closed, overflow). `wait: true` says the caller is
   * waiting on it: it goes out with the next write instead of lingering for company.
   */
  push(entry: AuditEntry, options?: { wait?: boolean }): Promise<boolean>;
  /** Resolves when every row queued before the call is written; rejects if the queue closed first. */
  flush(): Promise<void>;
  /** False while the writer is failing or the backlog is full: deny instead of acting. */
  readonly healthy: boolean;
  /** Why the queue is unhealthy, in words fit for a deny reason (no internals); undefined when healthy. */
  readonly problem: string | undefined;
  readonly backlog: number;
  /** Rows the database refused and that were replaced by marker rows, since the queue started. */
  readonly replaced: number;
  /** Flushes what it can (bounded by `closeTimeoutMs`), then refuses further rows. Idempotent. */
  close(): Promise<void>;
}

export interface AuditQueueOptions {
  maxBacklog?: number;
  maxBatch?: number;
  /**
   * How long a write waits for more rows to share its statement. Default 5 ms: rows then cost
   * one statement per burst instead of one each, and durability lags by at most this much.
   * A row someone waits for never lingers.
   */
  lingerMs?: number;
  /** First retry delay after a failed write; doubles up to 5 s. */
  retryMs?: number;
  closeTimeoutMs?: number;
  logger?: Logger;
}

interface Item {
  entry: AuditEntry;
  done: (ok: boolean) => void;
}

export const AUDIT_UNAVAILABLE = 'the audit trail is unavailable';

/** True when the database, not the rows, is failing: waiting may help, splitting will not. */
function databaseFailing(err: unknown): boolean {
  if (isAgentVmError(err, 'audit_unwritable')) return err.retryable;
  return dbFailure(err).transient;
}

/** What is written instead of a row the database refused. Its strings are the entry's own, made storable by the log. */
function marker(entry: AuditEntry, err: unknown, minimal: boolean): AuditEntry {
  const code = dbFailure(err).code ?? null;
  const data = { refused: true, code, entrySha256: tryHashOf(entry) ?? null };
  const reason = 'the database refused this row; this marker replaces it (content not stored)';
  if (minimal) return { action: 'audit.refused', decision: 'error', reason, data };
  return { profile: entry.profile ?? null, action: entry.action, decision: entry.decision, reason, data };
}

export function createAuditQueue(audit: AuditLog, options: AuditQueueOptions = {}): AuditQueue {
  const maxBacklog = options.maxBacklog ?? 10_000;
  const maxBatch = options.maxBatch ?? 500;
  const log = options.logger?.child({ component: 'audit.queue' });
  const items: Item[] = [];
  let writing: Promise<void> | undefined;
  let failing = false;
  let retryMs = options.retryMs ?? 100;
  let retryTimer: NodeJS.Timeout | undefined;
  let lingerTimer: NodeJS.Timeout | undefined;
  const lingerMs = options.lingerMs ?? 5;
  let closed = false;
  let closing: Promise<void> | undefined;
  /** Resolved when `items` drains (or the queue closes). */
  let waiters: Array<{ upto: number; resolve: () => void; reject: (e: Error) => void }> = [];
  let pushed = 0;
  let written = 0;
  let replaced = 0;

  function settleWaiters(): void {
    waiters = waiters.filter((w) => {
      if (written >= w.upto) {
        w.resolve();
        return false;
      }
      return true;
    });
  }

  function kick(now = false): void {
    if (writing || retryTimer || items.length === 0) return;
    if (!now && lingerMs > 0 && items.length < maxBatch) {
      lingerTimer ??= setTimeout(() => {
        lingerTimer = undefined;
        kick(true);
      }, lingerMs);
      return;
    }
    clearTimeout(lingerTimer);
    lingerTimer = undefined;
    writing = drain().finally(() => {
      writing = undefined;
      if (items.length > 0 && !retryTimer) kick();
    });
  }

  function complete(n: number): void {
    const done = items.splice(0, Math.min(n, items.length));
    written += done.length;
    for (const i of done) i.done(true);
    settleWaiters();
  }

  /** Writes the first `n` queued rows, isolating any the database refuses; throws while the database is failing. */
  async function writeFront(n: number): Promise<void> {
    try {
      await audit.recordMany(items.slice(0, n).map((i) => i.entry));
      complete(n);
      return;
    } catch (err) {
      if (databaseFailing(err)) throw err;
      if (n > 1) {
        const half = Math.ceil(n / 2);
        await writeFront(half);
        await writeFront(n - half);
        return;
      }
      const entry = items[0]!.entry;
      try {
        await audit.recordMany([marker(entry, err, false)]);
      } catch (again) {
        if (databaseFailing(again)) throw again;
        // Even the row's own names were refused: a marker with nothing of the row but its hash.
        await audit.recordMany([marker(entry, err, true)]);
      }
      replaced++;
      const f = dbFailure(err);
      log?.error({ code: f.code, err: f.message, action: String(entry.action).slice(0, 64) }, 'audit row refused by the database; replaced by a marker row');
      complete(1);
    }
  }

  async function drain(): Promise<void> {
    while (items.length > 0) {
      try {
        await writeFront(Math.min(items.length, maxBatch));
      } catch (err) {
        const f = dbFailure(err);
        if (!failing) log?.error({ code: f.code, err: f.message, backlog: items.length }, 'audit writes failing; denying until they succeed');
        failing = true;
        if (closed) return;
        retryTimer = setTimeout(() => {
          retryTimer = undefined;
          kick(true);
        }, retryMs);
        retryTimer.unref?.();
        retryMs = Math.min(retryMs * 2, 5000);
        return;
      }
      if (failing) log?.info('audit writes recovered');
      failing = false;
      retryMs = options.retryMs ?? 100;
    }
  }

  const queue: AuditQueue = {
    push(entry, opts) {
      if (closed) return Promise.resolve(false);
      if (items.length >= maxBacklog) {
        log?.error({ action: String(entry.action).slice(0, 64) }, 'audit backlog full; row dropped');
        return Promise.resolve(false);
      }
      return new Promise<boolean>((resolve) => {
        items.push({ entry, done: resolve });
        pushed++;
        kick(opts?.wait === true);
      });
    },
    flush() {
      if (items.length === 0 && !writing) return Promise.resolve();
      const upto = pushed;
      kick(true);
      return new Promise<void>((resolve, reject) => {
        waiters.push({ upto, resolve, reject });
        settleWaiters();
      });
    },
    get healthy() {
      return !closed && !failing && items.length < maxBacklog;
    },
    get problem() {
      if (closed) return 'the audit trail is closed';
      if (failing || items.length >= maxBacklog) return AUDIT_UNAVAILABLE;
      return undefined;
    },
    get backlog() {
      return items.length;
    },
    get replaced() {
      return replaced;
    },
    close() {
      if (closing) return closing;
      closing = (async () => {
        const timeout = options.closeTimeoutMs ?? 5000;
        let t: NodeJS.Timeout | undefined;
        await Promise.race([queue.flush().catch(() => undefined), new Promise<void>((r) => (t = setTimeout(r, timeout)))]);
        clearTimeout(t);
        closed = true;
        clearTimeout(retryTimer);
        clearTimeout(lingerTimer);
        retryTimer = undefined;
        lingerTimer = undefined;
        if (items.length > 0) log?.error({ lost: items.length }, 'audit queue closed with rows unwritten');
        for (const i of items.splice(0)) i.done(false);
        for (const w of waiters.splice(0)) w.reject(new Error('audit queue closed before the rows were written'));
      })();
      return closing;
    },
  };
  return queue;
}
