/**
 * Tool definition pins (table `tool_pins`): the hash of each allowed tool's name, description and
 * input schema, taken the first time the gateway sees the tool for a profile (registering the
 * profile is approving it). A later definition with another hash is hidden and denied until a
 * person re-pins it (`McpProxy.repin`).
 *
 * Deliberately left out: pin history (the audit trail has every pin and mismatch).
 */
import { and, eq, inArray } from 'drizzle-orm';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import type { Db } from '../store/index.js';
import { toolPins } from '../store/schema.js';
import { hashOf } from './audit.js';

/** What a pin covers. Annotations, title and output schema are not part of it and never reach the agent. */
export function definitionHash(def: Pick<Tool, 'name' | 'description' | 'inputSchema'>): string {
  return hashOf({ name: def.name, description: def.description ?? null, inputSchema: def.inputSchema ?? null });
}

export interface PinStore {
  /** Pins of a profile, by `<server>.<tool>`. */
  load(profile: string): Promise<Map<string, string>>;
  /** Pins `hash` unless a pin exists; returns the pin in force (another gateway may have won). */
  pinIfAbsent(profile: string, tool: string, hash: string): Promise<string>;
  /** Replaces pins (a person approved the new definitions). */
  replace(profile: string, pins: ReadonlyArray<{ tool: string; hash: string }>): Promise<void>;
}

export function createPinStore(db: Db): PinStore {
  return {
    async load(profile) {
      const rows = await db.select({ tool: toolPins.tool, hash: toolPins.hash }).from(toolPins).where(eq(toolPins.profile, profile));
      return new Map(rows.map((r) => [r.tool, r.hash]));
    },
    async pinIfAbsent(profile, tool, hash) {
      await db.insert(toolPins).values({ profile, tool, hash }).onConflictDoNothing();
      const [row] = await db
        .select({ hash: toolPins.hash })
        .from(toolPins)
        .where(and(eq(toolPins.profile, profile), eq(toolPins.tool, tool)));
      return row?.hash ?? hash;
    },
    async replace(profile, pins) {
      if (pins.length === 0) return;
      await db.transaction(async (tx) => {
        await tx.delete(toolPins).where(and(eq(toolPins.profile, profile), inArray(toolPins.tool, pins.map((p) => p.tool))));
        await tx.insert(toolPins).values(pins.map((p) => ({ profile, tool: p.tool, hash: p.hash })));
      });
    },
  };
}
