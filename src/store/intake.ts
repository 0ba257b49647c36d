/**
 * The front door's writes: events stored many at a time (group commit), and deliveries held
 * before their address is known.
 *
 * `insertEvents` writes a whole batch in one statement, so a burst of webhooks costs one commit
 * (and, on the embedded PGlite, one round of file writes on the main thread) instead of one per
 * event; every caller is still answered only after its own row is committed.
 *
 * Held deliveries (`held_deliveries`) are how a platform whose routing needs an API call (a
 * ClickUp comment names its task, not the task's list) acknowledges first: the delivery is stored
 * under its platform id, acknowledged, resolved later, and then routed into `events`. Rows stay
 * after routing (status `routed` or `dropped`) so that a redelivery is known without any API call.
 *
 * Deliberately left out: pruning old held rows (they are a few hundred bytes each).
 */
import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import { storable, storableDeep } from '../text.js';
import type { EventRow, NewEvent } from './events.js';
import type { Db } from './index.js';
import { statement, type RawQuery } from './raw.js';
import { events, heldDeliveries, type heldDeliveryStatuses } from './schema.js';

/** What the front door needs of a stored event (the payload is not read back). */
export type BriefEventRow = Pick<EventRow, 'id' | 'profile' | 'conversation' | 'status'>;
const brief = { id: events.id, profile: events.profile, conversation: events.conversation, status: events.status };

/**
 * One constant statement whatever the batch size, around its one parameter: the batch travels as
 * one JSON value (PostgreSQL prepares the statement once per connection, and nothing is built per
 * row) and the new ids are inserted in arrival order, so `seq` follows arrival. Ids stored before
 * (a platform's redelivery: a tenth of Slack's traffic) come back in the same statement with
 * `inserted` false, read from the statement's snapshot, so a batch holding one costs no second
 * round trip. A row that another process committed after that snapshot is in neither half; the
 * caller reads those few by key.
 */
const INSERT_EVENTS = statement([
  `with x as materialized (
     select * from jsonb_to_recordset(`,
  `::jsonb)
       as x(ord int, id text, platform text, profile text, conversation text, status text, payload jsonb, error text)),
   ins as (
     insert into events (id, platform, profile, conversation, status, payload, error)
     select id, platform, profile, conversation, status, payload, error from x order by ord
     on conflict (id) do nothing
     returning id, profile, conversation, status)
   select id, profile, conversation, status, true as inserted from ins
   union all
   select e.id, e.profile, e.conversation, e.status, false as inserted from events e where e.id in (select id from x)`,
]);

export type HeldStatus = (typeof heldDeliveryStatuses)[number];
export type HeldRow = typeof heldDeliveries.$inferSelect;

/** Longest string kept inside a stored payload (as for events). */
const MAX_PAYLOAD_STRING = 1024 * 1024;

export interface IntakeRepo {
  /**
   * Inserts events in one statement, skipping ids seen before. Returns, per input and in input
   * order, the stored row and whether this call inserted it. An id repeated within one call is
   * inserted once (the first occurrence); the others come back as not inserted.
   */
  insertEvents(rows: NewEvent[]): Promise<Array<{ row: BriefEventRow; inserted: boolean }>>;
  /** Stores a delivery under its platform id; `inserted: false` (and the stored status) when the id was held before. */
  holdDelivery(d: { id: string; platform: string; payload: unknown }): Promise<{ inserted: boolean; status: HeldStatus }>;
  getHeld(id: string): Promise<HeldRow | undefined>;
  /** Moves a held delivery to `routed` or `dropped`; false when it had left `held` already. */
  settleHeld(id: string, status: 'routed' | 'dropped', reason?: string): Promise<boolean>;
  /** Deliveries of a platform still `held` (e.g. after a restart), oldest first. */
  heldDeliveries(platform: string, limit?: number): Promise<HeldRow[]>;
}

function eventValues(e: NewEvent) {
  return {
    id: storable(e.id, 512),
    platform: e.platform,
    profile: e.profile,
    conversation: storable(e.conversation, 1024),
    status: e.status,
    payload: storableDeep(e.payload, { maxString: MAX_PAYLOAD_STRING, maxDepth: 32, maxEntries: 1000 }),
    error: e.error === undefined ? null : storable(e.error, 4096),
  };
}

/** `raw`: the hot-path client (raw.ts); the event insert goes through it. */
export function intakeRepo(db: Db, raw?: RawQuery): IntakeRepo {
  return {
    async insertEvents(rows) {
      if (rows.length === 0) return [];
      const values = rows.map(eventValues);
      const firstIndex = new Map<string, number>();
      values.forEach((v, i) => {
        if (!firstIndex.has(v.id)) firstIndex.set(v.id, i);
      });
      const unique = [...firstIndex.values()].map((i) => values[i]!);
      const batch = JSON.stringify(unique.map((v, ord) => ({ ...v, ord })));
      const found = await INSERT_EVENTS.run<BriefEventRow & { inserted: boolean }>(db, raw, [batch]);
      const byId = new Map(found.map((r) => [r.id, r]));
      // Stored by another process after this statement's snapshot (a race between two front doors): read by key.
      const missing = unique.filter((v) => !byId.has(v.id)).map((v) => v.id);
      if (missing.length > 0) {
        const seen = await db.select(brief).from(events).where(inArray(events.id, missing));
        for (const r of seen) byId.set(r.id, { ...r, inserted: false });
      }
      return values.map((v, i) => {
        const r = byId.get(v.id);
        if (!r) throw new Error(`event ${v.id} vanished after a conflicting insert`);
        const { inserted, ...row } = r;
        return { row, inserted: inserted && firstIndex.get(v.id) === i };
      });
    },

    async holdDelivery(d) {
      const id = storable(d.id, 512);
      const [row] = await db
        .insert(heldDeliveries)
        .values({ id, platform: d.platform, payload: storableDeep(d.payload, { maxString: MAX_PAYLOAD_STRING, maxDepth: 32, maxEntries: 1000 }), status: 'held' })
        .onConflictDoNothing({ target: heldDeliveries.id })
        .returning({ status: heldDeliveries.status });
      if (row) return { inserted: true, status: row.status };
      const [seen] = await db.select({ status: heldDeliveries.status }).from(heldDeliveries).where(eq(heldDeliveries.id, id));
      return { inserted: false, status: seen?.status ?? 'routed' };
    },

    async getHeld(id) {
      const [row] = await db.select().from(heldDeliveries).where(eq(heldDeliveries.id, id));
      return row;
    },

    async settleHeld(id, status, reason) {
      const rows = await db
        .update(heldDeliveries)
        .set({ status, reason: reason === undefined ? null : storable(reason, 1024), updatedAt: sql`now()` })
        .where(and(eq(heldDeliveries.id, id), eq(heldDeliveries.status, 'held')))
        .returning({ id: heldDeliveries.id });
      return rows.length > 0;
    },

    heldDeliveries(platform, limit = 1000) {
      return db
        .select()
        .from(heldDeliveries)
        .where(and(eq(heldDeliveries.platform, platform), eq(heldDeliveries.status, 'held')))
        .orderBy(asc(heldDeliveries.createdAt))
        .limit(limit);
    },
  };
}
