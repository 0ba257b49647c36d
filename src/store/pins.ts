/**
 * The tool_pins table's repository: per profile and `<server>.<tool>`, the hash of the pinned tool
 * definition, the definition itself (to show what changed), who pinned it, and the differing
 * definition last seen (quarantined until someone re-pins it).
 *
 * Every change that matters is one conditional statement: a first pin never replaces a pin another
 * gateway took; a re-pin only accepts the exact quarantined definition the operator looked at.
 *
 * Deliberately left out: what a definition hash covers (governance/mcp-pins.ts) and pin history
 * (the audit trail has every pin, mismatch and re-pin).
 */
import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import type { Db } from './index.js';
import { toolPins } from './schema.js';

export interface PinRow {
  profile: string;
  /** `<server>.<tool>` */
  tool: string;
  hash: string;
  /** The pinned definition, or null for pins taken before definitions were kept. */
  definition: unknown;
  pinnedAt: Date;
  /** Who re-pinned it; null for the first, automatic pin. */
  pinnedBy: string | null;
  /** A differing definition seen since, hidden until re-pinned; null when none. */
  seenHash: string | null;
  seenDefinition: unknown;
  seenAt: Date | null;
}

export interface PinRepo {
  /** Pin hashes of a profile, by `<server>.<tool>`. */
  load(profile: string): Promise<Map<string, string>>;
  get(profile: string, tool: string): Promise<PinRow | undefined>;
  /** Every pin, or one profile's, ordered by profile and tool. */
  list(profile?: string): Promise<PinRow[]>;
  /** Pins `hash` unless a pin exists; returns the hash in force (another gateway may have won). */
  pinIfAbsent(profile: string, tool: string, hash: string, definition: unknown): Promise<string>;
  /** Stores the definition of a pin kept without one, when `hash` is still the pin. */
  fillDefinition(profile: string, tool: string, hash: string, definition: unknown): Promise<void>;
  /** Records a definition that differs from the pin (quarantine). A no-op when `hash` is the pin. */
  noteSeen(profile: string, tool: string, hash: string, definition: unknown): Promise<void>;
  /**
   * Makes the quarantined definition the pin, as `by`, but only if it is still `expectedHash`
   * (when given): an operator re-pins what they looked at, not whatever arrived since.
   * Undefined when there is nothing quarantined (or it changed).
   */
  acceptSeen(profile: string, tool: string, by: string, expectedHash?: string): Promise<PinRow | undefined>;
  /** Sets pins outright (a person approved these definitions) and clears their quarantine. */
  replace(profile: string, pins: ReadonlyArray<{ tool: string; hash: string; definition: unknown }>, by: string | null): Promise<void>;
}

export function pinRepo(db: Db): PinRepo {
  const key = (profile: string, tool: string) => and(eq(toolPins.profile, profile), eq(toolPins.tool, tool));
  return {
    async load(profile) {
      const rows = await db.select({ tool: toolPins.tool, hash: toolPins.hash }).from(toolPins).where(eq(toolPins.profile, profile));
      return new Map(rows.map((r) => [r.tool, r.hash]));
    },
    async get(profile, tool) {
      const [r] = await db.select().from(toolPins).where(key(profile, tool)).limit(1);
      return r;
    },
    list(profile) {
      const q = db.select().from(toolPins);
      return (profile === undefined ? q : q.where(eq(toolPins.profile, profile))).orderBy(asc(toolPins.profile), asc(toolPins.tool));
    },
    async pinIfAbsent(profile, tool, hash, definition) {
      const [won] = await db.insert(toolPins).values({ profile, tool, hash, definition }).onConflictDoNothing().returning({ hash: toolPins.hash });
      if (won) return won.hash;
      const [row] = await db.select({ hash: toolPins.hash }).from(toolPins).where(key(profile, tool));
      return row?.hash ?? hash;
    },
    async fillDefinition(profile, tool, hash, definition) {
      await db.update(toolPins).set({ definition }).where(and(key(profile, tool), eq(toolPins.hash, hash), isNull(toolPins.definition)));
    },
    async noteSeen(profile, tool, hash, definition) {
      await db
        .update(toolPins)
        .set({ seenHash: hash, seenDefinition: definition, seenAt: sql`now()` })
        .where(and(key(profile, tool), sql`${toolPins.hash} <> ${hash}`, sql`${toolPins.seenHash} is distinct from ${hash}`));
    },
    async acceptSeen(profile, tool, by, expectedHash) {
      const [r] = await db
        .update(toolPins)
        .set({
          hash: sql`${toolPins.seenHash}`,
          definition: sql`${toolPins.seenDefinition}`,
          pinnedBy: by,
          pinnedAt: sql`now()`,
          seenHash: null,
          seenDefinition: null,
          seenAt: null,
        })
        .where(and(key(profile, tool), sql`${toolPins.seenHash} is not null`, expectedHash === undefined ? undefined : eq(toolPins.seenHash, expectedHash)))
        .returning();
      return r;
    },
    async replace(profile, pins, by) {
      if (pins.length === 0) return;
      await db.transaction(async (tx) => {
        for (const p of pins) {
          const fields = { hash: p.hash, definition: p.definition, pinnedBy: by, pinnedAt: sql`now()`, seenHash: null, seenDefinition: null, seenAt: null };
          await tx
            .insert(toolPins)
            .values({ profile, tool: p.tool, ...fields })
            .onConflictDoUpdate({ target: [toolPins.profile, toolPins.tool], set: fields });
        }
      });
    },
  };
}
