/**
 * What a database failure means for the caller, across both drivers (postgres.js and PGlite, both
 * wrapped by drizzle). Drizzle's own message carries the SQL and its parameters (which may be an
 * agent's text), so it is never shown or logged: only the driver's SQLSTATE and message are.
 *
 * Deliberately left out: retrying. Callers decide; this only says whether waiting could help.
 */

export interface DbFailure {
  /** SQLSTATE (`22021`) or the driver's / Node's code (`ECONNREFUSED`, `CONNECTION_CLOSED`), when there is one. */
  code: string | undefined;
  /** One line from the driver, without SQL or parameters. Safe to log; not meant for an agent. */
  message: string;
  /**
   * True when the database (not the statement) is the problem and a later attempt may succeed:
   * connection failures, shutdown, resource exhaustion, serialization and lock conflicts, and a
   * unique violation (two writers claiming the same key). False says nothing certain: the
   * statement itself may be at fault (bad data) or the cause is unknown.
   */
  transient: boolean;
}

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
  // unique_violation: another writer took the key first (the audit chain's seq); lock_not_available
  '23505', '55P03',
]);

/** SQLSTATE classes where the server, not the statement, is failing. */
const TRANSIENT_CLASSES = new Set(['08', '40', '53', '57', '58', 'XX']);

function codeOf(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' && c.length > 0 ? c : undefined;
}

/** Classifies any error thrown by a store query. Never throws. */
export function dbFailure(err: unknown): DbFailure {
  // Drizzle wraps the driver's error as `cause`; the innermost error with a code is the one that says why.
  let found: unknown;
  let cur: unknown = err;
  for (let depth = 0; cur !== null && cur !== undefined && depth < 8; depth++) {
    if (codeOf(cur) !== undefined) found = cur;
    cur = (cur as { cause?: unknown }).cause;
  }
  const code = codeOf(found);
  const source = found ?? innermost(err);
  const raw = source instanceof Error ? source.message : String(source);
  // Node's AggregateError (happy-eyeballs connect) has an empty message.
  const message = (raw.split('\n')[0] ?? '').slice(0, 300) || code || 'unknown database error';
  const closed = /PGlite is closed|database is closed|Connection terminated/i.test(raw);
  const transient = closed || (code !== undefined && (TRANSIENT_CODES.has(code) || TRANSIENT_CLASSES.has(code.slice(0, 2))));
  return { code, message, transient };
}

function innermost(err: unknown): unknown {
  let cur = err;
  for (let depth = 0; depth < 8; depth++) {
    const next = (cur as { cause?: unknown } | null)?.cause;
    if (next === undefined || next === null) return cur;
    cur = next;
  }
  return cur;
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
]);

/**
 * True when the database itself is out of reach (connection refused or dropped, server shutting
 * down or out of resources): the request may succeed later, and the caller should say so (503
 * naming the database), never report the operation's outcome as failed.
 */
export function isDbUnavailable(err: unknown): boolean {
  const f = dbFailure(err);
  if (/PGlite is closed|database is closed|Connection terminated/i.test(f.message)) return true;
  return f.code !== undefined && (UNAVAILABLE_CODES.has(f.code) || ['08', '53', '57'].includes(f.code.slice(0, 2)));
}
