/**
 * Leases with fencing (who serves a profile). A holder takes a lease only when it is free, has
 * expired by the database's clock, or is its own; it renews well before expiry. `epoch` grows each
 * time the lease changes hands, so a holder that lost it can tell.
 *
 * Deliberately left out: deciding when a holder must stop (gateway/lease.ts does that with its
 * own clock, before the expiry it last secured).
 */
import { and, eq, sql } from 'drizzle-orm';
import type { Db } from './index.js';
import { unitLeases } from './schema.js';

export interface LeaseRow {
  key: string;
  holder: string;
  epoch: number;
  expiresAt: Date;
}

export interface LeaseRepo {
  /**
   * Takes `key` for `holder` for `ttlMs` if it is free, expired, held by `holder` already, or held
   * by one of `stale` (holders known to be dead). Returns the new epoch, or undefined.
   */
  acquire(key: string, holder: string, ttlMs: number, stale?: string[]): Promise<number | undefined>;
  /** Extends the lease if `holder` still holds it at `epoch`; false when it was lost. */
  renew(key: string, holder: string, epoch: number, ttlMs: number): Promise<boolean>;
  /** Gives it up at once (a successor need not wait for expiry). */
  release(key: string, holder: string, epoch: number): Promise<void>;
  get(key: string): Promise<LeaseRow | undefined>;
}

export function leaseRepo(db: Db): LeaseRepo {
  const until = (ttlMs: number) => sql`now() + make_interval(secs => ${ttlMs / 1000})`;
  return {
    async acquire(key, holder, ttlMs, stale = []) {
      const takeable = stale.length > 0
        ? sql`${unitLeases.expiresAt} < now() or ${unitLeases.holder} = ${holder} or ${unitLeases.holder} in (${sql.join(stale.map((s) => sql`${s}`), sql`, `)})`
        : sql`${unitLeases.expiresAt} < now() or ${unitLeases.holder} = ${holder}`;
      const rows = await db
        .insert(unitLeases)
        .values({ key, holder, epoch: 1, expiresAt: until(ttlMs) as unknown as Date })
        .onConflictDoUpdate({
          target: unitLeases.key,
          set: { holder, epoch: sql`${unitLeases.epoch} + 1`, expiresAt: until(ttlMs) as unknown as Date, updatedAt: sql`now()` },
          setWhere: takeable,
        })
        .returning({ epoch: unitLeases.epoch });
      return rows[0]?.epoch;
    },
    async renew(key, holder, epoch, ttlMs) {
      const rows = await db
        .update(unitLeases)
        .set({ expiresAt: until(ttlMs) as unknown as Date, updatedAt: sql`now()` })
        .where(and(eq(unitLeases.key, key), eq(unitLeases.holder, holder), eq(unitLeases.epoch, epoch)))
        .returning({ epoch: unitLeases.epoch });
      return rows.length > 0;
    },
    async release(key, holder, epoch) {
      await db
        .update(unitLeases)
        .set({ expiresAt: sql`now() - interval '1 millisecond'` as unknown as Date, updatedAt: sql`now()` })
        .where(and(eq(unitLeases.key, key), eq(unitLeases.holder, holder), eq(unitLeases.epoch, epoch)));
    },
    async get(key) {
      const [row] = await db.select().from(unitLeases).where(eq(unitLeases.key, key));
      return row ? { key: row.key, holder: row.holder, epoch: row.epoch, expiresAt: row.expiresAt } : undefined;
    },
  };
}
