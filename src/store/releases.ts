/**
 * Releases and agent slots on the database (schema: `releases`, `agent_slots`; the logic is
 * src/releases). Built from a `Db` like the model usage repository (`releaseRepo(store.db)`).
 *
 * Guarantees: release numbers are 1, 2, 3… per profile, never reused, also when two processes
 * create releases at once (the unique index decides; the loser takes the next number); a slots
 * row changes only through `putSlots` with the version it was read at, so two writers never
 * overwrite each other's swap silently (the second gets `slots_conflict`). Rows are never deleted.
 *
 * Deliberately left out: any meaning of the JSON columns (manifest, spec, outcome, canary,
 * containers): src/releases reads and checks them.
 */
import { and, desc, eq, sql } from 'drizzle-orm';
import { AgentVmError } from '../errors.js';
import type { Db } from './index.js';
import { agentSlots, releases, releaseStatuses } from './schema.js';

export type ReleaseStatus = (typeof releaseStatuses)[number];
export type ReleaseRow = typeof releases.$inferSelect;
export type SlotsRow = typeof agentSlots.$inferSelect;

export interface NewRelease {
  profile: string;
  status: ReleaseStatus;
  imageRef: string;
  imageDigest: string;
  agentProgram: string;
  agentVersion: string | null;
  manifestHash: string;
  manifest: unknown;
  runtime: string;
  specHash: string;
  spec: unknown;
  slot: string;
  rollbackTarget: string | null;
  createdBy: string;
  reason: string | null;
  outcome?: unknown;
}

export interface SlotsState {
  active: string;
  release: string | null;
  standby: string | null;
  canary: unknown;
  containers: unknown;
}

export interface ReleaseRepo {
  /** Inserts a release with the profile's next number; its id is `<profile>-r<number>`. */
  create(r: NewRelease): Promise<ReleaseRow>;
  get(id: string): Promise<ReleaseRow | undefined>;
  /** Newest first; all profiles when `profile` is undefined. */
  list(profile?: string, limit?: number): Promise<ReleaseRow[]>;
  /** Sets status and/or outcome (merged over the stored outcome's top-level keys). */
  update(id: string, patch: { status?: ReleaseStatus; outcome?: Record<string, unknown> }): Promise<ReleaseRow | undefined>;
  slots(agent: string): Promise<SlotsRow | undefined>;
  allSlots(): Promise<SlotsRow[]>;
  /**
   * Writes the agent's slots if its row is still at `version` (undefined: no row yet). Returns the
   * new row; throws `slots_conflict` when someone else changed it meanwhile.
   */
  putSlots(agent: string, state: SlotsState, version: number | undefined): Promise<SlotsRow>;
  /** Records the container a slot has now (no version check: it only says what is, not what should be). */
  recordContainer(agent: string, slot: string, containerId: string): Promise<void>;
}

const UNIQUE_VIOLATION = '23505';
const isUnique = (err: unknown): boolean => {
  for (let e: unknown = err, i = 0; e && i < 4; e = (e as { cause?: unknown }).cause, i++) if ((e as { code?: unknown }).code === UNIQUE_VIOLATION) return true;
  return false;
};

export function releaseRepo(db: Db): ReleaseRepo {
  return {
    async create(r) {
      for (let attempt = 0; ; attempt++) {
        const [last] = await db.select({ n: sql<number>`coalesce(max(${releases.number}), 0)` }).from(releases).where(eq(releases.profile, r.profile));
        const number = Number(last?.n ?? 0) + 1;
        try {
          const [row] = await db
            .insert(releases)
            .values({ ...r, id: `${r.profile}-r${number}`, number, outcome: r.outcome ?? null })
            .returning();
          if (!row) throw new Error('insert returned no row');
          return row;
        } catch (err) {
          if (!isUnique(err) || attempt >= 5) throw err;
        }
      }
    },
    async get(id) {
      const [row] = await db.select().from(releases).where(eq(releases.id, id));
      return row;
    },
    list(profile, limit = 100) {
      const q = db.select().from(releases);
      return (profile === undefined ? q : q.where(eq(releases.profile, profile))).orderBy(desc(releases.createdAt), desc(releases.number)).limit(Math.min(Math.max(1, limit), 1000));
    },
    async update(id, patch) {
      const outcome = patch.outcome === undefined ? {} : { outcome: sql`coalesce(${releases.outcome}, '{}'::jsonb) || ${JSON.stringify(patch.outcome)}::jsonb` };
      const [row] = await db
        .update(releases)
        .set({ ...(patch.status ? { status: patch.status } : {}), ...outcome, updatedAt: sql`now()` })
        .where(eq(releases.id, id))
        .returning();
      return row;
    },
    async slots(agent) {
      const [row] = await db.select().from(agentSlots).where(eq(agentSlots.agent, agent));
      return row;
    },
    allSlots: () => db.select().from(agentSlots).orderBy(agentSlots.agent),
    async putSlots(agent, s, version) {
      const fields = { active: s.active, release: s.release, standby: s.standby, canary: s.canary ?? null, containers: s.containers ?? {} };
      if (version === undefined) {
        try {
          const [row] = await db.insert(agentSlots).values({ agent, ...fields, version: 1 }).returning();
          if (row) return row;
        } catch (err) {
          if (!isUnique(err)) throw err;
        }
      } else {
        const [row] = await db
          .update(agentSlots)
          .set({ ...fields, version: version + 1, updatedAt: sql`now()` })
          .where(and(eq(agentSlots.agent, agent), eq(agentSlots.version, version)))
          .returning();
        if (row) return row;
      }
      throw new AgentVmError('slots_conflict', `the slots of agent ${agent} were changed by someone else meanwhile; look again (agent-vm release ls ${agent}) and retry`, { status: 409, retryable: true });
    },
    async recordContainer(agent, slot, containerId) {
      await db
        .update(agentSlots)
        .set({ containers: sql`coalesce(${agentSlots.containers}, '{}'::jsonb) || ${JSON.stringify({ [slot]: containerId })}::jsonb`, updatedAt: sql`now()` })
        .where(eq(agentSlots.agent, agent));
    },
  };
}
