/**
 * Model token counts per profile, UTC day and provider: the persistent store behind the model
 * relay's daily budget (governance/model-relay `ModelBudget`, which this satisfies structurally),
 * shared by every gateway process on the database and kept across restarts.
 *
 * Guarantees: `add` is one atomic upsert (concurrent adds from any number of processes are all
 * counted); `used` is the sum over the profile's providers for that day, as the relay's
 * `dailyTokens` is per profile. Counts are whole, non-negative numbers whatever the caller passes.
 *
 * Deliberately left out: atomic check-and-spend (the relay reads, calls, then adds; concurrent
 * calls may overshoot the cap, see ModelBudget), and pruning (one row per profile, provider and
 * day is small; operators read history from it).
 */
import { and, asc, eq, sql } from 'drizzle-orm';
import { AgentVmError } from '../errors.js';
import type { Db } from './index.js';
import { modelUsage } from './schema.js';

export interface ModelUsageDetail {
  provider: string;
  usage: { inputTokens: number; outputTokens: number; cacheReadTokens: number; cacheWriteTokens: number; totalTokens: number };
}

export interface ModelUsageRow {
  profile: string;
  day: string;
  provider: string;
  tokens: number;
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
  calls: number;
}

export interface ModelUsageRepo {
  /** Tokens counted for `profile` on `day` (`YYYY-MM-DD`, UTC), all providers together; 0 when none. */
  used(profile: string, day: string): Promise<number>;
  /** Adds one call's `tokens` (what the budget counts) and its breakdown to the day's row for its provider. */
  add(profile: string, day: string, tokens: number, detail: ModelUsageDetail): Promise<void>;
  /** The profile's rows, oldest day first (one per provider and day); `day` narrows to one day. */
  list(profile: string, day?: string): Promise<ModelUsageRow[]>;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const count = (n: number) => (Number.isFinite(n) && n > 0 ? Math.round(n) : 0);

function checkDay(day: string): string {
  if (!DAY.test(day)) throw new AgentVmError('model_usage_day_invalid', `model usage: the day must be YYYY-MM-DD (UTC), got ${JSON.stringify(day.slice(0, 40))}`, { status: 400 });
  return day;
}

export function modelUsageRepo(db: Db): ModelUsageRepo {
  return {
    async used(profile, day) {
      const [row] = await db
        .select({ total: sql<string | number | null>`sum(${modelUsage.tokens})` })
        .from(modelUsage)
        .where(and(eq(modelUsage.profile, profile), eq(modelUsage.day, checkDay(day))));
      return Number(row?.total ?? 0);
    },
    async add(profile, day, tokens, detail) {
      const u = detail.usage;
      const values = {
        tokens: count(tokens),
        inputTokens: count(u.inputTokens),
        outputTokens: count(u.outputTokens),
        cacheReadTokens: count(u.cacheReadTokens),
        cacheWriteTokens: count(u.cacheWriteTokens),
      };
      await db
        .insert(modelUsage)
        .values({ profile, day: checkDay(day), provider: detail.provider, ...values, calls: 1 })
        .onConflictDoUpdate({
          target: [modelUsage.profile, modelUsage.day, modelUsage.provider],
          set: {
            tokens: sql`${modelUsage.tokens} + ${values.tokens}`,
            inputTokens: sql`${modelUsage.inputTokens} + ${values.inputTokens}`,
            outputTokens: sql`${modelUsage.outputTokens} + ${values.outputTokens}`,
            cacheReadTokens: sql`${modelUsage.cacheReadTokens} + ${values.cacheReadTokens}`,
            cacheWriteTokens: sql`${modelUsage.cacheWriteTokens} + ${values.cacheWriteTokens}`,
            calls: sql`${modelUsage.calls} + 1`,
            updatedAt: sql`now()`,
          },
        });
    },
    async list(profile, day) {
      const where = day === undefined ? eq(modelUsage.profile, profile) : and(eq(modelUsage.profile, profile), eq(modelUsage.day, checkDay(day)));
      const rows = await db.select().from(modelUsage).where(where).orderBy(asc(modelUsage.day), asc(modelUsage.provider));
      return rows.map(({ updatedAt: _u, ...r }) => r);
    },
  };
}
