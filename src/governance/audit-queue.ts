/**
 * A write-behind queue in front of the audit log, for decisions made on a hot path (the MCP
 * proxy). Rows keep their order and are appended in batches by one writer, so a decision costs
 * the caller microseconds instead of a database transaction, while the chain stays one append
 * per batch.
 *
 * Fails closed: while the writer is failing (database down) or the backlog is full, `healthy`
 * is false and callers must deny anything that would need a row; queued rows are retried until
 * they are written. `flush()` waits for everything queued so far (tests, end of a turn, close).
 *
 * Deliberately left out: spilling to disk. Rows queued when the process dies are lost; that
 * window is one batch (milliseconds). Callers that cannot accept it await `push()`.
 */
import type { Logger } from '../log.js';
import type { AuditEntry, AuditLog } from './audit.js';

export interface AuditQueue {
  /** Queues a row. The promise resolves true once it is written, false if it never will be (closed, overflow). */
  push(entry: AuditEntry): Promise<boolean>;
  /** Resolves when every row queued before the call is written; rejects if the queue closed first. */
  flush(): Promise<void>;
  /** False while the writer is failing or the backlog is full: deny instead of acting. */
  readonly healthy: boolean;
  /** Why the queue is unhealthy, for deny reasons. */
  readonly problem: string | undefined;
  readonly backlog: number;
  /** Flushes what it can (bounded by `closeTimeoutMs`), then refuses further rows. Idempotent. */
  close(): Promise<void>;
}

export interface AuditQueueOptions {
  maxBacklog?: number;
  maxBatch?: number;
  /**
   * How long a write waits for more rows to share its transaction. Default 5 ms: rows then cost
   * one transaction per burst instead of one each, and durability lags by at most this much.
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

export function createAuditQueue(audit: AuditLog, options: AuditQueueOptions = {}): AuditQueue {
  const maxBacklog = options.maxBacklog ?? 10_000;
  const maxBatch = options.maxBatch ?? 500;
  const log = options.logger?.child({ component: 'audit.queue' });
  const items: Item[] = [];
  let writing: Promise<void> | undefined;
  let failure: string | undefined;
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

  async function drain(): Promise<void> {
    while (items.length > 0) {
      const batch = items.slice(0, maxBatch);
      try {
        await audit.recordMany(batch.map((i) => i.entry));
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        if (failure === undefined) log?.error({ err: reason, backlog: items.length }, 'audit writes failing; denying until they succeed');
        failure = `the audit trail cannot be written (${reason.split('\n')[0]})`;
        if (closed) return;
        retryTimer = setTimeout(() => {
          retryTimer = undefined;
          kick(true);
        }, retryMs);
        retryTimer.unref?.();
        retryMs = Math.min(retryMs * 2, 5000);
        return;
      }
      items.splice(0, batch.length);
      written += batch.length;
      if (failure !== undefined) log?.info('audit writes recovered');
      failure = undefined;
      retryMs = options.retryMs ?? 100;
      for (const i of batch) i.done(true);
      settleWaiters();
    }
  }

  const queue: AuditQueue = {
    push(entry) {
      if (closed) return Promise.resolve(false);
      if (items.length >= maxBacklog) {
        log?.error({ action: entry.action, subject: entry.subject }, 'audit backlog full; row dropped');
        return Promise.resolve(false);
      }
      return new Promise<boolean>((resolve) => {
        items.push({ entry, done: resolve });
        pushed++;
        kick();
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
      return !closed && failure === undefined && items.length < maxBacklog;
    },
    get problem() {
      if (closed) return 'the audit trail is closed';
      if (failure !== undefined) return failure;
      if (items.length >= maxBacklog) return 'the audit backlog is full';
      return undefined;
    },
    get backlog() {
      return items.length;
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
