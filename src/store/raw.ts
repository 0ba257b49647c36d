/**
 * Raw statements for the few hot paths where building the statement costs more than running it:
 * on the embedded PGlite a statement is a function call in this process, so drizzle's builder
 * (a template per row, then its serialisation) is most of an audit append or an intake batch.
 * There a hot path sends a constant text (cached per shape) with flat parameters.
 *
 * Both databases have one: PGlite's runs named prepared statements (pglite-prepared.ts), and on
 * PostgreSQL it is postgres.js with `prepare: true`, so each text is parsed and planned once per
 * connection. drizzle never prepares on PostgreSQL (its `execute` and builders send every
 * statement unnamed, parsed and planned each time): an audit append took 0.73 ms through it and
 * 0.36 ms prepared, measured on this project's machines.
 *
 * Deliberately left out: anything but parameters in the text. A text is built from constants
 * only, never from a value.
 */

import { sql, type SQL } from 'drizzle-orm';
import type { Db } from './index.js';

/** Runs one parameterised statement and resolves with its rows. */
export interface RawQuery {
  <T>(text: string, params: unknown[]): Promise<T[]>;
  /** True for the embedded database: it runs in this process, which is its only writer, and it never leaves a statement unanswered. */
  readonly embedded: boolean;
}

/** A RawQuery from a function and where its database runs. */
export function rawQuery(run: <T>(text: string, params: unknown[]) => Promise<T[]>, embedded: boolean): RawQuery {
  return Object.assign(run, { embedded });
}

/**
 * A constant statement written as the texts between its parameters (`parts.length ===
 * params.length + 1`): through the raw client with `$n` placeholders when there is one, else
 * through drizzle with the parameters bound.
 */
export function statement(parts: readonly string[]): { text: string; run<T>(db: Db, raw: RawQuery | undefined, params: unknown[]): Promise<T[]> } {
  const text = parts.map((p, i) => (i === 0 ? p : `$${i}${p}`)).join('');
  return {
    text,
    async run<T>(db: Db, raw: RawQuery | undefined, params: unknown[]): Promise<T[]> {
      if (params.length !== parts.length - 1) throw new Error(`statement: ${parts.length - 1} parameters expected, got ${params.length}`);
      if (raw) return raw<T>(text, params);
      const chunks: SQL[] = [sql.raw(parts[0]!)];
      params.forEach((v, i) => chunks.push(sql`${v}`, sql.raw(parts[i + 1]!)));
      return rowsOf<T>(await db.execute(sql.join(chunks)));
    },
  };
}

/** Rows of a drizzle `execute`: postgres.js returns them as an array, PGlite as `{ rows }`. */
export function rowsOf<T>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}

/**
 * `($1, $2), ($3, $4)` for `rows` rows of `casts.length` columns, each placeholder followed by
 * its cast (`::bigint`; empty for none). Memoised by the caller per row count.
 */
export function valuesList(rows: number, casts: readonly string[]): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    const base = r * casts.length;
    out.push(`(${casts.map((c, i) => `$${base + i + 1}${c}`).join(', ')})`);
  }
  return out.join(', ');
}
